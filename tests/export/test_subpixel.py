import pytest
import torch
import torch.nn as nn

from licq.api import LayerQConfig, QuantConfig, quantize_
from licq.export.subpixel import rewrite_transposed_convs, supported, to_subpixel
from licq.quant.modules import QConvTranspose2d
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
