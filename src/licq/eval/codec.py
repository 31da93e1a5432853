"""Real-bitstream evaluation: compress, count the bytes, decompress, measure.

bpp is the byte length of the entropy-coded strings × 8 / pixels. The likelihood estimate of the
rate is offered only when asked for (``estimate=True``), next to the real figure, never instead.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from licq.data import read_image
from licq.eval.metrics import bpp_from_likelihoods, ms_ssim, psnr


def pad_to_multiple(x: Tensor, multiple: int) -> tuple[Tensor, tuple[int, int, int, int]]:
    """Zero-pad ``(N, C, H, W)`` symmetrically to a multiple of ``multiple`` (CompressAI's way)."""
    h, w = x.shape[-2:]
    new_h = (h + multiple - 1) // multiple * multiple
    new_w = (w + multiple - 1) // multiple * multiple
    left = (new_w - w) // 2
    top = (new_h - h) // 2
    padding = (left, new_w - w - left, top, new_h - h - top)
    return F.pad(x, padding, mode="constant", value=0.0), padding


def crop_padding(x: Tensor, padding: tuple[int, int, int, int]) -> Tensor:
    """Undo :func:`pad_to_multiple`."""
    left, right, top, bottom = padding
    h, w = x.shape[-2:]
    return x[..., top:h - bottom, left:w - right]


def count_bytes(strings: object) -> int:
    """Total bytes in CompressAI's (possibly nested) list of entropy-coded strings."""
    if isinstance(strings, bytes | bytearray):
        return len(strings)
    if isinstance(strings, list | tuple):
        return sum(count_bytes(s) for s in strings)
    raise TypeError(f"unexpected string container {type(strings).__name__}")


@torch.no_grad()
def evaluate_image(
    model: torch.nn.Module, x: Tensor, pad_multiple: int = 64, estimate: bool = False
) -> dict[str, float]:
    """Compress and decompress one ``(1, 3, H, W)`` image in [0, 1]; return its metrics."""
    from licq.dynamic import dynamic_sides, selections
    from licq.eval.cost import CostMeter

    h, w = x.shape[-2:]
    x_pad, padding = pad_to_multiple(x, pad_multiple)
    sides = dynamic_sides(model)
    for s in sides.values():
        s.selector_seconds = 0.0
    with CostMeter(model) as enc_cost:
        t0 = time.perf_counter()
        enc = model.compress(x_pad)
        t1 = time.perf_counter()
    chosen = selections(model)
    sel_enc = sum(s.selector_seconds for s in sides.values())
    with CostMeter(model) as dec_cost:
        t1b = time.perf_counter()
        dec = model.decompress(enc["strings"], enc["shape"])
        t2 = time.perf_counter()
    sel_dec = sum(s.selector_seconds for s in sides.values()) - sel_enc
    t2 = t1 + (t2 - t1b)  # decode time excludes the meter's set-up between the two calls
    x_hat = crop_padding(dec["x_hat"], padding).clamp(0, 1)
    out = {
        "bpp": count_bytes(enc["strings"]) * 8.0 / (h * w),
        "psnr-rgb": psnr(x, x_hat),
        "ms-ssim-rgb": ms_ssim(x, x_hat),
        "encoding_time": t1 - t0,
        "decoding_time": t2 - t1,
        "bitops_encode": float(enc_cost.bitops),
        "bitops_decode": float(dec_cost.bitops),
        "weight_bits_encode": float(enc_cost.weight_bits),
        "weight_bits_decode": float(dec_cost.weight_bits),
        "weights_read": float(enc_cost.weight_elements + dec_cost.weight_elements),
    }
    if sides:
        chosen["g_s"] = selections(model)["g_s"]
        bits = chosen["g_a"][0] + chosen["g_s"][0]
        out.update({"mean_bits": sum(bits) / len(bits), "bits_g_a": chosen["g_a"][0],
                    "bits_g_s": chosen["g_s"][0],
                    "selector_share_encode": sel_enc / max(t1 - t0, 1e-12),
                    "selector_share_decode": sel_dec / max(t2 - t1, 1e-12)})
    if estimate:
        lk = model(x_pad)["likelihoods"]
        out["bpp_estimate"] = bpp_from_likelihoods(lk, h * w)
    return out


def evaluate(
    model: torch.nn.Module,
    images: Sequence[str | Path],
    *,
    pad_multiple: int = 64,
    estimate: bool = False,
    progress: bool = True,
    desc: str = "eval",
) -> list[dict[str, float | str]]:
    """Evaluate ``model`` on every image file; one dict of metrics per image (plus ``name``)."""
    model.eval()
    rows = []
    it: Iterable = tqdm(images, desc=desc, unit="img", disable=not progress, leave=False)
    for path in it:
        row: dict[str, float | str] = {"name": Path(path).name}
        row.update(evaluate_image(model, read_image(path), pad_multiple, estimate))
        rows.append(row)
    return rows


def mean_metrics(rows: Sequence[dict]) -> dict[str, float]:
    """Per-image means of every numeric metric (CompressAI averages per image, not per pixel)."""
    keys = [k for k, v in rows[0].items() if isinstance(v, float | int)]
    return {k: sum(float(r[k]) for r in rows) / len(rows) for k in keys}
