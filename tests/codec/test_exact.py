"""The exact (reproducible) arithmetic path of quantized codecs."""

import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from licq.api import QuantConfig
from licq.codec import compress_image, decompress_bytes
from licq.codec.exact import ExactPathError, ExactSequential, check_exact, exact_paths
from licq.data import read_image
from licq.defaults import sample_images
from licq.errors import LicqError
from licq.ptq import post_training_quantize
from tests.conftest import dpa_, tiny_model


def _quantized(arch, crop_dir, **kw):
    model = tiny_model(arch)
    post_training_quantize(model, QuantConfig.uniform(8, 8, **kw) if "a_bits" not in kw
                           else QuantConfig.uniform(8, **kw), crop_dir, num_crops=2,
                           patch_size=64, progress=False)
    return model.eval()


@pytest.fixture(scope="module")
def qmodel(crop_dir):
    return _quantized("bmshj2018-hyperprior", crop_dir)


@pytest.fixture(scope="module")
def dpa_model(crop_dir):
    return dpa_(_quantized("bmshj2018-hyperprior", crop_dir))


def _z_hat(model, x):
    with torch.no_grad():
        z = model.h_a(torch.abs(model.g_a(x)))
        return model.entropy_bottleneck(z)[0]


def test_exact_h_s_is_within_float_rounding_of_the_fake_quant_model(qmodel):
    x = read_image(sample_images()[0])[..., :128, :128]
    zh = _z_hat(qmodel, x)
    with torch.no_grad():
        ref = qmodel.h_s(zh)
        out = ExactSequential(qmodel.h_s, "h_s")(zh)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    # differences come only from float32 rounding (and a code flipped at a rounding boundary)
    assert (out - ref).abs().max() <= 0.05 * ref.abs().max() + 1e-6
    assert (out - ref).abs().mean() <= 1e-3 * ref.abs().mean() + 1e-6


def test_exact_conv_accumulator_equals_int64_arithmetic(qmodel):
    """The float64 convolution of the integer codes is the exact integer result."""
    layer = ExactSequential(qmodel.g_s, "g_s").steps[0]  # a transposed conv
    torch.manual_seed(0)
    x = torch.randn(1, qmodel.g_s[0].in_channels, 5, 6) * 4
    q = layer.inp.codes(x)
    acc = F.conv_transpose2d(q, layer.w, None, layer.stride, layer.padding, layer.output_padding)
    # int64 reference: scatter every input tap by hand
    qi, wi = q.long(), layer.w.long()
    k, s, p = layer.w.shape[-1], layer.stride[0], layer.padding[0]
    full = torch.zeros(1, wi.shape[1], (x.shape[2] - 1) * s + k, (x.shape[3] - 1) * s + k,
                       dtype=torch.long)
    for i in range(x.shape[2]):
        for j in range(x.shape[3]):
            full[0, :, i * s:i * s + k, j * s:j * s + k] += torch.einsum(
                "c,cokl->okl", qi[0, :, i, j], wi)
    h, w = acc.shape[-2:]
    ref = full[..., p:p + h, p:p + w]
    assert torch.equal(acc.round().long(), ref)


def test_exact_path_is_independent_of_threads_and_batch(qmodel):
    imgs = [read_image(p)[..., :128, :192] for p in sample_images()[:2]]
    zh = _z_hat(qmodel, torch.cat(imgs))
    hs, gs = ExactSequential(qmodel.h_s, "h_s"), ExactSequential(qmodel.g_s, "g_s")
    y = torch.round(torch.randn(2, qmodel.g_s[0].in_channels, 8, 12) * 3)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a_h, a_g = hs(zh[:1]), gs(y[:1])  # alone, one thread
        torch.set_num_threads(max(2, old))
        b_h, b_g = hs(zh), gs(y)  # in a batch of two, several threads
        c_h = hs(zh.contiguous(memory_format=torch.channels_last))
    finally:
        torch.set_num_threads(old)
    assert torch.equal(a_h, b_h[:1]) and torch.equal(a_g, b_g[:1])
    assert torch.equal(b_h, c_h)


def test_per_channel_inputs_run_exactly(dpa_model):
    """DPA's per-channel input quantizers (h_s's ReLU outputs, g_s's IGDN inputs and outputs):
    within float rounding of the fake-quant model, and independent of threads and batch."""
    m = dpa_model
    assert m.h_s[2].input_quant.axis == 1 and m.g_s[1].input_quant.axis == 1
    imgs = [read_image(p)[..., :128, :192] for p in sample_images()[:2]]
    zh = _z_hat(m, torch.cat(imgs))
    y = torch.round(torch.randn(2, m.g_s[0].in_channels, 8, 12) * 3)
    hs, gs = ExactSequential(m.h_s, "h_s"), ExactSequential(m.g_s, "g_s")
    with torch.no_grad():
        for exact, ref in ((hs(zh), m.h_s(zh)), (gs(y), m.g_s(y))):
            assert (exact - ref).abs().max() <= 0.05 * ref.abs().max() + 1e-6
            assert (exact - ref).abs().mean() <= 1e-3 * ref.abs().mean() + 1e-6
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a_h, a_g = hs(zh[:1]), gs(y[:1])
        torch.set_num_threads(max(2, old))
        b_h, b_g = hs(zh), gs(y)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(a_h, b_h[:1]) and torch.equal(a_g, b_g[:1])


