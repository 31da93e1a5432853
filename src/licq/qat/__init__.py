"""RD training engine shared by FP32 training and quantization-aware training."""

from licq.qat.loop import TrainConfig, Trainer, settle_quantiles, split_parameters
from licq.qat.loss import RateDistortionLoss

__all__ = ["RateDistortionLoss", "TrainConfig", "Trainer", "settle_quantiles", "split_parameters"]
