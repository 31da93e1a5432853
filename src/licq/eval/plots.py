"""RD plots (PNG) with matplotlib's Agg backend."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

_LABELS = {"psnr-rgb": "PSNR-RGB (dB)", "ms-ssim-rgb": "MS-SSIM (RGB)"}


def plot_rd(
    results: Sequence[dict[str, Any]],
    path: str | os.PathLike,
    metrics: Sequence[str] = ("psnr-rgb", "ms-ssim-rgb"),
    title: str = "",
) -> Path:
    """One panel per metric, one curve per results object (bpp on x). Returns the file path."""
    metrics = [m for m in metrics if any(m in r["results"] for r in results)]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for r in results:
            if metric not in r["results"]:
                continue
            pts = sorted(zip(r["results"]["bpp"], r["results"][metric], strict=True))
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=r["name"], ms=4)
        ax.set_xlabel("bpp (real bitstream)")
        ax.set_ylabel(_LABELS.get(metric, metric))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
