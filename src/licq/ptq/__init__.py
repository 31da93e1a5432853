"""Post-training quantization: calibration."""

from licq.ptq.calibrate import CalibrationStats, calibrate, calibrate_on_folder
from licq.ptq.pipeline import PTQResult, post_training_quantize

__all__ = [
    "CalibrationStats",
    "PTQResult",
    "calibrate",
    "calibrate_on_folder",
    "post_training_quantize",
]
