import math

import pytest
import torch

from licq.api import QuantConfig, quantize_
from licq.qat import RateDistortionLoss
from licq.qat.quantizers import (
    QATSpec,
    dgm_gradient,
    freeze_qat,
    leaky_clamp,
    prepare_qat,
    qat_fake_quantize,
    round_dgm,
)
from licq.quant.fake_quant import FakeQuantize
from tests.conftest import tiny_model


def _grad(fn, x):
    x = x.clone().requires_grad_(True)
    fn(x).sum().backward()
    return x.grad


def test_dgm_gradient_values_at_chosen_points():
    beta = 2.0
    u = torch.tensor([0.0, 0.5, 1.5, 2.0, -0.5, 0.25])
    g = _grad(lambda t: round_dgm(t, beta), u)
    peak = (beta / 2) / math.tanh(beta / 2)  # at the rounding boundary (frac = 1/2)
    low = (beta / 2) * (1 - math.tanh(beta / 2) ** 2) / math.tanh(beta / 2)  # at integers
    mid = (beta / 2) * (1 - math.tanh(beta * -0.25) ** 2) / math.tanh(beta / 2)  # frac = 1/4
    expected = torch.tensor([low, peak, peak, low, peak, mid])
    torch.testing.assert_close(g, expected.float(), rtol=1e-5, atol=1e-6)
    assert peak > 1 > low  # largest near the boundary, smallest at the grid points
    # the forward pass is plain rounding
    assert torch.equal(round_dgm(u, beta), torch.round(u))


def test_dgm_equals_the_papers_formula_at_beta_1_and_averages_to_one():
    f = torch.linspace(0.01, 0.99, 99)

    def paper(x):  # g(x) = ½·tanh(β·(x − ⌊x⌋) − 0.5)/tanh(0.5) + ½, β = 1
        return 0.5 * torch.tanh((x - torch.floor(x)) - 0.5) / math.tanh(0.5) + 0.5

    torch.testing.assert_close(dgm_gradient(f, 1.0), _grad(paper, f), rtol=1e-5, atol=1e-6)
    dense = torch.linspace(0, 1, 100001)[:-1]
    for beta in (0.5, 2.0, 8.0):
        assert dgm_gradient(dense, beta).mean().item() == pytest.approx(1.0, abs=1e-3)
    # beta -> 0 tends to the straight-through estimator
    assert torch.allclose(dgm_gradient(f, 1e-4), torch.ones_like(f), atol=1e-6)


def test_leaky_and_hard_clip_gradients():
    v = torch.tensor([-3.0, -1.0, 0.0, 1.0, 3.0])
    assert torch.equal(leaky_clamp(v, -1, 1, 0.1), v.clamp(-1, 1))
    torch.testing.assert_close(_grad(lambda t: leaky_clamp(t, -1, 1, 0.1), v),
                               torch.tensor([0.1, 1.0, 1.0, 1.0, 0.1]))
    torch.testing.assert_close(_grad(lambda t: leaky_clamp(t, -1, 1, 0.0), v),
                               torch.tensor([0.0, 1.0, 1.0, 1.0, 0.0]))


@pytest.mark.parametrize("clip,slope", [("hard", 0.0), ("leaky", 0.05)])
def test_fake_quantize_input_gradient_ste_and_clip(clip, slope):
    s, z = torch.tensor(0.5), torch.tensor(0.0)
    spec = QATSpec(rounding="ste", clip=clip, leaky_slope=max(slope, 0.01) if clip == "leaky"
                   else 0.01)
    x = torch.tensor([0.1, 0.74, -0.3, 10.0, -10.0])  # qmax·s = 3.5: the last two are clipped
    g = _grad(lambda t: qat_fake_quantize(t, s, z, -7, 7, None, spec), x)
    out_slope = spec.leaky_slope if clip == "leaky" else 0.0
    torch.testing.assert_close(g, torch.tensor([1, 1, 1, out_slope, out_slope]).float())
    y = qat_fake_quantize(x, s, z, -7, 7, None, spec)
    torch.testing.assert_close(y, torch.tensor([0.0, 0.5, -0.5, 3.5, -3.5]))


