"""Post-training quantization of a float codec: quantize, calibrate, optionally reconstruct
(learned rounding and activation steps, :mod:`licq.ptq.reconstruct`), rebuild entropy tables."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass

import torch.nn as nn
from torch import Tensor

from licq.api import LayerQConfig, QuantConfig, quantize_, quantizes_activations
from licq.data import CropSampler
from licq.ptq.calibrate import CalibrationStats, calibrate_on_folder
from licq.ptq.equalize import equalize_for_config
from licq.ptq.reconstruct import ReconstructionConfig, ReconstructionReport, reconstruct_
from licq.quant.size import SizeReport, model_size


@dataclass
class PTQResult:
    model: nn.Module
    resolved: dict[str, LayerQConfig | None]
    size: SizeReport
    calibration: CalibrationStats | None
    equalization: dict | None = None
    reconstruction: ReconstructionReport | None = None

#: PTQ methods: ``range`` sets ranges only (observers); ``rdo`` then reconstructs block by block
METHODS = ("range", "rdo")

#: held-out training crops for reconstruction's keep-or-drop decisions (seed + 1's crops, as
#: equalization's)
HELDOUT_CROPS = 8


def reconstruction_crops(
    root: str | os.PathLike, num_crops: int, batch_size: int, patch_size: int, seed: int,
) -> tuple[list[Tensor], list[Tensor]]:
    """The calibration crops (``seed``: the ones range calibration saw) and ``HELDOUT_CROPS``
    other ones (``seed + 1``) of the training images under ``root``, as reconstruction uses them."""
    def crops(s: int, n: int) -> list[Tensor]:
        return CropSampler(root, patch_size=patch_size, seed=s, flip=False).batches(n, batch_size)

    return crops(seed, num_crops), crops(seed + 1, HELDOUT_CROPS)


def post_training_quantize(
    model: nn.Module,
    config: QuantConfig,
    calib_dir: str | os.PathLike | None,
    *,
    num_crops: int = 32,
    batch_size: int = 8,
    patch_size: int = 256,
    seed: int = 0,
    progress: bool = True,
    equalize: float | str | None = None,
    lmbda: float | None = None,
    method: str = "range",
    reconstruction: ReconstructionConfig | None = None,
    metric: str = "mse",
) -> PTQResult:
    """Quantize ``model`` in place with ``config`` and calibrate its activations.

    Calibration uses ``num_crops`` seeded random crops from ``calib_dir`` (training images, never
    the evaluation set). Weight-only configs need no calibration data. The entropy models' CDF
    tables are rebuilt with ``update(force=True)`` so the quantized model codes real bitstreams.
    ``equalize`` (an α, or ``"auto"``, which needs the RD loss's ``lmbda``) first rescales the
    float model's channels (:mod:`licq.ptq.equalize`) on the same calibration crops.
    ``method="rdo"`` then reconstructs the quantized model towards the float one on those crops
    (:func:`licq.ptq.reconstruct.reconstruct_`; needs ``lmbda``), deciding its optional stages
    on ``HELDOUT_CROPS`` other training crops.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "rdo":
        if calib_dir is None:
            raise ValueError("reconstruction needs calibration images (--calib-dir)")
        if lmbda is None:
            raise ValueError("reconstruction minimises the RD loss: give lmbda (licq: the "
                             "model's quality, -q, or --lambda)")
    size = model_size(model, config)
    eq = None
    if equalize is not None:
        if calib_dir is None:
            raise ValueError("equalization needs calibration images (--calib-dir)")
        if equalize == "auto" and lmbda is None:
            raise ValueError("equalize='auto' chooses α by the RD loss: give lmbda (licq: the "
                             "model's quality, -q)")
        eq = equalize_for_config(model, config, equalize, calib_dir, lmbda=lmbda or 0.0,
                                 num_crops=num_crops, patch_size=patch_size, seed=seed)
    float_model = copy.deepcopy(model) if method == "rdo" else None
    resolved = quantize_(model, config)
    needs_calibration = quantizes_activations(resolved)
    stats = None
    if needs_calibration:
        if calib_dir is None:
            raise ValueError("activation quantization needs calibration images (--calib-dir)")
        stats = calibrate_on_folder(model, calib_dir, num_crops=num_crops, batch_size=batch_size,
                                    patch_size=patch_size, seed=seed, progress=progress)
    rec = None
    if method == "rdo":
        calib, heldout = reconstruction_crops(calib_dir, num_crops, batch_size, patch_size, seed)
        rec = reconstruct_(model, float_model, calib, heldout, lmbda, reconstruction,
                           metric=metric, progress=progress)
    model.eval()
    model.update(force=True)
    return PTQResult(model, resolved, size, stats, eq, rec)
