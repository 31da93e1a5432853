"""Post-training quantization: calibration, equalization, RD-optimised reconstruction."""

from licq.ptq.calibrate import CalibrationStats, calibrate, calibrate_on_folder
from licq.ptq.equalize import equalize_, equalize_for_config
from licq.ptq.pipeline import METHODS, PTQResult, post_training_quantize
from licq.ptq.reconstruct import (
    ReconstructionConfig,
    ReconstructionReport,
    block_errors,
    reconstruct_,
)

__all__ = [
    "METHODS",
    "CalibrationStats",
    "PTQResult",
    "ReconstructionConfig",
    "ReconstructionReport",
    "block_errors",
    "calibrate",
    "calibrate_on_folder",
    "equalize_",
    "equalize_for_config",
    "post_training_quantize",
    "reconstruct_",
]
