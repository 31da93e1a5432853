"""ONNX export (QDQ) and the ONNX Runtime int8 backend."""

import pytest
import torch

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from licq.api import LayerQConfig, QuantConfig  # noqa: E402
from licq.data import read_image  # noqa: E402
from licq.defaults import sample_images  # noqa: E402
from licq.eval.codec import evaluate_image  # noqa: E402
from licq.export.onnx import (  # noqa: E402
    OnnxExportError,
    OrtModule,
    export_onnx,
    int8_backend,
    layer_kernel_map,
    layer_kernels,
    qdq_mode,
)
from licq.ptq import post_training_quantize  # noqa: E402
from tests.conftest import dpa_, tiny_model  # noqa: E402


def _ptq(cfg, crop_dir):
    model = tiny_model("bmshj2018-hyperprior")
    post_training_quantize(model, cfg, crop_dir, num_crops=2, patch_size=64, progress=False)
    return model.eval()


@pytest.fixture(scope="module")
def w8a8(crop_dir):
    return _ptq(QuantConfig.uniform(8, 8), crop_dir)


@pytest.fixture(scope="module")
def image():
    return read_image(sample_images()[0])[..., :128, :192]


def test_qdq_mode_computes_the_fake_quant_function(w8a8, image):
    with torch.no_grad():
        ref = w8a8.g_a(image)
        with qdq_mode(w8a8):
            out = w8a8.g_a(image)
    # same grid, same rounding: only float-rounding-level differences
    assert (out - ref).abs().max() < 1e-3 * ref.abs().max()


