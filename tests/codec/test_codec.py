import struct
import zlib

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from licq.api import QuantConfig
from licq.cli import main
from licq.codec import CodecFormatError, Container, compress_image, decompress_bytes, model_id
from licq.codec.api import default_packed_models
from licq.codec.container import FLAG_EXACT, FLAG_LATENT_DIGEST, FLAG_RECON_CRC
from licq.data import read_image, read_image_uint8, save_image
from licq.defaults import sample_images
from licq.export import export_packed, load_quantized
from licq.models import get_adapter
from licq.ptq import post_training_quantize
from tests.conftest import tiny_model


@pytest.fixture(scope="module")
def tiny_codec(tmp_path_factory, crop_dir):
    model = tiny_model("bmshj2018-hyperprior")
    cfg = QuantConfig.uniform(8, 8)
    post_training_quantize(model, cfg, crop_dir, num_crops=2, patch_size=64, progress=False)
    path = tmp_path_factory.mktemp("m") / "tiny.safetensors"
    export_packed(model, path, arch="bmshj2018-hyperprior",
                  sizes=get_adapter("bmshj2018-hyperprior").tiny_args, config=cfg)
    loaded, _ = load_quantized(path)
    return loaded, model_id(path), path


@pytest.fixture(scope="module")
def encoded(tiny_codec):
    model, mid, _ = tiny_codec
    x = read_image(sample_images()[0])[..., :70, :90]  # odd size: padding
    return x, compress_image(model, mid, x)


def test_container_round_trip():
    c = Container(b"\x01" * 16, 70, 90, (2, 2), [[b"abc"], [b""]])
    assert Container.from_bytes(c.to_bytes()) == c


def test_round_trip_matches_the_model(tiny_codec, encoded):
    model, mid, _ = tiny_codec
    x, data = encoded
    x_hat = decompress_bytes(model, mid, data)
    assert x_hat.shape == x.shape
    from licq.codec.exact import exact_paths
    from licq.eval.codec import crop_padding, pad_to_multiple

    xp, pad = pad_to_multiple(x, 64)
    with torch.no_grad(), exact_paths(model):  # the model's own compress/decompress, exact path
        enc = model.compress(xp)
        ref = crop_padding(model.decompress(enc["strings"], enc["shape"])["x_hat"], pad).clamp(0, 1)
    assert torch.equal(x_hat, ref)
    with torch.no_grad():  # and within float rounding of the fake-quant model's reconstruction
        enc = model.compress(xp)
        flt = crop_padding(model.decompress(enc["strings"], enc["shape"])["x_hat"], pad).clamp(0, 1)
    assert (x_hat - flt).abs().max() < 0.02
    assert abs(float(((x_hat - x) ** 2).mean()) - float(((flt - x) ** 2).mean())) < 1e-4


def test_float_path_files_decode_with_the_float_path(tiny_codec):
    model, mid, _ = tiny_codec
    x = read_image(sample_images()[0])[..., :64, :64]
    data = compress_image(model, mid, x, exact=False)
    assert Container.from_bytes(data).flags == FLAG_LATENT_DIGEST
    assert Container.from_bytes(compress_image(model, mid, x)).flags == FLAG_EXACT | FLAG_LATENT_DIGEST
    with torch.no_grad():
        enc = model.compress(x)
        ref = model.decompress(enc["strings"], enc["shape"])["x_hat"].clamp(0, 1)
    assert torch.equal(decompress_bytes(model, mid, data), ref)


def test_reconstruction_check_accepts_a_bit_exact_decode_and_catches_a_forged_one(tiny_codec):
    from licq.codec import ReconstructionMismatch
    from licq.codec.api import LatentMismatch, reconstruction_crc

    model, mid, _ = tiny_codec
    x = read_image(sample_images()[0])[..., :70, :90]
    plain = compress_image(model, mid, x)
    data = compress_image(model, mid, x, check=True)
    c = Container.from_bytes(data)
    assert c.flags == FLAG_EXACT | FLAG_RECON_CRC | FLAG_LATENT_DIGEST
    assert len(data) == len(plain) + 4
    x_hat = decompress_bytes(model, mid, data)
    assert torch.equal(x_hat, decompress_bytes(model, mid, plain))  # same strings, same image
    assert c.recon_crc == reconstruction_crc(x_hat)
    # a payload forged behind a valid file CRC decodes to another image: in a file with neither
    # digest nor reconstruction CRC silently; the symbol digest and the reconstruction CRC each
    # make the decoder refuse
    gen = torch.Generator().manual_seed(0)
    for _ in range(100):
        fake = [[bytes(torch.randint(0, 256, (len(c.strings[0][0]) + 8,), generator=gen)
                       .tolist())], c.strings[1]]
        unchecked = Container(c.model_id, c.height, c.width, c.shape, fake, FLAG_EXACT)
        try:
            other = decompress_bytes(model, mid, unchecked.to_bytes())
        except CodecFormatError:
            continue
        if not torch.equal(other, x_hat):
            break
    else:
        pytest.fail("no forged payload decoded to another image")
    forged = Container(c.model_id, c.height, c.width, c.shape, fake, c.flags, c.recon_crc,
                       c.digest)
    with pytest.raises(LatentMismatch, match="decoded symbols"):
        decompress_bytes(model, mid, forged.to_bytes())
    crc_only = Container(c.model_id, c.height, c.width, c.shape, fake,
                         FLAG_EXACT | FLAG_RECON_CRC, c.recon_crc)
    with pytest.raises(ReconstructionMismatch, match="not bit-exact"):
        decompress_bytes(model, mid, crc_only.to_bytes())
    with pytest.raises(ValueError, match="recon_crc"):
        Container(c.model_id, c.height, c.width, c.shape, c.strings, FLAG_RECON_CRC).to_bytes()


