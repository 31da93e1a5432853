import pytest
import torch
import torch.nn as nn
from compressai.layers import GDN, GDN1, CheckerboardMaskedConv2d, MaskedConv2d, subpel_conv3x3

from licq.api import LayerQConfig, QuantConfig, quantize_
from licq.ptq import calibrate
from licq.quant import QGDN, QConv2d, QConvTranspose2d, QLinear, QMaskedConv2d
from licq.quant.fake_quant import NotCalibratedError


def _layers():
    torch.manual_seed(0)
    return {
        "conv": (nn.Conv2d(6, 8, 3, padding=1), QConv2d, (2, 6, 9, 9)),
        "convT": (nn.ConvTranspose2d(6, 8, 5, stride=2, padding=2, output_padding=1),
                  QConvTranspose2d, (2, 6, 9, 9)),
        "masked": (MaskedConv2d(6, 8, 5, padding=2), QMaskedConv2d, (2, 6, 9, 9)),
        "checkerboard": (CheckerboardMaskedConv2d(6, 8, 5, padding=2), QMaskedConv2d, (2, 6, 9, 9)),
        "subpel": (subpel_conv3x3(6, 3, 2), QConv2d, (2, 6, 9, 9)),
        "gdn": (GDN(6), QGDN, (2, 6, 9, 9)),
        "igdn": (GDN(6, inverse=True), QGDN, (2, 6, 9, 9)),
        "gdn1": (GDN1(6), QGDN, (2, 6, 9, 9)),
        "linear": (nn.Linear(6, 8), QLinear, (4, 6)),
    }


def _perturb(mod):
    with torch.no_grad():  # non-trivial GDN parameters (init is the identity-like γ = 0.1·I)
        for p in mod.parameters():
            p.add_(0.05 * torch.rand_like(p))
    return mod


def _quantized(mod, cfg, x):
    wrapper = nn.Sequential(mod)
    quantize_(wrapper, QuantConfig(default=cfg))
    with calibrate(wrapper):
        wrapper(x)
    return wrapper[0]


@pytest.mark.parametrize("kind", list(_layers()))
def test_16_bit_matches_float(kind):
    mod, qtype, shape = _layers()[kind]
    mod = _perturb(mod)
    x = torch.randn(shape)
    ref = mod(x).detach()
    q = _quantized(mod, LayerQConfig(16, 16, observer="minmax"), x)
    inner = q[0] if isinstance(q, nn.Sequential) else q  # sub-pixel: the conv before the shuffle
    assert isinstance(inner, qtype)
    # a quantized layer is its float layer
    float_base = {QConv2d: nn.Conv2d, QConvTranspose2d: nn.ConvTranspose2d,
                  QMaskedConv2d: MaskedConv2d, QGDN: GDN, QLinear: nn.Linear}[qtype]
    assert isinstance(inner, float_base)
    out = q(x).detach()
    assert torch.allclose(out, ref, rtol=1e-3, atol=1e-3 * ref.abs().max().item())


@pytest.mark.parametrize("kind", ["conv", "convT", "masked", "linear", "gdn"])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_at_most_2_pow_b_values_per_channel(kind, bits):
    mod, qtype, shape = _layers()[kind]
    q = _quantized(_perturb(mod), LayerQConfig(bits, None), torch.randn(shape))
    w = q.quantized_weight().detach()
    axis = q.weight_quant.axis
    assert axis == (1 if kind == "convT" else 0)
    for c in range(w.shape[axis]):
        assert w.select(axis, c).unique().numel() <= 2**bits


def test_conv_transpose_is_per_output_channel_axis_1():
    mod = nn.ConvTranspose2d(4, 6, 3)
    with torch.no_grad():
        mod.weight.mul_(torch.arange(1, 7).float().view(1, 6, 1, 1) * 10)  # output-channel scales
    q = _quantized(mod, LayerQConfig(8, None), torch.randn(1, 4, 5, 5))
    assert q.weight_quant.scale.shape == (6,)
    amax = mod.weight.detach().abs().amax(dim=(0, 2, 3))
    assert torch.allclose(q.weight_quant.scale, amax / 127, rtol=0.05)  # mse may shrink slightly


