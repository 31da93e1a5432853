"""Check FMPQ's additivity assumption: predicted Σζ vs the RD loss measured with every layer
quantized together, on the same calibration crops the sensitivities came from."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from licq.api import QuantConfig
from licq.data import CropSampler
from licq.ptq.calibrate import quantize_and_calibrate
from licq.qat.loss import RateDistortionLoss, mean_rd_loss
from licq.search.sensitivity import SensitivitySettings


@torch.no_grad()
def measured_zeta(model: nn.Module, config: QuantConfig, settings: SensitivitySettings) -> float:
    """(RD_q − RD_FP) / RD_FP with every layer of ``config`` quantized at once."""
    batches = CropSampler(settings.calib_dir, patch_size=settings.patch_size, seed=settings.seed,
                          flip=False).batches(settings.num_crops, settings.batch_size)
    crit = RateDistortionLoss(settings.lmbda)
    q = copy.deepcopy(model)
    quantize_and_calibrate(q, config, batches)
    rd_fp = mean_rd_loss(model, batches, crit)
    rd_q = mean_rd_loss(q, batches, crit)
    return (rd_q - rd_fp) / rd_fp