def test_scale_gradient_is_lsq():
    spec = QATSpec()
    s = torch.tensor(0.5, requires_grad=True)
    x = torch.tensor([0.74, 10.0])  # u = 1.48 (inside), 20 (clipped to qmax = 7)
    qat_fake_quantize(x[:1], s, torch.tensor(0.0), -7, 7, None, spec).sum().backward()
    assert s.grad.item() == pytest.approx(round(1.48) - 1.48)  # round(u) − u
    s.grad = None
    qat_fake_quantize(x[1:], s, torch.tensor(0.0), -7, 7, None, spec).sum().backward()
    assert s.grad.item() == pytest.approx(7.0)  # qmax − z


def _quantized_tiny(w_bits=4):
    model = tiny_model("bmshj2018-hyperprior")
    quantize_(model, QuantConfig.uniform(w_bits, 8))
    for m in model.modules():  # stand-in calibration: a fixed activation range
        if isinstance(m, FakeQuantize) and not bool(m.calibrated):
            m.scale.fill_(0.002)  # a narrow range: some inputs are clipped
            m.zero_point.fill_(128.0)
            m.calibrated.fill_(True)
    return model


def test_dpa_parameters_get_gradients_and_stay_positive_and_in_range():
    model = _quantized_tiny()
    params = prepare_qat(model, QATSpec(params="dpa", rounding="dgm"))
    assert params["scale"] and params["zero_point"]
    conv = model.g_a[0]
    assert conv.input_quant.axis == 1 and conv.input_quant.zp.shape == (3,)  # per input channel
    x = torch.rand(1, 3, 64, 64)
    RateDistortionLoss(0.01)(model.train()(x), x)["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params["scale"])
    assert sum(int(p.grad is not None and p.grad.abs().sum() > 0)
               for p in params["zero_point"]) > 0
    # drive the raw parameters far out: the quantizer still uses s > 0 and z in [qmin, qmax]
    with torch.no_grad():
        for p in params["scale"]:
            p.fill_(-80.0)
        for p in params["zero_point"]:
            p.fill_(1e6)
    for m in model.modules():
        if isinstance(m, FakeQuantize) and m.zp is not None:
            s, z = m.current_qparams()
            assert (s > 0).all() and (z == m.qmax).all()


def test_lsq_keeps_zero_points_and_freeze_writes_buffers():
    model = _quantized_tiny()
    params = prepare_qat(model, QATSpec(params="lsq"))
    assert params["scale"] and not params["zero_point"]
    with torch.no_grad():
        for p in params["scale"]:
            p.add_(0.1)
    fq = model.g_a[0].weight_quant
    expected = torch.exp(fq.log_scale.detach()).clone()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        before = model.eval()(x)["x_hat"]
    freeze_qat(model)
    assert fq.log_scale is None and type(fq) is FakeQuantize and not hasattr(fq, "qat_spec")
    assert torch.equal(fq.scale, expected)
    assert not any(n.endswith(("log_scale", ".zp")) for n in model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(model(x)["x_hat"], before)


def test_fixed_params_add_nothing_and_need_calibration():
    model = _quantized_tiny()
    assert prepare_qat(model, QATSpec(params="fixed")) == {"scale": [], "zero_point": []}
    raw = tiny_model("bmshj2018-hyperprior")
    quantize_(raw, QuantConfig.uniform(4, 8))
    with pytest.raises(ValueError, match="calibrate"):
        prepare_qat(raw, QATSpec())
    with pytest.raises(ValueError, match="quantized layers"):
        prepare_qat(tiny_model("bmshj2018-hyperprior"), QATSpec())
    with pytest.raises(ValueError, match="rounding"):
        QATSpec(rounding="nearest")
