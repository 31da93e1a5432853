"""Bjøntegaard delta rate and PSNR between two RD curves (the ``bjontegaard`` package)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import bjontegaard as bd
import numpy as np

from licq.errors import LicqError


class BDRateError(LicqError):
    """Curves that cannot be compared (too few points, non-monotone, no overlap)."""


def _curve(results: dict[str, Any], metric: str) -> tuple[np.ndarray, np.ndarray]:
    res = results["results"]
    if metric not in res:
        raise BDRateError(f"{results.get('name', '?')}: no {metric!r} in results")
    rate = np.asarray(res["bpp"], dtype=float)
    dist = np.asarray(res[metric], dtype=float)
    order = np.argsort(rate)
    return rate[order], dist[order]


def _check(rate: np.ndarray, dist: np.ndarray, name: str) -> None:
    if len(rate) < 4:
        raise BDRateError(f"{name}: BD-rate needs at least 4 RD points, got {len(rate)}")
    if not np.all(np.isfinite(dist)) or not np.all(rate > 0):
        raise BDRateError(f"{name}: rates must be positive and metrics finite")
    if np.any(np.diff(dist) <= 0):
        raise BDRateError(f"{name}: distortion metric is not increasing with rate")


def bd_rate(anchor: dict, test: dict, metric: str = "psnr-rgb", method: str = "akima") -> float:
    """BD-rate of ``test`` against ``anchor`` in percent (negative = test needs fewer bits).

    Args:
        anchor, test: results objects in CompressAI's format (see :mod:`licq.eval.results`).
        metric: ``"psnr-rgb"`` or ``"ms-ssim-rgb"`` (MS-SSIM is used as is, not in dB).
        method: interpolation, ``"akima"`` (default), ``"pchip"`` or ``"cubic"``.
    """
    return _bd(bd.bd_rate, anchor, test, metric, method)


def bd_psnr(anchor: dict, test: dict, metric: str = "psnr-rgb", method: str = "akima") -> float:
    """BD-PSNR (or BD-metric) of ``test`` against ``anchor`` (positive = test is better)."""
    return _bd(bd.bd_psnr, anchor, test, metric, method)


def bd_overlap(anchor: dict, test: dict, metric: str = "psnr-rgb") -> float:
    """The share of the two curves' joint ``metric`` range that both curves cover: the interval
    BD-rate averages over, as a fraction of the union of their ranges (0 … 1).

    The ``bjontegaard`` package warns below 0.75 ("Insufficient curve overlap"): the BD-rate
    then describes only the quality range the curves share, not the whole curve.
    """
    _, da = _curve(anchor, metric)
    _, dt = _curve(test, metric)
    both = min(da.max(), dt.max()) - max(da.min(), dt.min())
    union = max(da.max(), dt.max()) - min(da.min(), dt.min())
    return float(max(both, 0.0) / union) if union > 0 else 1.0


def _bd(fn, anchor: dict, test: dict, metric: str, method: str) -> float:
    ra, da = _curve(anchor, metric)
    rt, dt = _curve(test, metric)
    _check(ra, da, anchor.get("name", "anchor"))
    _check(rt, dt, test.get("name", "test"))
    with _no_overlap_warning():
        value = fn(ra, da, rt, dt, method=method, require_matching_points=False)
    return _finite(value, anchor, test)


@contextmanager
def _no_overlap_warning() -> Iterator[None]:
    """bjontegaard warns and returns NaN where curves do not overlap; licq raises instead."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Curves do not overlap")
        yield


def _finite(value: float, anchor: dict, test: dict) -> float:
    if not np.isfinite(value):
        raise BDRateError(f"{test.get('name', 'test')} and {anchor.get('name', 'anchor')}: "
                          "the curves do not overlap, BD cannot be computed")
    return float(value)