def test_exported_graph_has_qdq_nodes_and_ort_fuses_int8_convs(w8a8, tmp_path):
    paths = export_onnx(w8a8, tmp_path)
    assert set(paths) == {"g_a", "h_a", "g_s", "h_s"}
    ops = [n.op_type for n in onnx.load(str(paths["g_a"])).graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    assert not any(n.op_type == "ConvTranspose" for n in onnx.load(str(paths["g_s"])).graph.node)
    OrtModule(paths["g_s"], 1, optimized_path=tmp_path / "g_s.opt.onnx")
    kernels = layer_kernels(tmp_path / "g_s.opt.onnx")
    assert kernels.get("QLinearConv", 0) >= 3  # every conv whose output is re-quantized
    per_layer = layer_kernel_map(tmp_path / "g_s.opt.onnx", "g_s")
    assert per_layer["g_s.0"] == "QLinearConv"  # sub-pixel conv feeding IGDN's quantizer
    assert per_layer["g_s.6"] == "Conv"  # the last layer: its output is not re-quantized


@pytest.mark.parametrize("name", ["fp32", "w8a8", "mixed", "dpa"])
def test_ort_reproduces_pytorch(name, crop_dir, image, tmp_path):
    """Tolerances: FP32 graph 1e-4 relative; int8 kernels vs fake-quant 2% of the output range
    (requantization rounding of ORT's kernels), and the rounded latents almost all equal.
    ``dpa``: DPA's per-channel input quantizers (g_s's transposed convs, the RGB layer) export
    too, and the layers they feed get no int8 kernel (QLinearConv takes one input scale)."""
    if name == "fp32":
        model = tiny_model("bmshj2018-hyperprior").eval()
    else:
        cfg = QuantConfig.uniform(8, 8) if name in ("w8a8", "dpa") else QuantConfig(
            default=LayerQConfig(8, 8), layers={"g_a.2": LayerQConfig(4, 8),
                                                "g_s.2": LayerQConfig(6, 6)})
        model = _ptq(cfg, crop_dir)
    if name == "dpa":
        dpa_(model)
        assert model.g_s[2].input_quant.axis == 1 and model.g_a[0].input_quant.axis == 1
    backend = int8_backend(model, tmp_path, threads=1)
    if name == "dpa":
        assert "QLinearConv" not in layer_kernels(tmp_path / "g_s.opt.onnx")
    with torch.no_grad():
        y = model.g_a(image)
        y_ort = backend.g_a(image)
        x = model.g_s(torch.round(y))
        x_ort = backend.g_s(torch.round(y))
    tol = 1e-4 if name == "fp32" else 0.02
    assert (y_ort - y).abs().max() <= tol * y.abs().max()
    assert (x_ort - x).abs().max() <= tol * x.abs().max()
    assert (torch.round(y_ort) != torch.round(y)).float().mean() < 0.01


def test_int8_backend_codes_real_bitstreams_close_to_fake_quant(w8a8, image, tmp_path):
    backend = int8_backend(w8a8, tmp_path, threads=1)
    ref = evaluate_image(w8a8, image, 64)
    out = evaluate_image(backend, image, 64)
    assert abs(out["psnr-rgb"] - ref["psnr-rgb"]) < 0.1
    assert abs(out["bpp"] - ref["bpp"]) < 0.02 * ref["bpp"] + 1e-3


def test_dynamic_models_are_refused(crop_dir, tmp_path):
    from licq.api import quantize_
    from licq.dynamic import make_dynamic

    model = tiny_model("bmshj2018-hyperprior")
    quantize_(model, QuantConfig.uniform(8, 8))
    make_dynamic(model, (4, 8))
    with pytest.raises(OnnxExportError, match="dynamic"):
        export_onnx(model, tmp_path)


def test_cli_export_onnx_and_eval_int8_backend(tmp_path, capsys):
    from licq.cli import main

    packed = tmp_path / "q3.safetensors"
    assert main(["export", "-q", "3", "--w-bits", "8", "--a-bits", "8", "--calib-crops", "2",
                 "-o", str(packed), "--onnx", str(tmp_path / "onnx"), "--no-progress"]) == 0
    assert {p.name for p in (tmp_path / "onnx").glob("*.onnx")} == {
        "g_a.onnx", "h_a.onnx", "g_s.onnx", "h_s.onnx"}
    out = tmp_path / "r.json"
    assert main(["eval", "-m", str(packed), "--limit", "1", "--backend", "int8", "--no-progress",
                 "-o", str(out)]) == 0
    import json

    r = json.loads(out.read_text())
    assert "int8 backend" in r["description"] and r["results"]["bpp"][0] > 0


def test_u8s8_probe_tells_saturating_kernels_from_exact_ones():
    """The probe's pairs overflow int16 (what AVX2's vpmaddubsw saturates), so a saturating
    kernel would give a different output code than the exact sum."""
    import numpy as np

    from licq.export.onnx import _u8s8_probe, u8s8_exact

    x, w, scale = _u8s8_probe()
    prods = x[0, :, 0, 0].astype(np.int64) * w[0, :, 0, 0].astype(np.int64)
    assert (w == w[:1]).all() and (x == x[..., :1, :1]).all()  # every output sums the same
    pairs = prods[0::2] + prods[1::2]
    assert (np.abs(pairs) > 32767).any()
    exact = np.clip(np.round(prods.sum() / scale), 0, 255)
    saturated = np.clip(np.round(np.clip(pairs, -32768, 32767).sum() / scale), 0, 255)
    assert exact != saturated
    assert isinstance(u8s8_exact(), bool)


@pytest.mark.parametrize("u8", [True, False, None])
def test_8bit_weight_storage(u8, w8a8, image, tmp_path, monkeypatch):
    """8-bit weights export as uint8 (zero point 128) or int8, the default following the kernel
    check; both hold the same codes, so the dequantized weights (and outputs) agree."""
    import numpy as np
    from onnx import numpy_helper

    import licq.export.onnx as lonnx

    monkeypatch.setattr(lonnx, "U8_WEIGHTS", u8)
    want_u8 = (not lonnx.u8s8_exact()) if u8 is None else u8
    paths = export_onnx(w8a8, tmp_path, parts=("g_a",))
    OrtModule(paths["g_a"], 1, optimized_path=tmp_path / "g_a.opt.onnx")
    g = onnx.load(str(tmp_path / "g_a.opt.onnx")).graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    conv = next(n for n in g.node if n.op_type == "QLinearConv")
    wq, wz = inits[conv.input[3]], inits[conv.input[5]]
    assert wq.dtype == (np.uint8 if want_u8 else np.int8)
    assert (wz == 128).all() if want_u8 else (wz == 0).all()
    if not want_u8 and not lonnx.u8s8_exact():
        return  # int8 storage forced on a CPU whose u8·s8 kernels saturate: no parity to check
    with torch.no_grad():
        ref = w8a8.g_a(image)
        out = int8_backend(w8a8, tmp_path / "be", threads=1).g_a(image)
    assert (out - ref).abs().max() <= 0.02 * ref.abs().max()


def test_space_to_depth_input_layer_is_bit_identical_in_ort(w8a8, image, tmp_path, monkeypatch):
    """The RGB input layer exported in its space-to-depth form runs as QLinearConv and gives
    exactly the same int8 result as the plain strided form (integer sums in another order)."""
    import licq.export.subpixel as sp

    backend = int8_backend(w8a8, tmp_path / "s2d", threads=1)
    assert layer_kernel_map(tmp_path / "s2d" / "g_a.opt.onnx", "g_a")["g_a.0"] == "QLinearConv"
    ops = {n.op_type for n in onnx.load(str(tmp_path / "s2d" / "g_a.onnx")).graph.node}
    monkeypatch.setattr(sp, "rewrite_strided_input_convs", lambda model, max_in_channels=4: [])
    plain = int8_backend(w8a8, tmp_path / "plain", threads=1)
    ops_plain = {n.op_type for n in onnx.load(str(tmp_path / "plain" / "g_a.onnx")).graph.node}
    assert ops != ops_plain  # the rewrite did change the graph
    with torch.no_grad():
        assert torch.equal(backend.g_a(image), plain.g_a(image))
