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


@dataclass
class CalibrationStats:
    seconds: float = 0.0
    quantizers: int = 0
    images: int = 0


@contextmanager
def calibrate(model: nn.Module) -> Iterator[CalibrationStats]:
    """Observe activations inside the block; set activation quantization parameters on exit."""
    quantizers = {n: q for n, _, q, role in quantizer_sites(model) if role == "input"}
    stats = CalibrationStats(quantizers=len(quantizers))
    was_training = model.training
    model.eval()
    for q in quantizers.values():
        q.observer.reset()
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
