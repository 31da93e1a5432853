"""Evaluate a set of models (one per quality point) into one CompressAI-format results object."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from licq.eval.codec import evaluate, mean_metrics
from licq.eval.results import make_results


def state_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer at its stored dtype (entropy-model tables included)."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


@dataclass
class RDPoint:
    """One model on the RD curve, with what the results file records about it."""

    model: nn.Module
    quality: int | None = None
    info: dict[str, Any] = field(default_factory=dict)


def evaluate_rd(
    points: Sequence[RDPoint],
    images: Sequence[str | Path],
    *,
    name: str,
    description: str = "",
    arch: str | None = None,
    pad_multiple: int = 64,
    estimate: bool = False,
    progress: bool = True,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate every point on every image through real bitstreams.

    Returns a results object: CompressAI's per-quality means under ``results`` and, under
    ``licq``, per-point metadata with per-image rows, the image list and provenance.
    """
    means, meta_points = [], []
    for i, p in enumerate(points):
        label = f"q{p.quality}" if p.quality is not None else f"point {i + 1}"
        rows = evaluate(p.model, images, pad_multiple=pad_multiple, estimate=estimate,
                        progress=progress, desc=f"{name} {label}")
        means.append(mean_metrics(rows))
        meta_points.append({"quality": p.quality, "model_bytes": state_bytes(p.model),
                            **p.info, "per_image": rows})
    licq = {
        "arch": arch,
        "bpp_source": "bitstream",
        "images": [Path(x).name for x in images],
        "num_images": len(images),
        "torch_threads": torch.get_num_threads(),
        "points": meta_points,
        **(extra or {}),
    }
    return make_results(name, means, description=description, licq=licq)


def format_table(results: dict[str, Any]) -> str:
    """A plain-text RD table of a results object (one row per quality point)."""
    res = results["results"]
    pts = results.get("licq", {}).get("points", [{}] * len(res["bpp"]))
    head = f"{'point':>6} {'bpp':>8} {'PSNR-RGB':>9} {'MS-SSIM':>8} {'enc s':>7} {'dec s':>7}"
    lines = [results["name"], head]
    for i in range(len(res["bpp"])):
        q = pts[i].get("quality")
        label = f"q{q}" if q is not None else str(i + 1)
        lines.append(
            f"{label:>6} {res['bpp'][i]:8.4f} {res['psnr-rgb'][i]:9.3f} "
            f"{res['ms-ssim-rgb'][i]:8.4f} {res['encoding_time'][i]:7.3f} "
            f"{res['decoding_time'][i]:7.3f}"
        )
    return "\n".join(lines)
