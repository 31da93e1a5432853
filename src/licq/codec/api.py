"""Compress / decompress one image to / from ``.licq`` bytes with a packed quantized model.

The model's identity in the file is the sha256 of its packed model file, so a file decodes only
with the exact model that wrote it. The embedded default (``default_packed_models``) is licq's
ScaleHyperprior baseline quantized to W8A8, shipped as packed files, one per quality.

By default both sides run the entropy-parameter path ``h_s`` (and the decoder its synthesis
``g_s``) on licq's exact arithmetic (:mod:`licq.codec.exact`), so a file decodes to the same
pixels on any machine, thread count or device; the header's FLAG_EXACT records it. ``exact=False``
(models the exact path cannot run, e.g. weight-only quantized ones) writes files that decode
reliably only where float arithmetic matches the encoder's.

Every file carries a digest of the symbols the encoder entropy-coded (FLAG_LATENT_DIGEST,
12 bytes, :func:`symbol_digest`); the decoder recomputes it from what it decoded (the part over ẑ
as soon as ẑ is decoded, so a forged file stops there) and raises
:class:`LatentMismatch` when they differ: a payload altered behind a recomputed file CRC, or a
decoder whose entropy parameters differ from the encoder's, ends in an error, not in a wrong
image. ``check=True`` also makes the encoder decode its own file and store the CRC-32 of that
8-bit reconstruction (FLAG_RECON_CRC, one more decode at encode time); the decoder then compares
its own reconstruction and raises :class:`ReconstructionMismatch` when they differ, which also
covers the synthesis (a float-path file decoded on other hardware).
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn as nn
from torch import Tensor

from licq.codec.container import (
    DIGEST_BYTES,
    FIRST_DIGEST_BYTES,
    FLAG_EXACT,
    FLAG_LATENT_DIGEST,
    FLAG_RECON_CRC,
    CodecFormatError,
    Container,
)
from licq.codec.exact import check_exact, exact_paths
from licq.data import to_uint8
from licq.defaults import ASSETS
from licq.errors import LicqError
from licq.eval.codec import crop_padding, pad_to_multiple

PACKED_DIR = ASSETS / "packed"
LATENT_STRIDE = 64  # z = h_a(g_a(x)) is 64x smaller than the padded image (hyperprior models)
FACTORIZED_STRIDE = 16  # a factorized prior codes y = g_a(x) itself


def latent_stride(model: nn.Module) -> int:
    """How much smaller than the padded image the shape ``compress()`` reports is."""
    return LATENT_STRIDE if hasattr(model, "h_a") or hasattr(model, "latent_codec") \
        else FACTORIZED_STRIDE


class ReconstructionMismatch(CodecFormatError):
    """The decoded image is not the one the encoder reconstructed (FLAG_RECON_CRC)."""


class UnsupportedModelError(LicqError):
    """A model whose bitstreams the ``.licq`` format cannot hold."""


def _padded(s: bytes, symbols: int) -> bytes:
    """``s`` followed by the zero bytes CompressAI's rANS decoder may read past the end of a
    damaged or forged string when it decodes ``symbols`` symbols from it (it does not check the
    end of its buffer: reading on into unmapped memory crashed the process in the fuzz run).
    Every read is one 32-bit word: at most one per symbol for its state, one for the first
    bypass group and one for the bypass loop's exit, plus one per bypass group announced, and
    the groups a string can announce are bounded by its own nibbles (at most 15·8 = 120 per
    word); so 4·(3·symbols + 128·words) bytes cover every read. Valid strings are never read
    beyond their end: padding changes nothing for them."""
    return s + bytes(4 * (3 * symbols + 128 * (len(s) // 4 + 1)))


def _symbol_counts(model: nn.Module, hp: int, wp: int) -> tuple[int, int]:
    """(symbols of ŷ, symbols of ẑ) of a ``hp`` × ``wp`` padded image."""
    first = next(m for m in model.g_s.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d))
    eb = getattr(model, "entropy_bottleneck", None)
    z = eb.channels * (hp // 64) * (wp // 64) if eb is not None else 0
    return first.in_channels * (hp // 16) * (wp // 16), z


class _Latents(nn.Module):
    """Stands in for ``g_s`` while entropy decoding: keeps the decoded latent ŷ (CompressAI's
    ``decompress`` ends with ``g_s(ŷ).clamp_(0, 1)``), so the symbol digest is checked before
    the synthesis runs."""

    def forward(self, y_hat: Tensor) -> Tensor:
        self.y_hat = y_hat
        return y_hat.new_zeros(1)


class LatentMismatch(CodecFormatError):
    """The symbols the decoder entropy-decoded are not the ones the encoder coded."""


MISMATCH = ("the decoded symbols (or the header) differ from what the encoder wrote: the file was "
            "altered, or this decoder computes other entropy parameters than the encoder")
FLOAT_HINT = "; a float-path file decodes reliably only where it was encoded"


class SymbolDigest:
    """sha256 of every coded symbol in coding order (``all``) and of the first symbol tensor
    alone (``first``: ẑ in a hyperprior model, the whole latent in a factorized one)."""

    def __init__(self, on_first: Callable[[SymbolDigest], None] | None = None) -> None:
        self.all = hashlib.sha256()
        self.first: bytes | None = None
        self.on_first = on_first

    def add(self, t: Tensor) -> None:
        data = t.detach().round().to(torch.int32).cpu().contiguous().numpy().tobytes()
        self.all.update(data)
        if self.first is None:
            self.first = hashlib.sha256(data).digest()
            if self.on_first is not None:
                self.on_first(self)


@contextmanager
def symbol_digest(model: nn.Module, decoding: bool,
                  on_first: Callable[[SymbolDigest], None] | None = None
                  ) -> Iterator[SymbolDigest]:
    """Digests of every symbol ``model``'s entropy models code while inside, in coding order:
    at encode what ``quantize(…, "symbols")`` hands the coder, at decode what the coder returns
    (``dequantize``'s input), both as int32. Encoder and decoder agree exactly when every
    symbol was decoded as it was coded. ``on_first`` is called as soon as the first symbol
    tensor is in (the decoder checks it there, before decoding the rest)."""
    from compressai.entropy_models import EntropyModel

    digest = SymbolDigest(on_first)
    models = [m for m in model.modules() if isinstance(m, EntropyModel)]
    try:
        for m in models:
            if decoding:
                def dequantize(inputs, means=None, dtype=torch.float, _f=m.dequantize):
                    digest.add(inputs)
                    return _f(inputs, means, dtype)

                m.dequantize = dequantize
            else:
                def quantize(inputs, mode, means=None, _f=m.quantize):
                    out = _f(inputs, mode, means)
                    if mode == "symbols":
                        digest.add(out)
                    return out

                m.quantize = quantize
        yield digest
    finally:
        for m in models:
            m.__dict__.pop("dequantize" if decoding else "quantize", None)


def _header_bytes(c: Container) -> bytes:
    """The header fields that decide the decoded image: model id, size, latent shape, exact."""
    return c.model_id + struct.pack(f"<IIB{len(c.shape)}IB", c.height, c.width, len(c.shape),
                                    *c.shape, c.flags & FLAG_EXACT)


def first_digest(c: Container, first: bytes) -> bytes:
    """The first FIRST_DIGEST_BYTES of FLAG_LATENT_DIGEST: header fields + the first symbol
    tensor (checked before the rest of the file is entropy-decoded)."""
    return hashlib.sha256(b"first" + _header_bytes(c) + first).digest()[:FIRST_DIGEST_BYTES]


def file_digest(c: Container, symbols: SymbolDigest) -> bytes:
    """What FLAG_LATENT_DIGEST stores: :func:`first_digest`, then sha256 over the header fields
    and every symbol, cut to DIGEST_BYTES in all."""
    rest = hashlib.sha256(_header_bytes(c) + symbols.all.digest()).digest()
    return first_digest(c, symbols.first or b"") + rest[:DIGEST_BYTES - FIRST_DIGEST_BYTES]


def reconstruction_crc(x_hat: Tensor) -> int:
    """CRC-32 of a ``(1, 3, H, W)`` reconstruction as 8-bit RGB, H × W × 3 bytes in row order."""
    return zlib.crc32(to_uint8(x_hat[0]).permute(1, 2, 0).contiguous().cpu().numpy().tobytes())


def model_id(path: str | os.PathLike) -> bytes:
    """First 16 bytes of the sha256 of a packed model file."""
    return hashlib.sha256(Path(path).read_bytes()).digest()[:16]


def default_packed_models() -> dict[int, Path]:
    """``quality -> packed W8A8 model file`` shipped with licq."""
    return {int(p.stem.rsplit("-q", 1)[1].split("-")[0]): p
            for p in sorted(PACKED_DIR.glob("*-q*-w8a8.safetensors"))}


def zoo_packed_model(arch: str, quality: int, cache_dir: str | os.PathLike | None = None) -> Path:
    """CompressAI's pretrained ``arch`` at ``quality``, PTQ'd to W8A8 on the bundled calibration
    crops and packed, cached under ``cache_dir`` (default ``$LICQ_CACHE/packed``, ``$LICQ_CACHE``
    defaulting to ``~/.cache/licq``); the packed file's path. Its hash is the model id written
    into .licq files: decode with the same packed file."""
    from licq.api import QuantConfig
    from licq.defaults import default_calibration_dir
    from licq.export import export_packed
    from licq.models import get_adapter, load_model
    from licq.models.loading import infer_args
    from licq.ptq import post_training_quantize

    cache = Path(cache_dir) if cache_dir else (
        Path(os.environ.get("LICQ_CACHE", Path.home() / ".cache" / "licq")) / "packed")
    path = cache / f"{arch}-q{quality}-w8a8.safetensors"
    if path.is_file():
        return path
    from licq.errors import CheckpointError

    try:
        model = load_model(arch, quality, pretrained=True)
    except OSError as e:  # no network, or the download failed
        raise CheckpointError(f"cannot get CompressAI's pretrained {arch} q{quality}: {e}") from None
    config = QuantConfig.uniform(8, 8)
    post_training_quantize(model, config, default_calibration_dir(), num_crops=32, seed=0,
                           progress=False)
    cache.mkdir(parents=True, exist_ok=True)
    export_packed(model, path, arch=arch, sizes=infer_args(get_adapter(arch), model.state_dict()),
                  config=config, quality=quality)
    return path


def find_model(mid: bytes, candidates: list[Path]) -> Path:
    for p in candidates:
        if model_id(p) == mid:
            return p
    raise CodecFormatError(f"the file was written by model {mid.hex()}, which is not "
                           f"{'any of the embedded models' if len(candidates) > 1 else 'this model'}"
                           "; give the packed model it was made with (-m)")


@torch.no_grad()
def compress_image(
    model: nn.Module, mid: bytes, x: Tensor, pad_multiple: int = 64, exact: bool = True,
    check: bool = False,
) -> bytes:
    """``(1, 3, H, W)`` image in [0, 1] → ``.licq`` bytes (``exact``, ``check``: module doc)."""
    if hasattr(model, "latent_codec"):  # its compress() returns nested strings and shapes
        raise UnsupportedModelError(f"{type(model).__name__} (a CompressAI latent codec) cannot "
                                    "be stored in the .licq format")
    h, w = x.shape[-2:]
    x_pad, _ = pad_to_multiple(x, pad_multiple)
    model.eval()
    cache = getattr(model, "_licq_exact", None)
    if exact and (cache is None or "g_s" not in cache):  # the whole decode path, or refuse
        check_exact(model, synthesis=True)
    with exact_paths(model, synthesis=False) if exact else nullcontext(), \
            symbol_digest(model, decoding=False) as digest:
        enc = model.compress(x_pad)
    strings = [[bytes(s) for s in group] for group in enc["strings"]]
    flags = (FLAG_EXACT if exact else 0) | FLAG_LATENT_DIGEST
    c = Container(mid, h, w, tuple(int(v) for v in enc["shape"]), strings, flags)
    c = replace(c, digest=file_digest(c, digest))
    if not check:
        return c.to_bytes()
    x_hat = decompress_bytes(model, mid, c.to_bytes(), pad_multiple)
    return replace(c, flags=c.flags | FLAG_RECON_CRC, recon_crc=reconstruction_crc(x_hat)).to_bytes()


@torch.no_grad()
def decompress_bytes(model: nn.Module, mid: bytes, data: bytes, pad_multiple: int = 64) -> Tensor:
    """``.licq`` bytes → ``(1, 3, H, W)`` image in [0, 1]; the model must be the one that wrote it."""
    c = Container.from_bytes(data)
    if c.model_id != mid:
        raise CodecFormatError(f"the file was written by model {c.model_id.hex()}, not by this "
                               f"model ({mid.hex()})")
    hp = (c.height + pad_multiple - 1) // pad_multiple * pad_multiple
    wp = (c.width + pad_multiple - 1) // pad_multiple * pad_multiple
    expected = (hp // latent_stride(model), wp // latent_stride(model))
    if tuple(c.shape) != expected:
        raise CodecFormatError(f"latent shape {c.shape} does not fit a {c.height}x{c.width} image")
    if any(len(g) != 1 for g in c.strings):
        raise CodecFormatError("one image per file: every string group must hold one string")
    model.eval()
    # zero padding against reads past a forged string's end: ẑ's strings (the last group of a
    # hyperprior model; the only group of a factorized one) now, ŷ's once ẑ passed its check
    n_y, n_z = _symbol_counts(model, hp, wp)
    strings = [list(g) for g in c.strings]
    strings[-1] = [_padded(s, n_z if len(strings) > 1 else n_y) for s in strings[-1]]

    def check_first(d: SymbolDigest) -> None:  # ẑ decoded: refuse before decoding ŷ
        if c.digest is not None and first_digest(c, d.first) != c.digest[:FIRST_DIGEST_BYTES]:
            raise LatentMismatch(MISMATCH + ("" if c.flags & FLAG_EXACT else FLOAT_HINT))
        for group in strings[:-1]:  # CompressAI reads strings[0] (ŷ) after decoding ẑ
            group[:] = [_padded(s, n_y) for s in group]

    with exact_paths(model) if c.flags & FLAG_EXACT else nullcontext():
        synthesis = model._modules["g_s"]  # exact or float, as the file says
        capture = _Latents()
        model._modules["g_s"] = capture  # entropy decoding only, then the check, then g_s
        try:
            with symbol_digest(model, decoding=True, on_first=check_first) as digest:
                model.decompress(strings, list(c.shape))
        except (RuntimeError, ValueError, IndexError) as e:  # inconsistent strings, valid file
            raise CodecFormatError(f"the entropy-coded data cannot be decoded ({e})") from None
        finally:
            model._modules["g_s"] = synthesis
        if c.digest is not None and file_digest(c, digest) != c.digest:
            raise LatentMismatch(MISMATCH + ("" if c.flags & FLAG_EXACT else FLOAT_HINT))
        x_hat = synthesis(capture.y_hat).clamp_(0, 1)  # what CompressAI's decompress() returns
    _, padding = pad_to_multiple(torch.empty(1, 1, c.height, c.width), pad_multiple)
    x_hat = crop_padding(x_hat, padding).clamp(0, 1)
    if not torch.isfinite(x_hat).all():
        raise CodecFormatError("decoding produced non-finite values")
    crc = reconstruction_crc(x_hat) if c.recon_crc is not None else None
    if crc != c.recon_crc:
        hint = "" if c.flags & FLAG_EXACT else " (float-path file: decode it where it was encoded)"
        raise ReconstructionMismatch(
            f"the decoded image differs from the encoder's reconstruction (CRC {crc:08x}, "
            f"expected {c.recon_crc:08x}): this decode is not bit-exact{hint}")
    return x_hat
