"""Post-training quantization: calibration."""

from licq.ptq.calibrate import CalibrationStats, calibrate, calibrate_on_folder

__all__ = ["CalibrationStats", "calibrate", "calibrate_on_folder"]
