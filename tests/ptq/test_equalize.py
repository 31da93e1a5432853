import copy

import pytest
import torch
from compressai.layers import GDN

from licq.api import QuantConfig
from licq.cli._common import _equalize_arg
from licq.models import list_models
from licq.ptq import equalize_, equalize_for_config, post_training_quantize
from licq.ptq.equalize import equalization_pairs
from tests.conftest import tiny_model


def _random_gdn(model: torch.nn.Module) -> None:
    """Non-trivial (I)GDN parameters: a fresh model's are β = 1, γ = 0.1·I."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, GDN):
                c = m.beta.numel()
                m.beta.copy_(m.beta_reparam.init(0.2 + torch.rand(c, generator=g)))
                m.gamma.copy_(m.gamma_reparam.init(0.05 * torch.rand(c, c, generator=g)))


def _skewed(model: torch.nn.Module) -> None:
    """Spread the channel ranges at every equalizable input (what equalization should undo)."""
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for _, prod, _, _ in equalization_pairs(model):
            if isinstance(prod, GDN):
                continue
            ax = 1 if isinstance(prod, torch.nn.ConvTranspose2d) else 0
            c = prod.weight.shape[ax]
            f = torch.exp(2 * torch.randn(c, generator=g))
            shape = [1] * prod.weight.ndim
            shape[ax] = -1
            prod.weight.mul_(f.reshape(shape))
            if prod.bias is not None:
                prod.bias.mul_(f)


def _input_ranges(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    seen: dict[str, torch.Tensor] = {}
    hooks = [cons.register_forward_hook(
        lambda m, i, o, n=n: seen.__setitem__(n, i[0].abs().amax(dim=(0, 2, 3))))
        for _, _, n, cons in equalization_pairs(model)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


def test_pairs_of_the_scale_hyperprior():
    model = tiny_model("bmshj2018-hyperprior")
    consumers = [c for _, _, c, _ in equalization_pairs(model)]
    # GDN → conv in g_a / g_s, conv → ReLU → conv in h_a / h_s; never a coded latent's consumer
    assert consumers == ["g_a.2", "g_a.4", "g_a.6", "g_s.2", "g_s.4", "g_s.6",
                         "h_a.2", "h_a.4", "h_s.2", "h_s.4"]


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_equalization_preserves_the_float_codec(name, alpha):
    model = tiny_model(name)
    _random_gdn(model)
    torch.manual_seed(3)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
    eq = copy.deepcopy(model)
    equalize_(eq, [x], alpha)
    with torch.no_grad():
        out = eq(x)
    torch.testing.assert_close(out["x_hat"], ref["x_hat"], rtol=1e-4, atol=1e-5)
    for k in ref["likelihoods"]:
        torch.testing.assert_close(out["likelihoods"][k], ref["likelihoods"][k], rtol=1e-4,
                                   atol=1e-6)


def test_alpha_one_gives_every_channel_the_same_range():
    model = tiny_model("bmshj2018-hyperprior")
    _random_gdn(model)
    _skewed(model)
    x = torch.rand(2, 3, 64, 64)
    before = _input_ranges(model, x)
    live = {n: a > 1e-6 * a.max() for n, a in before.items()}  # ReLU-dead channels excluded
    spread = {n: float(a[live[n]].max() / a[live[n]].median()) for n, a in before.items()}
    assert max(spread.values()) > 5  # something to equalize
    report = equalize_(model, [x], 1.0)
    after = _input_ranges(model, x)  # measured again, not taken from the report
    for n, a in after.items():
        if n.startswith("g_"):  # GDN producers: β's floor may bound s; here it has room
            torch.testing.assert_close(a / a.max(), torch.ones_like(a), rtol=1e-3, atol=1e-3)
        assert report.spread_before[n] == pytest.approx(spread[n], rel=1e-4)
        a = a[live[n]]
        assert report.spread_after[n] == pytest.approx(float(a.max() / a.median()), rel=1e-3)


def test_igdn_beta_stays_above_its_floor():
    model = tiny_model("bmshj2018-hyperprior")
    igdn = model.g_s[1]
    with torch.no_grad():  # one channel's β near the reparametrisation's minimum (1e-6)
        beta = igdn.beta_reparam(igdn.beta).clone()
        beta[0] = 1e-5
        igdn.beta.copy_(igdn.beta_reparam.init(beta))
        model.g_s[0].weight[:, 0].mul_(10.0)  # and a wide channel 0 (ConvT: axis 1 is out)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)["x_hat"]
    report = equalize_(model, [x], 1.0)
    new_beta = igdn.beta_reparam(igdn.beta)
    assert (new_beta >= 4e-6).all()
    assert report.spread_after["g_s.2"] > 1.01  # the floor bound s: not fully equalized
    with torch.no_grad():
        scale = float(ref.abs().max())  # float32 rounding at that magnitude
        torch.testing.assert_close(model(x)["x_hat"], ref, rtol=1e-4, atol=1e-5 * scale)


def test_auto_keeps_the_lowest_heldout_rd_loss(crop_dir):
    model = tiny_model("bmshj2018-hyperprior")
    _random_gdn(model)
    _skewed(model)
    cfg = QuantConfig.uniform(8, 8)
    info = equalize_for_config(copy.deepcopy(model), cfg, "auto", crop_dir, lmbda=0.0067,
                               num_crops=4, patch_size=64, heldout_crops=4)
    tried = info["heldout_rd_loss"]
    assert set(tried) == {"none", "0.25", "0.5", "0.75", "1.0"}
    best = min(tried, key=tried.get)
    assert info["alpha"] == (None if best == "none" else float(best))
    # a fixed α records what it did
    fixed = equalize_for_config(copy.deepcopy(model), cfg, 0.5, crop_dir, lmbda=0.0067,
                                num_crops=4, patch_size=64)
    assert fixed["alpha"] == 0.5 and set(fixed["layers"]) >= {"g_s.2", "h_s.4"}


def test_ptq_with_equalization_records_it_and_codes(crop_dir):
    model = tiny_model("bmshj2018-hyperprior")
    r = post_training_quantize(model, QuantConfig.uniform(8, 8), crop_dir, num_crops=2,
                               batch_size=2, patch_size=64, progress=False, equalize=0.75)
    assert r.equalization["alpha"] == 0.75
    with torch.no_grad():
        enc = model.compress(torch.rand(1, 3, 64, 64))
        assert torch.isfinite(model.decompress(enc["strings"], enc["shape"])["x_hat"]).all()
    with pytest.raises(ValueError, match="lmbda"):
        post_training_quantize(tiny_model("bmshj2018-hyperprior"), QuantConfig.uniform(8, 8),
                               crop_dir, num_crops=2, patch_size=64, progress=False,
                               equalize="auto")


def test_equalize_argument():
    import argparse

    assert _equalize_arg("auto") == "auto" and _equalize_arg("0.75") == 0.75
    for bad in ("1.5", "-0.1", "half"):
        with pytest.raises(argparse.ArgumentTypeError):
            _equalize_arg(bad)
    with pytest.raises(ValueError, match="alpha"):
        equalize_(tiny_model("bmshj2018-hyperprior"), [torch.rand(1, 3, 64, 64)], 2.0)


def test_dead_channels_do_not_block_the_others():
    """Channels that a ReLU always zeroes have a_c = 0; they must not drag the normalisation so
    far that every live channel hits the same clamp (which would equalize nothing)."""
    model = tiny_model("bmshj2018-hyperprior")
    _skewed(model)
    with torch.no_grad():  # h_a.0's channels 0-2 always negative: dead after the ReLU
        model.h_a[0].weight[:3].zero_()
        model.h_a[0].bias[:3] = -1.0
    x = torch.rand(2, 3, 64, 64)
    report = equalize_(model, [x], 1.0)
    a = _input_ranges(model, x)["h_a.2"]
    live = a[3:]
    assert (a[:3] == 0).all()
    torch.testing.assert_close(live / live.max(), torch.ones_like(live), rtol=1e-3, atol=1e-3)
    assert report.spread_after["h_a.2"] == pytest.approx(1.0, abs=1e-3)
