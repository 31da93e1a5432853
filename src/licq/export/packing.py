"""Dense bit packing of low-bit integer codes into uint8 storage.

``pack(codes, bits)`` stores ``n`` unsigned codes in ``ceil(n·bits/8)`` bytes, little-endian within
each byte (code ``i`` occupies bits ``i·bits … i·bits+bits−1`` of the stream). Any ``bits`` in
1…8 and any length, including lengths whose bit count is not a multiple of 8.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from licq.errors import LicqError


class PackingError(LicqError):
    """Codes that do not fit the bit-width, or packed data of the wrong length."""


def packed_nbytes(n: int, bits: int) -> int:
    return (n * bits + 7) // 8


def pack(codes: Tensor, bits: int) -> Tensor:
    """Flattened non-negative integer ``codes`` (< 2**bits) → uint8 tensor of packed bits."""
    if not 1 <= bits <= 8:
        raise PackingError(f"bits must be in 1..8, got {bits}")
    c = codes.detach().reshape(-1).cpu().to(torch.int64).numpy()
    if c.size and (c.min() < 0 or c.max() >= 1 << bits):
        raise PackingError(f"codes outside [0, {(1 << bits) - 1}] cannot be packed at {bits} bits")
    if bits == 8:
        return torch.from_numpy(c.astype(np.uint8))
    planes = ((c[:, None] >> np.arange(bits)) & 1).astype(np.uint8)  # (n, bits), LSB first
    return torch.from_numpy(np.packbits(planes.reshape(-1), bitorder="little"))


def unpack(data: Tensor, bits: int, n: int) -> Tensor:
    """Inverse of :func:`pack`: ``n`` codes as int64."""
    if not 1 <= bits <= 8:
        raise PackingError(f"bits must be in 1..8, got {bits}")
    if data.dtype != torch.uint8 or data.dim() != 1 or data.numel() != packed_nbytes(n, bits):
        raise PackingError(f"packed data of {data.numel()} bytes ({data.dtype}) does not hold "
                           f"{n} codes of {bits} bits ({packed_nbytes(n, bits)} bytes)")
    raw = data.cpu().numpy()
    if bits == 8:
        return torch.from_numpy(raw.astype(np.int64))
    flat = np.unpackbits(raw, count=n * bits, bitorder="little").reshape(n, bits)
    values = (flat.astype(np.int64) << np.arange(bits)).sum(axis=1)
    return torch.from_numpy(values)
