import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from licq.api import QuantConfig, quantize_
from licq.export import PackedModelError, PackingError, export_packed, load_quantized, pack, unpack
from licq.export.packing import packed_nbytes
from licq.models import get_adapter
from licq.models.loading import infer_args
from licq.ptq import calibrate
from licq.quant.size import model_size
from tests.conftest import tiny_model

TINY_SH = get_adapter("bmshj2018-hyperprior").tiny_args


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 13, 1001])
def test_pack_round_trip_every_width_and_odd_lengths(bits, n):
    g = torch.Generator().manual_seed(bits * 1000 + n)
    codes = torch.randint(0, 2**bits, (n,), generator=g)
    data = pack(codes, bits)
    assert data.dtype == torch.uint8 and data.numel() == packed_nbytes(n, bits)
    assert torch.equal(unpack(data, bits, n), codes)


@settings(max_examples=60, deadline=None)
@given(bits=st.integers(2, 8), values=st.lists(st.integers(0, 255), max_size=200))
def test_pack_round_trip_property(bits, values):
    codes = torch.tensor([v % (1 << bits) for v in values], dtype=torch.int64)
    assert torch.equal(unpack(pack(codes, bits), bits, len(values)), codes)


def test_pack_layout_is_dense_little_endian():
    assert pack(torch.tensor([1, 2, 3, 0]), 2).tolist() == [0b00111001]
    assert pack(torch.tensor([5, 3, 7]), 3).tolist() == [0b11011101, 0b1]


def test_pack_rejects_out_of_range_and_wrong_length():
    with pytest.raises(PackingError, match="outside"):
        pack(torch.tensor([4]), 2)
    with pytest.raises(PackingError, match="outside"):
        pack(torch.tensor([-1]), 4)
    with pytest.raises(PackingError, match="does not hold"):
        unpack(torch.zeros(3, dtype=torch.uint8), 4, 7)


def _quantized(arch, cfg):
    model = tiny_model(arch)
    quantize_(model, cfg)
    g = torch.Generator().manual_seed(1)
    if any(c is not None and c.a_bits is not None for c in [cfg.default]):
        with calibrate(model):
            for _ in range(2):
                model(torch.rand(2, 3, 64, 64, generator=g))
    model.eval().update(force=True)
    return model


@pytest.mark.parametrize("arch,cfg", [
    ("bmshj2018-hyperprior", QuantConfig.uniform(4, 8)),  # GDN/IGDN, ConvTranspose2d
    ("bmshj2018-hyperprior", QuantConfig.uniform(3, None)),
    ("bmshj2018-hyperprior", QuantConfig.uniform(5, 8, symmetric=False)),  # packed zero points
    ("cheng2020-anchor", QuantConfig.uniform(6, 8)),  # masked conv, sub-pixel conv
    ("mbt2018-mean", QuantConfig.uniform(2, 8)),
])
def test_export_load_gives_identical_outputs_and_bitstreams(tmp_path, arch, cfg):
    model = _quantized(arch, cfg)
    adapter = get_adapter(arch)
    sizes = infer_args(adapter, model.state_dict())
    path = tmp_path / "m.safetensors"
    nbytes = export_packed(model, path, arch=arch, sizes=sizes, config=cfg, quality=2)
    loaded, meta = load_quantized(path)
    assert meta["arch"] == arch and meta["quality"] == 2 and meta["config"] == cfg
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        a, b = model(x), loaded(x)
        assert torch.equal(a["x_hat"], b["x_hat"])
        sa, sb = model.compress(x), loaded.compress(x)
    assert sa["strings"] == sb["strings"]
    # the file is about as big as the size accounting says (header, tiny tensors: loose bound here)
    accounted = model_size(tiny_model(arch), cfg).model_bytes
    assert abs(nbytes / accounted - 1) < 0.25


def test_dpa_per_channel_inputs_round_trip(tmp_path):
    from licq.qat.quantizers import QATSpec, freeze_qat, prepare_qat

    cfg = QuantConfig.uniform(4, 8)
    model = _quantized("bmshj2018-hyperprior", cfg)
    params = prepare_qat(model, QATSpec(params="dpa"))
    with torch.no_grad():
        for p in params["zero_point"]:
            p.add_(torch.randint(-2, 3, p.shape).float())
    freeze_qat(model)
    model.update(force=True)
    path = tmp_path / "dpa.safetensors"
    export_packed(model, path, arch="bmshj2018-hyperprior", sizes=TINY_SH,
                  config=cfg)
    loaded, _ = load_quantized(path)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x)["x_hat"], loaded(x)["x_hat"])
    assert loaded.g_a[0].input_quant.axis == 1


@pytest.fixture
def packed_file(tmp_path):
    cfg = QuantConfig.uniform(4, 8)
    model = _quantized("bmshj2018-hyperprior", cfg)
    path = tmp_path / "m.safetensors"
    export_packed(model, path, arch="bmshj2018-hyperprior", sizes=TINY_SH,
                  config=cfg)
    return path


def _rewrite_header(path, edit):
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    edit(header)
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)
    path.write_bytes(len(new).to_bytes(8, "little") + new + raw[8 + n:])


def test_truncated_file_is_rejected(packed_file):
    raw = packed_file.read_bytes()
    packed_file.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(PackedModelError):
        load_quantized(packed_file)


def test_wrong_version_is_rejected(packed_file):
    _rewrite_header(packed_file, lambda h: h["__metadata__"].update(format_version="99"))
    with pytest.raises(PackedModelError, match="version '99'"):
        load_quantized(packed_file)


def test_tampered_shapes_are_rejected(packed_file):
    def edit(h):
        packed = json.loads(h["__metadata__"]["packed"])
        packed["g_a.0.weight"]["shape"][0] += 1
        h["__metadata__"]["packed"] = json.dumps(packed)

    _rewrite_header(packed_file, edit)
    with pytest.raises(PackedModelError, match="does not match"):
        load_quantized(packed_file)


def test_bit_config_mismatch_is_rejected(packed_file):
    _rewrite_header(packed_file, lambda h: h["__metadata__"].update(
        bit_config=QuantConfig.uniform(6, 8).to_json()))
    with pytest.raises(PackedModelError, match="bits"):
        load_quantized(packed_file)


def test_not_a_packed_model(tmp_path):
    from safetensors.torch import save_file

    p = tmp_path / "plain.safetensors"
    save_file({"a": torch.zeros(2)}, str(p))
    with pytest.raises(PackedModelError, match="not a licq packed model"):
        load_quantized(p)
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 5)
    with pytest.raises(PackedModelError, match="readable"):
        load_quantized(tmp_path / "junk.safetensors")


def test_activation_bits_mismatch_is_rejected(packed_file):
    _rewrite_header(packed_file, lambda h: h["__metadata__"].update(
        bit_config=QuantConfig.uniform(4, 6).to_json()))
    with pytest.raises(PackedModelError, match="input stored at 8 bits"):
        load_quantized(packed_file)
