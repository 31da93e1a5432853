"""licq: mixed-precision quantization of learned image codecs.

Load a CompressAI codec (:func:`load_model`), evaluate it on real bitstreams (:func:`evaluate`),
compare RD curves (:func:`bd_rate`), train it (:class:`Trainer`), quantize it in place
(:func:`quantize_` with a :class:`QuantConfig`), calibrate it (:func:`calibrate`), and search a
mixed-precision allocation (:func:`compute_sensitivity`, :func:`allocate_bits`).
"""

from licq._warnings import quiet_third_party_imports

quiet_third_party_imports()

from licq.api import LayerQConfig, QuantConfig, quantize_
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
from licq.ptq import ReconstructionConfig, calibrate, post_training_quantize, reconstruct_
from licq.qat import RateDistortionLoss, TrainConfig, Trainer
from licq.quant.size import model_size
from licq.search import allocate_bits, compute_sensitivity

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "LayerQConfig",
    "LicqError",
    "QuantConfig",
    "RateDistortionLoss",
    "ReconstructionConfig",
    "TrainConfig",
    "Trainer",
    "bd_psnr",
    "allocate_bits",
    "bd_rate",
    "calibrate",
    "compute_sensitivity",
    "evaluate",
    "get_adapter",
    "lambda_for",
    "list_models",
    "load_model",
    "make_results",
    "model_size",
    "plot_rd",
    "post_training_quantize",
    "quantize_",
    "read_results",
    "reconstruct_",
    "write_results",
]
