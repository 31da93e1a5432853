"""Observers: turn the values a quantizer sees into a clipping range.

* ``minmax``: the full range seen.
* ``percentile``: the (p, 100 − p) percentiles (default p = 0.01 %), robust to outliers.
* ``mse``: the clipping range, searched as a fraction of the min-max range, that minimises the
  squared quantization error of the observed values (per channel for weights).

Activations are observed over many calibration batches: min/max are exact running values, and a
seeded reservoir sample of at most ``max_samples`` values stands in for the distribution where a
percentile or an MSE search needs it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from licq.config import OBSERVERS
from licq.quant.primitives import dequantize, qparams_from_range, quantize_int, reduce_dims


class Observer:
    """Collects statistics of a tensor (per channel along ``axis``, or per tensor)."""

    def __init__(
        self, kind: str = "minmax", axis: int | None = None, percentile: float = 0.01,
        max_samples: int = 1 << 18, mse_grid: int = 64, seed: int = 0,
    ) -> None:
        if kind not in OBSERVERS:
            raise ValueError(f"observer must be one of {OBSERVERS}, got {kind!r}")
        self.kind = kind
        self.axis = axis
        self.percentile = percentile
        self.max_samples = max_samples
        self.mse_grid = mse_grid
        self.lo: Tensor | None = None
        self.hi: Tensor | None = None
        self.samples: Tensor | None = None  # per-tensor uniform sample (activations)
        self._keys: Tensor | None = None
        self.weight: Tensor | None = None  # the whole tensor (per-channel weights)
        self._generator = torch.Generator().manual_seed(seed)
        self.count = 0
        self.integer = True  # every value seen so far is an integer (a decoded latent)

    @torch.no_grad()
    def observe(self, x: Tensor) -> None:
        x = x.detach().float()
        dims = reduce_dims(x, self.axis)
        lo, hi = x.amin(dim=dims), x.amax(dim=dims)
        self.lo = lo if self.lo is None else torch.minimum(self.lo, lo)
        self.hi = hi if self.hi is None else torch.maximum(self.hi, hi)
        self.count += 1
        self.integer = self.integer and bool(torch.equal(x, torch.round(x)))
        if self.kind == "minmax":
            return
        if self.axis is not None:
            self.weight = x  # per-channel: a static tensor (weights), keep it whole
            return
        # Uniform sample without replacement over everything seen: every value gets a random
        # key and the max_samples smallest keys are kept (priority sampling across batches).
        flat = x.flatten()
        keys = torch.rand(flat.numel(), generator=self._generator)
        if self.samples is not None:
            flat = torch.cat([self.samples, flat])
            keys = torch.cat([self._keys, keys])
        if flat.numel() > self.max_samples:
            keys, idx = torch.topk(keys, self.max_samples, largest=False, sorted=False)
            flat = flat[idx]
        self.samples, self._keys = flat, keys

    @property
    def ready(self) -> bool:
        return self.lo is not None

    @torch.no_grad()
    def compute_range(self, qmin: int, qmax: int, symmetric: bool) -> tuple[Tensor, Tensor]:
        """The clipping range ``(lo, hi)`` this observer chooses."""
        if self.lo is None or self.hi is None:
            raise RuntimeError("observer has seen no data")
        if self.kind == "minmax" or (self.integer and self.axis is None):
            # Integer inputs (the decoded latents ŷ, ẑ feeding g_s / h_s) are kept on an integer
            # grid over their full range: exact whenever the range fits in 2^b levels.
            return self.lo, self.hi
        values = self.weight if self.axis is not None else self.samples
        assert values is not None
        if self.kind == "percentile":
            if self.axis is not None:
                v = values.movedim(self.axis, 0).flatten(1)
                q = torch.tensor([self.percentile / 100, 1 - self.percentile / 100])
                lo, hi = torch.quantile(v, q, dim=1)
                return lo, hi
            q = torch.tensor([self.percentile / 100, 1 - self.percentile / 100])
            lo, hi = torch.quantile(values, q)
            return lo, hi
        return self._mse_range(values, qmin, qmax, symmetric)

    def _mse_range(
        self, values: Tensor, qmin: int, qmax: int, symmetric: bool
    ) -> tuple[Tensor, Tensor]:
        """Grid search over shrink factors α ∈ (0, 1] of the min-max range, per channel."""
        assert self.lo is not None and self.hi is not None
        best_err = torch.full_like(self.lo, float("inf"))
        best_lo, best_hi = self.lo.clone(), self.hi.clone()
        dims = reduce_dims(values, self.axis)
        for i in range(self.mse_grid):
            alpha = 1.0 - i / (self.mse_grid + 1) * 0.95
            lo, hi = self.lo * alpha, self.hi * alpha
            scale, zp = qparams_from_range(lo, hi, qmin, qmax, symmetric)
            q = quantize_int(values, scale, zp, qmin, qmax, self.axis)
            err = (dequantize(q, scale, zp, self.axis) - values).pow(2).sum(dim=dims)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_lo = torch.where(better, lo, best_lo)
            best_hi = torch.where(better, hi, best_hi)
        return best_lo, best_hi

    def reset(self) -> None:
        self.lo = self.hi = self.samples = self._keys = self.weight = None
        self.count = 0
        self.integer = True