#: CompressAI's blocks on the exact path: (tiny architecture, where one sits)
BLOCKS = {"ResidualBlock": ("cheng2020-anchor", "g_s.0"),
          "ResidualBlockUpsample": ("cheng2020-anchor", "g_s.1"),
          "ResidualBlockWithStride": ("cheng2020-anchor", "g_a.0"),
          "AttentionBlock": ("cheng2020-attn", "g_s.0"),
          "ResidualBottleneckBlock": ("elic2022-official", "g_s.2")}


@pytest.fixture(scope="module")
def block_models(crop_dir):
    return {arch: _quantized(arch, crop_dir) for arch in {a for a, _ in BLOCKS.values()}}


def _block_input(block, seed=0):
    first = next(m for m in block.modules() if hasattr(m, "input_quant"))
    torch.manual_seed(seed)
    return torch.randn(2, first.in_channels, 6, 7)


@pytest.mark.parametrize("kind", sorted(BLOCKS))
def test_exact_blocks_equal_the_quantized_block_in_float64(kind, block_models, monkeypatch):
    """Each block's exact version computes what the quantized block computes — the integer-code
    convolutions requantized, the branches added — up to float64 rounding; attention's gate with
    the exact σ in place of the table here (the table is checked below)."""
    import licq.codec.exact as ex

    arch, where = BLOCKS[kind]
    model = block_models[arch]
    block = model.get_submodule(where)
    assert type(block).__name__ == kind
    monkeypatch.setattr(ex._ExactSigmoid, "forward", lambda self, x: torch.sigmoid(x))
    exact = ex.ExactSequential(torch.nn.Sequential(block), where)
    x = _block_input(block)
    with torch.no_grad():
        ref = block.double()(x.double())
        block.float()
        got = exact(x)
    assert got.shape == ref.shape
    err = (got.double() - ref).abs()
    # float64 rounding only, except where a value sits on a rounding boundary of the next
    # quantizer (one code of difference there)
    assert (err > 1e-6).float().mean() < 0.01 and float(err.max()) < 0.2 * float(ref.abs().max())


def test_sigmoid_table_is_correctly_rounded_and_close_to_sigmoid():
    import decimal

    from licq.codec.exact import SIGMOID_BITS, SIGMOID_RANGE, _ExactSigmoid, sigmoid_table

    table = sigmoid_table()
    n = SIGMOID_RANGE << SIGMOID_BITS
    assert table.dtype == torch.float64 and table.numel() == 2 * n + 1
    decimal.getcontext().prec = 50
    for k in (-n, -777, -1, 0, 1, 5, 1000, n):
        x = decimal.Decimal(k) / (1 << SIGMOID_BITS)
        assert float(table[k + n]) == float(1 / (1 + (-x).exp())), k
    x = torch.linspace(-20, 20, 100_001, dtype=torch.float64)
    err = (_ExactSigmoid()(x) - torch.sigmoid(x)).abs().max()
    assert float(err) <= 2.0 ** -(SIGMOID_BITS + 3) + 1e-12


@pytest.mark.parametrize("arch", ["cheng2020-anchor", "cheng2020-attn"])
def test_residual_and_attention_synthesis_is_independent_of_threads_and_batch(arch, block_models,
                                                                               crop_dir):
    model = block_models.get(arch) or _quantized(arch, crop_dir)
    gs = ExactSequential(model.g_s, "g_s")
    torch.manual_seed(1)
    y = torch.round(torch.randn(2, model.g_s[0].conv1.in_channels if arch.endswith("anchor")
                                else model.g_s[0].conv_b[-1].in_channels, 4, 5) * 3)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = gs(y[:1])
        torch.set_num_threads(max(2, old))
        b = gs(y)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(a, b[:1])


