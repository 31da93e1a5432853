"""licq: mixed-precision quantization of learned image codecs.

Load a CompressAI codec (:func:`load_model`), evaluate it on real bitstreams (:func:`evaluate`),
compare RD curves (:func:`bd_rate`), train it (:class:`Trainer`), quantize it in place
(:func:`quantize_` with a :class:`QuantConfig`), calibrate it (:func:`calibrate`), and search a
mixed-precision allocation (:func:`compute_sensitivity`, :func:`allocate_bits`).
"""

from licq._warnings import quiet_third_party_imports

quiet_third_party_imports()

import importlib
from typing import Any

# name -> the module it lives in; imported on first use (PEP 562), so that ``import licq.quant``
# loads only the quantization core and what it needs
_EXPORTS = {
    "LayerQConfig": "licq.config",
    "QuantConfig": "licq.config",
    "quantize_": "licq.api",
    "CheckpointError": "licq.errors",
    "LicqError": "licq.errors",
    "bd_psnr": "licq.eval",
    "bd_rate": "licq.eval",
    "evaluate": "licq.eval",
    "make_results": "licq.eval",
    "plot_rd": "licq.eval",
    "read_results": "licq.eval",
    "write_results": "licq.eval",
    "get_adapter": "licq.models",
    "lambda_for": "licq.models",
    "list_models": "licq.models",
    "load_model": "licq.models",
    "ReconstructionConfig": "licq.ptq",
    "calibrate": "licq.ptq",
    "post_training_quantize": "licq.ptq",
    "reconstruct_": "licq.ptq",
    "RateDistortionLoss": "licq.qat",
    "TrainConfig": "licq.qat",
    "Trainer": "licq.qat",
    "model_size": "licq.quant.size",
    "allocate_bits": "licq.search",
    "compute_sensitivity": "licq.search",
}
_SUBPACKAGES = ("api", "codec", "config", "data", "defaults", "dynamic", "errors", "eval",
                "export", "models", "ptq", "qat", "quant", "search")


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBPACKAGES:
        value = importlib.import_module(f"licq.{name}")
    else:
        raise AttributeError(f"module 'licq' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | set(_SUBPACKAGES))


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