def test_a_header_changed_behind_a_valid_crc_is_refused(tiny_codec):
    """The digest covers the header fields that decide the image: another height that still fits
    the latent shape (a crop), or the exact-path bit cleared, ends in LatentMismatch."""
    from dataclasses import replace

    from licq.codec.api import LatentMismatch

    model, mid, _ = tiny_codec
    x = read_image(sample_images()[0])[..., :60, :70]
    c = Container.from_bytes(compress_image(model, mid, x))
    for forged in (replace(c, height=c.height - 3), replace(c, width=c.width + 2),
                   replace(c, flags=c.flags & ~FLAG_EXACT)):
        with pytest.raises(LatentMismatch):
            decompress_bytes(model, mid, forged.to_bytes())


def test_a_forged_large_image_is_refused_after_z_before_y_is_decoded(tiny_codec, monkeypatch):
    """A consistent header (size and latent shape agree) declaring a larger image over a small
    file's strings: the digest's ẑ part refuses it before ŷ (the costly part) is decoded."""
    from dataclasses import replace

    from licq.codec.api import LatentMismatch

    model, mid, _ = tiny_codec
    c = Container.from_bytes(compress_image(model, mid, read_image(sample_images()[0])[..., :64, :64]))
    monkeypatch.setattr(model.gaussian_conditional, "decompress",
                        lambda *a, **k: pytest.fail("ŷ decoded"))
    with pytest.raises(LatentMismatch):
        decompress_bytes(model, mid, replace(c, height=1024, width=512, shape=(16, 8)).to_bytes())


