"""The ``.licq`` file format: one compressed image, self-describing and checked.

Layout (little-endian)::

    magic     4 bytes  b"LICQ"
    version   u8       FORMAT_VERSION
    flags     u8       bit 0: FLAG_EXACT, the entropy-parameter path (and the synthesis) run on
                       licq's exact arithmetic (licq.codec.exact); bit 1: FLAG_RECON_CRC, the
                       file holds the CRC of the encoder's reconstruction; bit 2:
                       FLAG_LATENT_DIGEST, the file holds a digest of the coded symbols; other
                       bits 0
    model_id  16 bytes first 16 bytes of the sha256 of the packed model (licq.codec.model_id)
    height    u32      original image height (before padding)
    width     u32      original image width
    shape     u8 n, then n × u32      CompressAI's latent shape (``compress()["shape"]``)
    strings   u8 groups, per group u16 items, per item u32 length + bytes
    recon     u32      (FLAG_RECON_CRC only) zlib.crc32 of the reconstruction the encoder
                       decoded: 8-bit RGB, height × width × 3 bytes in row order
    digest    12 bytes (FLAG_LATENT_DIGEST only) 4 bytes of sha256 over model id, height, width,
                       latent shape, the FLAG_EXACT bit and the first symbol tensor the encoder
                       entropy-coded (ẑ; checked before the rest is decoded), then 8 bytes of
                       sha256 over the same fields and every symbol (int32, coding order)
    crc32     u32      zlib.crc32 of everything above

Parsing never trusts a length: every count and size is checked against fixed limits and against
the bytes that remain, the image size against :data:`MAX_PIXELS` before anything is allocated,
and the CRC before anything is decoded, so truncated, bit-flipped or random files end in
:class:`CodecFormatError` (a :class:`~licq.errors.LicqError`). The CRC detects damage; the symbol
digest, compared after entropy decoding, detects a payload altered behind a recomputed CRC and a
decoder whose entropy parameters differ from the encoder's. Neither is a signature: someone who
has the model can forge a consistent file.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from licq.errors import LicqError

MAGIC = b"LICQ"
FORMAT_VERSION = 2  # 2: flags byte, exact arithmetic path (version 1 had neither)
FLAG_EXACT = 1
FLAG_RECON_CRC = 2
FLAG_LATENT_DIGEST = 4
KNOWN_FLAGS = FLAG_EXACT | FLAG_RECON_CRC | FLAG_LATENT_DIGEST
FIRST_DIGEST_BYTES = 4  # the part checked after the first symbol tensor (ẑ)
DIGEST_BYTES = 12
MAX_SIDE = 1 << 16  # pixels
#: largest image a file may declare (64 Mpx, e.g. 8192 × 8192): the decoder's memory grows with
#: the pixel count (docs/method.md gives the measured peak memory per pixel)
MAX_PIXELS = 1 << 26
MAX_GROUPS = 8
MAX_ITEMS = 64
MAX_DIMS = 4


class CodecFormatError(LicqError):
    """A ``.licq`` file that is not one, is damaged, or belongs to another model."""


@dataclass(frozen=True)
class Container:
    model_id: bytes
    height: int
    width: int
    shape: tuple[int, ...]
    strings: list[list[bytes]]
    flags: int = 0
    recon_crc: int | None = None  # present exactly when flags has FLAG_RECON_CRC
    digest: bytes | None = None  # present exactly when flags has FLAG_LATENT_DIGEST

    def to_bytes(self) -> bytes:
        if len(self.model_id) != 16:
            raise ValueError("model_id must be 16 bytes")
        if not _size_ok(self.height, self.width):
            raise ValueError(f"image size {self.height}x{self.width} outside 1..{MAX_SIDE} per "
                             f"side or over {MAX_PIXELS} pixels")
        if not 0 < len(self.shape) <= MAX_DIMS or not 0 < len(self.strings) <= MAX_GROUPS:
            raise ValueError("unexpected latent shape or string groups")
        out = bytearray(MAGIC)
        if self.flags & ~KNOWN_FLAGS:
            raise ValueError(f"unknown flags {self.flags:#x}")
        if bool(self.flags & FLAG_RECON_CRC) != (self.recon_crc is not None):
            raise ValueError("recon_crc must be given exactly when FLAG_RECON_CRC is set")
        if bool(self.flags & FLAG_LATENT_DIGEST) != (self.digest is not None) or (
                self.digest is not None and len(self.digest) != DIGEST_BYTES):
            raise ValueError(f"digest ({DIGEST_BYTES} bytes) must be given exactly when "
                             "FLAG_LATENT_DIGEST is set")
        out += struct.pack("<BB", FORMAT_VERSION, self.flags) + self.model_id
        out += struct.pack("<II", self.height, self.width)
        out += struct.pack("<B", len(self.shape)) + struct.pack(f"<{len(self.shape)}I", *self.shape)
        out += struct.pack("<B", len(self.strings))
        for group in self.strings:
            if len(group) > MAX_ITEMS:
                raise ValueError(f"{len(group)} strings in a group (at most {MAX_ITEMS})")
            out += struct.pack("<H", len(group))
            for s in group:
                out += struct.pack("<I", len(s)) + bytes(s)
        if self.recon_crc is not None:
            out += struct.pack("<I", self.recon_crc)
        if self.digest is not None:
            out += self.digest
        out += struct.pack("<I", zlib.crc32(out))
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> Container:
        if len(data) < len(MAGIC) or data[:4] != MAGIC:
            raise CodecFormatError("not a .licq file (bad magic)")
        if len(data) < 5:
            raise CodecFormatError("truncated .licq file")
        if data[4] != FORMAT_VERSION:
            raise CodecFormatError(f".licq format version {data[4]}; this licq reads version "
                                   f"{FORMAT_VERSION}")
        if len(data) < 4 + 2 + 16 + 8 + 4:
            raise CodecFormatError("truncated .licq file")
        body, (crc,) = data[:-4], struct.unpack("<I", data[-4:])
        if zlib.crc32(body) != crc:
            raise CodecFormatError("corrupt .licq file (CRC mismatch: truncated or altered)")
        r = _Reader(body, 5)
        (flags,) = r.unpack("<B")
        if flags & ~KNOWN_FLAGS:
            raise CodecFormatError(f"unknown flags {flags:#x} in the .licq header")
        model_id = r.take(16)
        height, width = r.unpack("<II")
        if not _size_ok(height, width):
            raise CodecFormatError(f"image size {height}x{width} outside 1..{MAX_SIDE} per side "
                                   f"or over {MAX_PIXELS} pixels")
        (ndim,) = r.unpack("<B")
        if not 0 < ndim <= MAX_DIMS:
            raise CodecFormatError(f"latent shape with {ndim} dimensions")
        shape = r.unpack(f"<{ndim}I")
        (ngroups,) = r.unpack("<B")
        if not 0 < ngroups <= MAX_GROUPS:
            raise CodecFormatError(f"{ngroups} string groups")
        strings = []
        for _ in range(ngroups):
            (n,) = r.unpack("<H")
            if n > MAX_ITEMS:
                raise CodecFormatError(f"{n} strings in a group")
            strings.append([r.take(r.unpack("<I")[0]) for _ in range(n)])
        recon_crc = r.unpack("<I")[0] if flags & FLAG_RECON_CRC else None
        digest = r.take(DIGEST_BYTES) if flags & FLAG_LATENT_DIGEST else None
        if r.pos != len(body):
            raise CodecFormatError(f"{len(body) - r.pos} unexpected bytes after the strings")
        return cls(model_id, height, width, tuple(shape), strings, flags, recon_crc, digest)


def _size_ok(height: int, width: int) -> bool:
    return 0 < height <= MAX_SIDE and 0 < width <= MAX_SIDE and height * width <= MAX_PIXELS


class _Reader:
    def __init__(self, data: bytes, pos: int) -> None:
        self.data, self.pos = data, pos

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise CodecFormatError("truncated .licq file (a length points past the end)")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> tuple[int, ...]:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))