@pytest.mark.parametrize("kind", ["masked", "checkerboard"])
def test_masked_conv_keeps_its_mask(kind):
    mod, _, shape = _layers()[kind]
    with torch.no_grad():
        mod.weight.copy_(torch.randn_like(mod.weight))  # unmasked garbage in the masked taps
    q = _quantized(mod, LayerQConfig(4, 8), torch.randn(shape))
    w = q.quantized_weight().detach()
    assert torch.equal(q.mask, mod.mask)
    assert (w[mod.mask == 0] == 0).all()
    assert (w[mod.mask == 1] != 0).any()


def test_weight_only_mode_has_no_input_quantizer_and_needs_no_calibration():
    wrapper = nn.Sequential(nn.Conv2d(3, 4, 3))
    quantize_(wrapper, QuantConfig.uniform(6, None))
    assert wrapper[0].input_quant is None
    wrapper(torch.randn(1, 3, 8, 8))  # runs at once


def test_activation_quantizer_must_be_calibrated():
    wrapper = nn.Sequential(nn.Conv2d(3, 4, 3))
    quantize_(wrapper, QuantConfig.uniform(8, 8))
    with pytest.raises(NotCalibratedError, match="licq.calibrate"):
        wrapper(torch.randn(1, 3, 8, 8))


def _latent_input_quantizer():
    """The 8-bit input quantizer of a layer fed decoded latents (integers), calibrated."""
    wrapper = nn.Sequential(nn.ConvTranspose2d(4, 4, 3))
    quantize_(wrapper, QuantConfig(default=LayerQConfig(16, 8)))
    y_hat = torch.randint(-60, 90, (2, 4, 6, 6)).float()
    with calibrate(wrapper):
        wrapper(y_hat)
    return wrapper[0].input_quant, y_hat


def test_integer_inputs_stay_exact():
    # a decoded latent (integers) through an 8-bit input quantizer is unchanged
    iq, y_hat = _latent_input_quantizer()
    assert iq.scale.item() == 1.0
    assert torch.equal(iq(y_hat), y_hat)
    # and a wider range gets an integer step > 1
    wide = torch.tensor([-400.0, 0.0, 300.0]).view(1, 1, 1, 3)
    iq.calibrate_static(wide)
    assert iq.scale.item() == 3.0  # ceil(700 / 255): the integer grid has step 3
    assert iq(wide).tolist() == [[[[-399.0, 0.0, 300.0]]]]


def test_latent_quantizer_in_training_adds_only_its_error_on_the_rounded_latent():
    # while training, the entropy model hands over y + u (noise), not round(y): the quantizer of
    # the decoded latent must not round that again (twice the latent noise of inference)
    iq, y_hat = _latent_input_quantizer()
    noisy = (y_hat + torch.rand(2, 4, 6, 6) * 0.98 - 0.49)  # rounds back into the range
    noisy.requires_grad_(True)
    iq.train()
    out = iq(noisy)
    assert torch.equal(out, noisy)  # step 1: the identity on the noisy latent
    out.sum().backward()
    assert torch.equal(noisy.grad, torch.ones_like(noisy))
    iq.eval()
    assert torch.equal(iq(noisy.detach()), torch.round(noisy.detach()))  # inference: rounds
    # with an integer step of 3, training adds the error the quantizer makes on round(x)
    iq.calibrate_static(torch.tensor([-400.0, 0.0, 300.0]).view(1, 1, 1, 3))
    iq.train()
    x = torch.tensor([-398.7, 0.2, 301.4]).view(1, 1, 1, 3)
    expect = x + (torch.tensor([-399.0, 0.0, 300.0]).view(1, 1, 1, 3) - torch.round(x))
    assert torch.allclose(iq(x), expect)


def test_quantized_igdn_gradient_is_finite_at_a_zero_norm():
    from compressai.layers import GDN

    from licq.api import LayerQConfig
    from licq.quant.modules import QGDN

    q = QGDN.from_float(GDN(2, inverse=True), LayerQConfig(w_bits=4, a_bits=None))
    with torch.no_grad():  # a scale so coarse that β quantizes to 0, as low-bit β can
        q.beta_quant.scale.fill_(1.0)
    x = torch.zeros(1, 2, 3, 3, requires_grad=True)
    y = q(x)
    assert torch.equal(y, torch.zeros_like(y))  # forward unchanged: x·sqrt(0) = 0
    y.sum().backward()
    assert torch.isfinite(x.grad).all()
    # the plain sqrt would have given 0·∞ = NaN here
    x2 = torch.zeros(3, requires_grad=True)
    (x2 * torch.sqrt(x2**2)).sum().backward()
    assert torch.isnan(x2.grad).all()
