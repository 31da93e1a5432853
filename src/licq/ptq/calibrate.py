"""Post-training calibration of activation ranges.

    with licq.calibrate(model) as stats:
        for x in batches:
            model(x)
    print(stats.seconds)

Inside the block every input quantizer observes (values pass through in float); on exit each one
computes its range with its observer (min-max, percentile or MSE) and quantization is on.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from licq.api import quantizer_sites
from licq.data import CropSampler

# Bumped whenever calibration gives other quantization parameters for the same model, data and
# settings, so that results cached from calibrated models (``licq sensitivity``) are not reused
# across the change. 2: the decoded-latent grid of joint autoregressive models
# (:func:`forward_latents_are_bitstream_latents`).
CALIBRATION_REVISION = 2


@dataclass
class CalibrationStats:
    seconds: float = 0.0
    quantizers: int = 0
    images: int = 0


def forward_latents_are_bitstream_latents(model: nn.Module) -> bool:
    """Whether the decoded latents that ``model``'s forward pass hands g_s (and a context model)
    are the ones its bitstream decodes.

    An input quantizer that saw only integers while calibrating keeps them on an integer grid
    (step ≥ 1, exact): right for the ScaleHyperprior's ŷ = round(y), which its bitstream decodes
    too. Not for the joint autoregressive models (mbt2018, cheng2020-anchor/attn): their forward
    rounds y without the predicted means, ŷ = round(y), while their bitstream decodes
    ŷ = round(y − μ) + μ, which is not an integer; an integer step calibrated on the forward
    pass would round the decoded ŷ to integers before the context model and g_s (measured on
    cheng2020-anchor, W8A8, 16 training crops: the context model's ŷ input in float instead
    of on that grid took the PTQ BD-rate from +14.38 % to +11.96 %; floor_probe.py)."""
    from compressai.models import JointAutoregressiveHierarchicalPriors

    return not isinstance(model, JointAutoregressiveHierarchicalPriors)


@contextmanager
def calibrate(model: nn.Module) -> Iterator[CalibrationStats]:
    """Observe activations inside the block; set activation quantization parameters on exit.

    Inputs seen as integers get an integer step unless the model's forward pass shows other
    latents than its bitstream (:func:`forward_latents_are_bitstream_latents`)."""
    quantizers = {n: q for n, _, q, role in quantizer_sites(model) if role == "input"}
    stats = CalibrationStats(quantizers=len(quantizers))
    integer_ok = forward_latents_are_bitstream_latents(model)
    was_training = model.training
    model.eval()
    for q in quantizers.values():
        q.observer.reset()
        q.observer.integer = integer_ok  # False: never an integer step (observe() keeps it)
        q.observing = True
    t0 = time.perf_counter()
    try:
        with torch.no_grad():
            yield stats
    finally:
        for q in quantizers.values():
            q.observing = False
        model.train(was_training)
    unseen = [n for n, q in quantizers.items() if not q.observer.ready]
    if unseen:
        raise RuntimeError(f"calibration never ran layer {unseen[0]!r}: call the model inside "
                           "the `with calibrate(model)` block")
    for q in quantizers.values():
        q.compute_qparams()
    stats.seconds = time.perf_counter() - t0


def quantize_and_calibrate(model: nn.Module, config, batches: list[torch.Tensor]) -> dict:
    """``quantize_(model, config)`` in place, then calibrate its activations (if any are
    quantized) on ``batches``; returns the resolved per-layer configs."""
    from licq.api import quantize_, quantizes_activations

    resolved = quantize_(model, config)
    if quantizes_activations(resolved):
        with calibrate(model):
            for x in batches:
                model(x)
    return resolved


def calibrate_on_folder(
    model: nn.Module, root: str | os.PathLike, num_crops: int = 32, batch_size: int = 8,
    patch_size: int = 256, seed: int = 0, progress: bool = True,
) -> CalibrationStats:
    """Calibrate on ``num_crops`` seeded random crops of the images under ``root``."""
    sampler = CropSampler(root, patch_size=patch_size, seed=seed, flip=False)
    with calibrate(model) as stats:
        for start in tqdm(range(0, num_crops, batch_size), desc="calibrate", unit="batch",
                          disable=not progress, leave=False):
            x = sampler.batch(min(batch_size, num_crops - start))
            model(x)
            stats.images += x.shape[0]
    return stats
