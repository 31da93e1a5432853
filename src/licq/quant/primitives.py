"""Uniform affine quantization primitives.

``q = clamp(round(x / s) + z, qmin, qmax)``, ``x̂ = (q − z) · s``. Weights are per-channel along
the output-channel axis (axis 0 for Conv2d/Linear, axis 1 for ConvTranspose2d); activations
per-tensor. Symmetric quantization uses the narrow signed range ``[−(2^(b−1)−1), 2^(b−1)−1]`` with
``z = 0`` (zero stays exact, so masked weights stay masked); asymmetric uses ``[0, 2^b − 1]``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from licq.config import MAX_BITS, MIN_BITS


def qrange(bits: int, symmetric: bool, unsigned: bool = False) -> tuple[int, int]:
    """Integer range ``(qmin, qmax)`` for ``bits``; ``unsigned`` for non-negative tensors (GDN)."""
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"bits must be in {MIN_BITS}..{MAX_BITS}, got {bits}")
    if unsigned or not symmetric:
        return 0, 2**bits - 1
    return -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1


def reduce_dims(x: Tensor, axis: int | None) -> tuple[int, ...]:
    """Dims to reduce over for per-channel (``axis``) or per-tensor (``None``) statistics."""
    if axis is None:
        return tuple(range(x.dim()))
    axis = axis % x.dim()
    return tuple(d for d in range(x.dim()) if d != axis)


def channel_view(v: Tensor, x: Tensor, axis: int | None) -> Tensor:
    """Reshape per-channel ``v`` (C,) to broadcast against ``x`` along ``axis``."""
    if axis is None or v.dim() == 0:
        return v
    shape = [1] * x.dim()
    shape[axis % x.dim()] = -1
    return v.reshape(shape)


def qparams_from_range(
    lo: Tensor, hi: Tensor, qmin: int, qmax: int, symmetric: bool, integer_step: bool = False
) -> tuple[Tensor, Tensor]:
    """Scale and zero point that map ``[lo, hi]`` onto ``[qmin, qmax]`` (zero always exact).

    ``integer_step`` rounds the scale up to an integer ≥ 1: for integer-valued tensors (decoded
    latents) the grid then contains every integer whenever the range fits in the levels.
    """
    lo = torch.minimum(lo, torch.zeros_like(lo))
    hi = torch.maximum(hi, torch.zeros_like(hi))
    eps = torch.finfo(torch.float32).eps
    if symmetric:
        scale = torch.maximum(-lo, hi) / qmax if qmin < 0 else hi / qmax
        scale = scale.clamp_min(eps)
        if integer_step:
            scale = torch.ceil(scale - 1e-6).clamp_min(1.0)
        zero_point = torch.zeros_like(scale)
    else:
        scale = ((hi - lo) / (qmax - qmin)).clamp_min(eps)
        if integer_step:
            scale = torch.ceil(scale - 1e-6).clamp_min(1.0)
        zero_point = (qmin - torch.round(lo / scale)).clamp(qmin, qmax)
    return scale.float(), zero_point.float()


class _RoundSTE(torch.autograd.Function):
    """Round with the straight-through estimator (identity gradient)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return torch.round(x)

    @staticmethod
    def backward(ctx, g: Tensor) -> Tensor:
        return g


def round_ste(x: Tensor) -> Tensor:
    return _RoundSTE.apply(x)


def quantize_int(
    x: Tensor, scale: Tensor, zero_point: Tensor, qmin: int, qmax: int, axis: int | None
) -> Tensor:
    """The integer codes of ``x`` (float tensor holding integers in ``[qmin, qmax]``)."""
    s = channel_view(scale, x, axis)
    z = channel_view(zero_point, x, axis)
    return torch.clamp(torch.round(x / s) + z, qmin, qmax)


def dequantize(q: Tensor, scale: Tensor, zero_point: Tensor, axis: int | None) -> Tensor:
    return (q - channel_view(zero_point, q, axis)) * channel_view(scale, q, axis)


def fake_quantize(
    x: Tensor, scale: Tensor, zero_point: Tensor, qmin: int, qmax: int, axis: int | None
) -> Tensor:
    """Quantize-dequantize with the straight-through estimator through rounding and clipping
    of in-range values (gradient zero outside the clip range)."""
    s = channel_view(scale, x, axis)
    z = channel_view(zero_point, x, axis)
    q = torch.clamp(round_ste(x / s) + z, qmin, qmax)
    return (q - z) * s
