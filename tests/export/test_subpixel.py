import pytest
import torch
import torch.nn as nn

from licq.api import LayerQConfig, QuantConfig, quantize_
from licq.export.subpixel import rewrite_transposed_convs, supported, to_subpixel
from licq.quant.modules import QConv2d, QConvTranspose2d
from tests.conftest import tiny_model


@pytest.mark.parametrize("k,s,p,op", [(5, 2, 2, 1), (3, 1, 1, 0), (4, 2, 1, 0), (3, 2, 1, 1),
                                      (6, 3, 2, 1)])
def test_subpixel_equals_transposed_conv(k, s, p, op):
    torch.manual_seed(k * 10 + s)
    t = nn.ConvTranspose2d(5, 7, k, s, p, op)
    assert supported(t) == (k + op - 2 * p - s == 0)
    if not supported(t):
        with pytest.raises(ValueError, match="sub-pixel"):
            to_subpixel(t)
        return
    x = torch.randn(2, 5, 9, 11)
    with torch.no_grad():
        torch.testing.assert_close(to_subpixel(t)(x), t(x), rtol=1e-5, atol=1e-5)


def test_quantized_transposed_conv_keeps_its_codes():
    torch.manual_seed(0)
    t = QConvTranspose2d.from_float(nn.ConvTranspose2d(4, 6, 5, 2, 2, 1), LayerQConfig(4, 8))
    with torch.no_grad():
        t.input_quant.scale.fill_(0.02)
        t.input_quant.zero_point.fill_(120.0)
        t.input_quant.calibrated.fill_(True)
    sp = to_subpixel(t)
    x = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(sp(x), t(x), rtol=1e-5, atol=1e-5)
        # the rewritten weight quantizes to the same integer codes, phase by phase
        codes_t = torch.round(t.weight / t.weight_quant.scale.view(1, -1, 1, 1))
        codes_s = torch.round(sp.conv.weight / sp.conv.weight_quant.scale.view(-1, 1, 1, 1))
        assert set(codes_s.unique().tolist()) <= set(codes_t.unique().tolist()) | {0.0}


def test_per_channel_input_quantizer_is_kept():
    """A DPA input quantizer (one scale and zero point per input channel) survives the rewrite
    (its state dict did not fit the new conv's per-tensor quantizer)."""
    torch.manual_seed(0)
    t = QConvTranspose2d.from_float(nn.ConvTranspose2d(4, 6, 5, 2, 2, 1), LayerQConfig(8, 8))
    with torch.no_grad():
        t.input_quant.axis = 1
        t.input_quant.scale = torch.tensor([0.01, 0.02, 0.04, 0.08])
        t.input_quant.zero_point = torch.tensor([100.0, 120.0, 128.0, 140.0])
        t.input_quant.calibrated.fill_(True)
    sp = to_subpixel(t)
    assert sp.conv.input_quant.axis == 1
    x = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(sp(x), t(x), rtol=1e-5, atol=1e-5)
        assert torch.equal(sp.conv.input_quant(x), t.input_quant(x))


def test_rewrite_whole_codec_same_bitstreams():
    model = tiny_model("bmshj2018-hyperprior")
    quantize_(model, QuantConfig.uniform(6, None))
    model.eval().update(force=True)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        enc = model.compress(x)
        ref = model.decompress(enc["strings"], enc["shape"])["x_hat"]
        names = rewrite_transposed_convs(model)
        assert names == ["g_s.0", "g_s.2", "g_s.4", "g_s.6", "h_s.0", "h_s.2"]
        out = model.decompress(enc["strings"], enc["shape"])["x_hat"]
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("k,s,p", [(5, 2, 2), (3, 2, 1), (4, 2, 1), (5, 4, 2), (3, 3, 1)])
def test_space_to_depth_equals_strided_conv(k, s, p):
    from licq.export.subpixel import space_to_depth_supported, to_space_to_depth

    torch.manual_seed(k * 10 + s)
    c = nn.Conv2d(3, 7, k, s, p)
    assert space_to_depth_supported(c)
    m = to_space_to_depth(c)
    for h, w in ((6 * s, 4 * s), (16 * s, 9 * s)):
        x = torch.randn(2, 3, h, w)
        with torch.no_grad():
            torch.testing.assert_close(m(x), c(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError):  # a size that is not a multiple of s: refused, not wrong
        m(torch.randn(1, 3, 6 * s + 1, 4 * s))
    assert not space_to_depth_supported(nn.Conv2d(3, 7, 3, 1, 1))
    assert not space_to_depth_supported(nn.Conv2d(3, 7, 3, 2, "valid"))


def test_quantized_space_to_depth_keeps_quantizers_and_function():
    from licq.export.subpixel import rewrite_strided_input_convs

    torch.manual_seed(0)
    seq = nn.Sequential(QConv2d.from_float(nn.Conv2d(3, 6, 5, 2, 2), LayerQConfig(6, 8)),
                        QConv2d.from_float(nn.Conv2d(6, 6, 5, 2, 2), LayerQConfig(6, 8)))
    for q in seq:
        with torch.no_grad():
            q.input_quant.scale.fill_(0.02)
            q.input_quant.zero_point.fill_(120.0)
            q.input_quant.calibrated.fill_(True)
    x = torch.rand(1, 3, 16, 24) * 2 - 1
    with torch.no_grad():
        ref = seq(x)
    w_scale = seq[0].weight_quant.scale.clone()
    assert rewrite_strided_input_convs(seq) == ["0"]  # the 6-channel layer is left alone
    conv = seq[0].conv
    assert isinstance(conv, QConv2d) and conv.in_channels == 12 and conv.kernel_size == (3, 3)
    torch.testing.assert_close(conv.weight_quant.scale, w_scale)  # per output channel, copied
    with torch.no_grad():
        out = seq(x)
    # same quantized input grid and weight codes: equal up to float summation order
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_quantized_space_to_depth_keeps_per_channel_input_quantizer():
    """A DPA input quantizer of the RGB layer (one scale and zero point per colour) quantizes
    the unshuffled input with each colour's parameters repeated over its s² phases."""
    from licq.export.subpixel import to_space_to_depth

    torch.manual_seed(0)
    q = QConv2d.from_float(nn.Conv2d(3, 6, 5, 2, 2), LayerQConfig(8, 8))
    with torch.no_grad():
        q.input_quant.axis = 1
        q.input_quant.scale = torch.tensor([0.004, 0.01, 0.03])
        q.input_quant.zero_point = torch.tensor([128.0, 100.0, 140.0])
        q.input_quant.calibrated.fill_(True)
    m = to_space_to_depth(q)
    assert m.conv.input_quant.scale.shape == (12,)
    x = torch.rand(1, 3, 16, 24) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(m(x), q(x), rtol=1e-4, atol=1e-4)