def test_oversized_headers_are_refused_before_anything_is_allocated(tiny_codec, monkeypatch):
    """A header declaring more than MAX_PIXELS (or a side over MAX_SIDE), CRC valid: refused by
    the parser; the model's decoder is never called."""
    from licq.codec.container import MAX_PIXELS, MAX_SIDE

    model, mid, _ = tiny_codec
    monkeypatch.setattr(model, "decompress", lambda *a, **k: pytest.fail("decoder called"))
    body = bytearray(b"LICQ" + struct.pack("<BB", 2, 0) + mid)
    for h, w in ((MAX_SIDE, MAX_SIDE), (MAX_PIXELS // 4096 + 1, 4096), (MAX_SIDE + 1, 1), (0, 5)):
        data = body + struct.pack("<II", h, w) + struct.pack("<BII", 2, 1, 1)
        data += struct.pack("<BHI", 1, 1, 0)
        data += struct.pack("<I", zlib.crc32(bytes(data)))
        with pytest.raises(CodecFormatError, match="image size"):
            decompress_bytes(model, mid, bytes(data))
    ok = Container(mid, 4096, MAX_PIXELS // 4096, (1, 1), [[b""]], 0)
    assert Container.from_bytes(ok.to_bytes()).height == 4096  # the limit itself is allowed
    with pytest.raises(ValueError, match="pixels"):
        Container(mid, 4096, MAX_PIXELS // 4096 + 1, (1, 1), [[b""]], 0).to_bytes()


def test_other_model_is_refused(tiny_codec, encoded):
    model, _, _ = tiny_codec
    with pytest.raises(CodecFormatError, match="written by model"):
        decompress_bytes(model, b"\x00" * 16, encoded[1])


def _decode_ends_in_own_error(model, mid, data):
    """A damaged file decodes or ends in CodecFormatError, nothing else (decode times and hangs
    are measured by benchmarks/codec_determinism.py fuzz, not asserted here)."""
    try:
        decompress_bytes(model, mid, data)
    except CodecFormatError:
        pass


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(0, 10_000))
def test_fuzz_truncated(tiny_codec, encoded, cut):
    model, mid, _ = tiny_codec
    data = encoded[1]
    with pytest.raises(CodecFormatError):
        decompress_bytes(model, mid, data[: cut % len(data)])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pos=st.integers(0, 10_000), bit=st.integers(0, 7))
def test_fuzz_bit_flips(tiny_codec, encoded, pos, bit):
    model, mid, _ = tiny_codec
    data = bytearray(encoded[1])
    data[pos % len(data)] ^= 1 << bit
    with pytest.raises(CodecFormatError):
        decompress_bytes(model, mid, bytes(data))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(max_size=300))
def test_fuzz_random_bytes(tiny_codec, blob):
    model, mid, _ = tiny_codec
    with pytest.raises(CodecFormatError):
        decompress_bytes(model, mid, blob)
    with pytest.raises(CodecFormatError):
        decompress_bytes(model, mid, b"LICQ\x01" + blob)


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(h=st.integers(0, 2**32 - 1), w=st.integers(0, 2**32 - 1),
       shape=st.lists(st.integers(0, 2**32 - 1), min_size=0, max_size=6),
       n=st.integers(0, 2**16 - 1), length=st.integers(0, 2**32 - 1), groups=st.integers(0, 255),
       payload=st.binary(max_size=64))
def test_fuzz_oversized_headers_with_valid_crc(tiny_codec, h, w, shape, n, length, groups, payload):
    model, mid, _ = tiny_codec
    body = b"LICQ\x02\x01" + mid + struct.pack("<II", h, w) + struct.pack("<B", len(shape))
    body += struct.pack(f"<{len(shape)}I", *shape) + struct.pack("<B", groups)
    body += struct.pack("<H", n) + struct.pack("<I", length) + payload
    _decode_ends_in_own_error(model, mid, _with_crc(body))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(y=st.binary(max_size=200), z=st.binary(max_size=50))
def test_fuzz_random_strings_in_a_valid_container(tiny_codec, y, z):
    """Well-formed file, correct CRC, garbage entropy-coded strings: decodes to *something* or
    ends in the project's error, within the time bound, never a crash."""
    model, mid, _ = tiny_codec
    data = Container(mid, 70, 90, (2, 2), [[y], [z]]).to_bytes()
    _decode_ends_in_own_error(model, mid, data)


def test_cli_default_model_round_trip_and_no_overwrite(tmp_path, capsys):
    assert default_packed_models()  # the embedded W8A8 default ships with licq
    img = tmp_path / "in.png"
    save_image(read_image(sample_images()[1])[..., :100, :130], img)
    out, rec = tmp_path / "a.licq", tmp_path / "a.png"
    assert main(["compress", str(img), "-o", str(out), "--check"]) == 0
    assert Container.from_bytes(out.read_bytes()).recon_crc is not None
    assert main(["decompress", str(out), "-o", str(rec)]) == 0  # its decode matched
    assert read_image_uint8(rec).shape == (3, 100, 130)
    assert main(["decompress", str(out), "-o", str(rec)]) == 2  # exists
    assert "exists" in capsys.readouterr().err
    bad = tmp_path / "bad.licq"
    bad.write_bytes(out.read_bytes()[:-3])
    assert main(["decompress", str(bad), "-o", str(tmp_path / "b.png")]) == 2
    assert "error" in capsys.readouterr().err and not (tmp_path / "b.png").exists()


def test_cli_converts_grayscale_and_refuses_16_bit(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    gray = tmp_path / "g.png"
    Image.fromarray((np.random.rand(40, 50) * 255).astype(np.uint8), "L").save(gray)
    assert main(["compress", str(gray), "-o", str(tmp_path / "g.licq")]) == 0
    deep = tmp_path / "d.png"
    Image.fromarray((np.random.rand(40, 50) * 65535).astype(np.uint16)).save(deep)
    assert main(["compress", str(deep), "-o", str(tmp_path / "d.licq")]) == 2
    assert "unsupported image mode" in capsys.readouterr().err


def test_cli_zoo_name_uses_the_embedded_or_the_cached_packed_model(tmp_path, monkeypatch, crop_dir):
    """-m ZOO_NAME -q Q: the default architecture is the embedded model; another zoo name is
    CompressAI's pretrained model, PTQ'd and cached (here the cache is pre-filled: no network)."""
    img = tmp_path / "x.png"
    save_image(read_image(sample_images()[0])[..., :64, :96], img)
    assert main(["compress", str(img), "-o", str(tmp_path / "a.licq"), "-m",
                 "bmshj2018-hyperprior", "-q", "2"]) == 0
    assert Container.from_bytes((tmp_path / "a.licq").read_bytes()).model_id == model_id(
        default_packed_models()[2])
    monkeypatch.setenv("LICQ_CACHE", str(tmp_path / "cache"))
    model = tiny_model("mbt2018-mean")
    cfg = QuantConfig.uniform(8, 8)
    post_training_quantize(model, cfg, crop_dir, num_crops=2, patch_size=64, progress=False)
    cached = tmp_path / "cache" / "packed" / "mbt2018-mean-q1-w8a8.safetensors"
    cached.parent.mkdir(parents=True)
    export_packed(model, cached, arch="mbt2018-mean", sizes=get_adapter("mbt2018-mean").tiny_args,
                  config=cfg)
    assert main(["compress", str(img), "-o", str(tmp_path / "b.licq"), "-m", "mbt2018-mean",
                 "-q", "1"]) == 0
    assert Container.from_bytes((tmp_path / "b.licq").read_bytes()).model_id == model_id(cached)
    assert main(["decompress", str(tmp_path / "b.licq"), "-o", str(tmp_path / "b.png"), "-m",
                 "mbt2018-mean", "-q", "1"]) == 0
    assert (tmp_path / "b.png").is_file()
