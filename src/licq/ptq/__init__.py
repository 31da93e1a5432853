"""Post-training quantization: calibration, equalization."""

from licq.ptq.calibrate import CalibrationStats, calibrate, calibrate_on_folder
from licq.ptq.equalize import equalize_, equalize_for_config
from licq.ptq.pipeline import PTQResult, post_training_quantize

__all__ = [
    "CalibrationStats",
    "PTQResult",
    "calibrate",
    "calibrate_on_folder",
    "equalize_",
    "equalize_for_config",
    "post_training_quantize",
]
