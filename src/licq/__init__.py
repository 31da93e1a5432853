"""licq: mixed-precision quantization of learned image codecs.

Load a CompressAI codec (:func:`load_model`), evaluate it on real bitstreams (:func:`evaluate`),
compare RD curves (:func:`bd_rate`), train it (:class:`Trainer`).
"""

from licq._warnings import quiet_third_party_imports

quiet_third_party_imports()

from licq.errors import CheckpointError, LicqError
from licq.eval import (
    bd_psnr,
    bd_rate,
    evaluate,
    make_results,
    plot_rd,
    read_results,
    write_results,
)
from licq.models import get_adapter, lambda_for, list_models, load_model
from licq.qat import RateDistortionLoss, TrainConfig, Trainer

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "LicqError",
    "RateDistortionLoss",
    "TrainConfig",
    "Trainer",
    "bd_psnr",
    "bd_rate",
    "evaluate",
    "get_adapter",
    "lambda_for",
    "list_models",
    "load_model",
    "make_results",
    "plot_rd",
    "read_results",
    "write_results",
]
