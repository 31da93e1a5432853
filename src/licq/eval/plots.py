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
    one panel per quality point, images down, the dynamic layers of g_a then g_s across, one
    colour per candidate bit-width."""
    import numpy as np
    from matplotlib.colors import BoundaryNorm, ListedColormap

    points = results["licq"]["points"]
    all_bits = sorted({b for p in points for r in p["per_image"]
                       for b in r["bits_g_a"] + r["bits_g_s"]})
    first = points[0]["per_image"][0]
    n_a, n_layers = len(first["bits_g_a"]), len(first["bits_g_a"]) + len(first["bits_g_s"])
    panel_w = max(3.2, 0.14 * n_layers + 0.8)  # wide enough for one readable tick per layer
    fig, axes = plt.subplots(1, len(points), figsize=(panel_w * len(points) + 1.5, 6),
                             squeeze=False, sharey=True, layout="constrained")
    cmap = ListedColormap(plt.get_cmap("viridis")(np.linspace(0, 1, len(all_bits))))
    mids = [(a + b) / 2 for a, b in zip(all_bits[:-1], all_bits[1:], strict=True)]
    edges = [all_bits[0] - 1, *mids, all_bits[-1] + 1]
    norm = BoundaryNorm(edges, cmap.N)
    image = None
    labels = [f"a{i + 1}" for i in range(n_a)] + [f"s{i + 1}" for i in range(n_layers - n_a)]
    for ax, p in zip(axes[0], points, strict=True):
        rows = p["per_image"]
        grid = np.array([r["bits_g_a"] + r["bits_g_s"] for r in rows], dtype=float)
        image = ax.imshow(grid, aspect="auto", cmap=cmap, norm=norm, interpolation="nearest")
        ax.axvline(n_a - 0.5, color="red", lw=1.5)
        ax.set_xticks(range(grid.shape[1]))
        ax.set_xticklabels(labels, fontsize=6, rotation=90 if n_layers > 16 else 0)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([r["name"].rsplit(".", 1)[0] for r in rows], fontsize=6)
        ax.set_title(f"q{p.get('quality')}: mean {grid.mean():.2f} bit", fontsize=9)
        ax.set_xlabel("dynamic layer (g_a | g_s)", fontsize=8)
    if image is not None:
        cbar = fig.colorbar(image, ax=axes[0].tolist(), ticks=all_bits, shrink=0.6)
        cbar.set_label("bits")
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
