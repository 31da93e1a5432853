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


def plot_bit_heatmap(results: dict[str, Any], path: str | os.PathLike, title: str = "") -> Path:
    """Per-image, per-layer chosen bit-widths of a dynamic-bit-width run (DynaQuant's figure 6):
    one panel per quality point, images down, the dynamic layers of g_a then g_s across."""
    import numpy as np

    points = results["licq"]["points"]
    fig, axes = plt.subplots(1, len(points), figsize=(3.2 * len(points) + 1, 6), squeeze=False)
    image = None
    all_bits = sorted({b for p in points for r in p["per_image"]
                       for b in r["bits_g_a"] + r["bits_g_s"]})
    for ax, p in zip(axes[0], points, strict=True):
        rows = p["per_image"]
        grid = np.array([r["bits_g_a"] + r["bits_g_s"] for r in rows], dtype=float)
        n_a = len(rows[0]["bits_g_a"])
        image = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=min(all_bits),
                          vmax=max(all_bits), interpolation="nearest")
        ax.axvline(n_a - 0.5, color="white", lw=2)
        ax.set_xticks(range(grid.shape[1]))
        ax.set_xticklabels([f"a{i + 1}" for i in range(n_a)]
                           + [f"s{i + 1}" for i in range(grid.shape[1] - n_a)], fontsize=7)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([r["name"].rsplit(".", 1)[0] for r in rows], fontsize=6)
        ax.set_title(f"q{p.get('quality')}: mean {grid.mean():.2f} bit", fontsize=9)
        ax.set_xlabel("dynamic layer (g_a | g_s)")
    if image is not None:
        cbar = fig.colorbar(image, ax=axes[0].tolist(), ticks=all_bits)
        cbar.set_label("bits")
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