def test_models_the_exact_path_cannot_run_are_refused(crop_dir):
    weight_only = _quantized("bmshj2018-hyperprior", crop_dir, a_bits=None)
    with pytest.raises(ExactPathError, match="no activation quantizer"):
        check_exact(weight_only)
    with pytest.raises(ExactPathError, match="not quantized"):
        check_exact(tiny_model("bmshj2018-hyperprior"))
    ar = _quantized("mbt2018", crop_dir)
    check_exact(ar)  # a quantized AR model runs exactly, in licq's loops
    del ar._compress_ar, ar._decompress_ar  # back to CompressAI's (float context) loops
    with pytest.raises(ExactPathError, match="autoregressive loops"):
        check_exact(ar)
    elic = _quantized("elic2022-official", crop_dir)
    with pytest.raises(ExactPathError, match="latent codec"):
        check_exact(elic)
    with pytest.raises(LicqError, match="latent codec"):  # nor can .licq hold its strings
        compress_image(elic, b"0" * 16, torch.rand(1, 3, 64, 64), exact=False)
    g_s_float = _quantized("bmshj2018-hyperprior", crop_dir)
    g_s_float.g_s[0] = tiny_model("bmshj2018-hyperprior").g_s[0]  # a float layer in g_s
    check_exact(g_s_float)  # the entropy path alone can
    with pytest.raises(ExactPathError, match="g_s.0 .*not quantized"):
        compress_image(g_s_float, b"0" * 16, torch.rand(1, 3, 64, 64))


@pytest.mark.parametrize("arch", ["mbt2018", "cheng2020-anchor"])
def test_ar_loops_use_the_quantized_context_model(arch, crop_dir):
    """licq's raster loops compute, at each position, what the quantized context layer's own
    forward computes there (CompressAI's loops would use its float weights)."""
    from licq.codec.ar import _context_fns, ar_compress

    model = _quantized(arch, crop_dir)
    assert model._compress_ar.__func__ is ar_compress
    cp = model.context_prediction
    torch.manual_seed(0)
    y = torch.randn(1, cp.in_channels, 6, 7) * 3
    with torch.no_grad():
        full = cp(y)
        ctx, _ = _context_fns(model, decoding=False)
        yp = F.pad(y, (2, 2, 2, 2))
        for h, w in [(0, 0), (3, 4), (5, 6)]:
            torch.testing.assert_close(ctx(yp[:, :, h:h + 5, w:w + 5])[0, :, 0, 0], full[0, :, h, w],
                                       rtol=1e-5, atol=1e-5)
        with exact_paths(model):
            ex, _ = _context_fns(model, decoding=False)
            torch.testing.assert_close(ex(yp[:, :, 3:8, 4:9])[0, :, 0, 0], full[0, :, 3, 4],
                                       rtol=1e-3, atol=1e-3)


def test_exact_paths_restores_the_model(qmodel):
    h_s, g_s = qmodel.h_s, qmodel.g_s
    with exact_paths(qmodel):
        assert isinstance(qmodel.h_s, ExactSequential) and isinstance(qmodel.g_s, ExactSequential)
    assert qmodel.h_s is h_s and qmodel.g_s is g_s
    with exact_paths(qmodel, synthesis=False):
        assert qmodel.g_s is g_s
    assert "_licq_exact" not in qmodel.state_dict()


@pytest.mark.slow
@pytest.mark.parametrize("arch,dpa", [("bmshj2018-factorized", False),
                                      ("bmshj2018-hyperprior", False), ("mbt2018-mean", False),
                                      ("mbt2018", False), ("mbt2018", True),
                                      ("cheng2020-anchor", False), ("cheng2020-attn", False)])
def test_decode_in_another_process_with_one_thread_is_bit_exact(arch, dpa, tmp_path, crop_dir):
    """Encode here with 2 threads; decode in a fresh process with 1 thread: same pixels (also
    with DPA's per-channel input quantizers, context model and entropy parameters included)."""
    from licq.codec import model_id
    from licq.export import export_packed, load_quantized
    from licq.models import get_adapter

    model = _quantized(arch, crop_dir)
    if dpa:
        model = dpa_(model)
        check_exact(model)
    path = tmp_path / "m.safetensors"
    export_packed(model, path, arch=arch, sizes=get_adapter(arch).tiny_args,
                  config=QuantConfig.uniform(8, 8))
    model, mid = load_quantized(path)[0], model_id(path)
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        files = []
        for i, p in enumerate(sample_images()[:2]):
            x = read_image(p)[..., :100, :130]
            (tmp_path / f"{i}.licq").write_bytes(compress_image(model, mid, x))
            torch.save(decompress_bytes(model, mid, (tmp_path / f"{i}.licq").read_bytes()),
                       tmp_path / f"{i}.pt")
            files.append(i)
    finally:
        torch.set_num_threads(old)
    script = textwrap.dedent(f"""
        import torch
        torch.set_num_threads(1)
        from licq.codec import decompress_bytes, model_id
        from licq.export import load_quantized
        model = load_quantized({str(path)!r})[0]
        mid = model_id({str(path)!r})
        for i in {files!r}:
            out = decompress_bytes(model, mid, open(f"{tmp_path}/{{i}}.licq", "rb").read())
            assert torch.equal(out, torch.load(f"{tmp_path}/{{i}}.pt")), i
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]
