"""Check FMPQ's additivity assumption: predicted Σζ vs the RD loss measured with every layer
quantized together, on the same calibration crops the sensitivities came from."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from licq.api import QuantConfig, quantize_
from licq.data import CropSampler
from licq.ptq.calibrate import calibrate
from licq.qat.loss import RateDistortionLoss
from licq.search.sensitivity import SensitivitySettings


@torch.no_grad()
def measured_zeta(model: nn.Module, config: QuantConfig, settings: SensitivitySettings) -> float:
    """(RD_q − RD_FP) / RD_FP with every layer of ``config`` quantized at once."""
    sampler = CropSampler(settings.calib_dir, patch_size=settings.patch_size, seed=settings.seed,
                          flip=False)
    batches, left = [], settings.num_crops
    while left > 0:
        batches.append(sampler.batch(min(settings.batch_size, left)))
        left -= settings.batch_size
    crit = RateDistortionLoss(settings.lmbda)
    fp = model.eval()
    q = copy.deepcopy(model)
    resolved = quantize_(q, config)
    if any(c is not None and c.a_bits is not None for c in resolved.values()):
        with calibrate(q):
            for x in batches:
                q(x)
    q.eval()
    n = sum(x.shape[0] for x in batches)
    rd_fp = sum(crit(fp(x), x)["loss"].item() * x.shape[0] for x in batches) / n
    rd_q = sum(crit(q(x), x)["loss"].item() * x.shape[0] for x in batches) / n
    return (rd_q - rd_fp) / rd_fp
