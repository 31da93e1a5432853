import pytest
import torch

from licq.api import QuantConfig, quantize_
from licq.dynamic import (
    BitSelector,
    DynamicLayer,
    bits_loss,
    dynamic_sides,
    make_dynamic,
    selections,
    set_temperature,
    temperature,
)
from licq.models import get_adapter
from licq.ptq import calibrate
from licq.qat import TrainConfig
from licq.qat.engine import PRESETS, QATSettings, load_qat_result, qat_quantize
from tests.conftest import tiny_model

ARCH = "bmshj2018-hyperprior"


def _dynamic(arch=ARCH, candidates=(4, 6, 8)):
    model = tiny_model(arch)
    quantize_(model, QuantConfig.uniform(8, 8))
    sides = make_dynamic(model, candidates, hidden=16)
    g = torch.Generator().manual_seed(3)
    with calibrate(model):  # eval mode: hard choices, yet every candidate must be calibrated
        for _ in range(2):
            model(torch.rand(2, 3, 64, 64, generator=g))
    return model.eval(), sides


def test_selector_shapes_and_deterministic_argmax():
    sel = BitSelector(channels=8, num_layers=5, num_candidates=3, hidden=16)
    with torch.no_grad():
        sel.mlp[-1].weight.normal_()
    feat = torch.rand(4, 8, 13, 17)
    assert sel(feat).shape == (4, 5, 3)
    model, sides = _dynamic()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        for s in sides.values():
            s.selector.mlp[-1].weight.normal_()
        model(x)
        first = selections(model)
        model(x)
        assert selections(model) == first
    assert set(first) == {"g_a", "g_s"}
    assert len(first["g_a"]) == 2 and len(first["g_a"][0]) == len(sides["g_a"].layer_names)
    # first module of each side stays static; GDN layers stay static
    assert not isinstance(model.g_a.seq[0], DynamicLayer)
    assert all(isinstance(model.g_a.seq.get_submodule(n), DynamicLayer)
               for n in sides["g_a"].layer_names)
    assert sides["g_a"].layer_names == ["2", "4", "6"]


def test_gumbel_soft_samples_are_distributions_and_l_bits_by_hand():
    model, sides = _dynamic()
    model.train()
    set_temperature(model, 2.0)
    model(torch.rand(3, 3, 64, 64))
    for s in sides.values():
        p = s.last_probs
        assert p.shape[0] == 3 and (p >= 0).all()
        torch.testing.assert_close(p.sum(-1), torch.ones(p.shape[:-1]))
        assert not ((p == 0) | (p == 1)).all()  # soft, not one-hot
    b = torch.tensor([4.0, 6.0, 8.0])
    per_layer = [(s.last_probs * b).sum(-1) for s in sides.values()]  # (N, L) each
    hand = sum(t.sum() for t in per_layer) / sum(t.numel() for t in per_layer)
    torch.testing.assert_close(bits_loss(model), hand)


def test_temperature_schedule():
    assert temperature(0, 100) == pytest.approx(5.0)
    assert temperature(100, 100) == pytest.approx(0.5)
    assert temperature(50, 100) == pytest.approx((5.0 * 0.5) ** 0.5)


def test_different_images_can_get_different_bits():
    model, sides = _dynamic()
    side = sides["g_a"]
    sel = side.selector
    bright, dark = torch.ones(1, 3, 64, 64), torch.zeros(1, 3, 64, 64)
    with torch.no_grad():
        means = [sel.pool(side.seq[0](x)).mean().item() for x in (dark, bright)]
        assert means[0] != means[1]
        mid = sum(means) / 2
        n = sel.mlp[1].in_features
        # hidden unit 0 = mean feature − mid + 100 (> 0); the 8-bit logit = 10·(mean − mid)
        sel.mlp[1].weight.zero_()
        sel.mlp[1].bias.zero_()
        sel.mlp[1].weight[0].fill_(1.0 / n)
        sel.mlp[1].bias[0] = 100.0 - mid
        w, b = sel.mlp[-1].weight, sel.mlp[-1].bias
        w.zero_()
        b.zero_()
        w[2::3, 0] = 10.0
        b[2::3] = -1000.0
        model(torch.cat([dark, bright]))
    chosen = selections(model)["g_a"]
    assert chosen[0] != chosen[1]
    assert {chosen[0][0], chosen[1][0]} == {4, 8}


def test_hard_selection_runs_only_the_chosen_candidate():
    model, sides = _dynamic()
    layer = sides["g_s"].dynamic_layers()[0]
    calls = []
    for k, fq in enumerate(layer.cand_w):
        fq.register_forward_hook(lambda *a, k=k: calls.append(k))
    with torch.no_grad():
        model(torch.rand(1, 3, 64, 64))
    assert len(calls) == 1
    chosen = selections(model)["g_s"][0][0]
    assert layer.candidates[calls[0]] == chosen


def test_encoder_and_decoder_selections_agree_through_bitstreams():
    model, sides = _dynamic()
    with torch.no_grad():
        for s in sides.values():
            s.selector.mlp[-1].weight.normal_(std=3.0)
        model.update(force=True)
        x = torch.rand(1, 3, 64, 64)
        out = model(x)  # the encoder side's own view of g_s (from the rounded latent)
        enc_view = selections(model)["g_s"]
        enc = model.compress(x)
        dec = model.decompress(enc["strings"], enc["shape"])
        assert selections(model)["g_s"] == enc_view
    # same decoded latent, same choices, same reconstruction
    torch.testing.assert_close(dec["x_hat"].clamp(0, 1), out["x_hat"].clamp(0, 1))


def test_dynaquant_training_runs_and_reloads(tmp_path, crop_dir):
    p = PRESETS["dynaquant"].settings
    settings = QATSettings(spec=p.spec, pin_8bit_groups=p.pin_8bit_groups,
                           pin_8bit_first_layers=True, dynamic_candidates=(4, 6, 8),
                           bits_weight=0.05, selector_hidden=16, calib_crops=2, calib_size=64)
    run = qat_quantize(tiny_model(ARCH), QuantConfig.uniform(8, 8), settings,
                       TrainConfig(steps=3, batch_size=2, patch_size=64, lr=1e-4),
                       train_dir=crop_dir, out_dir=tmp_path, adapter=get_adapter(ARCH),
                       progress=False)
    assert "extra_loss" in run.last and run.last["extra_loss"] > 0
    assert dynamic_sides(run.model)["g_a"].tau == pytest.approx(temperature(2, 3))
    again = load_qat_result(tiny_model(ARCH), tmp_path)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(run.model(x)["x_hat"], again.model(x)["x_hat"])
        assert selections(run.model) == selections(again.model)
    # the selectors' weights are stored at 8 bit and counted so in the bits read
    from licq.eval.cost import CostMeter
    from licq.quant.modules import QLinear

    for side in dynamic_sides(again.model).values():
        linears = [m for m in side.selector.mlp if isinstance(m, torch.nn.Linear)]
        assert len(linears) == 2 and all(isinstance(m, QLinear) for m in linears)
        for m in linears:
            codes = m.quantized_weight() / m.weight_quant.scale.view(-1, 1)
            assert torch.allclose(codes, codes.round(), atol=1e-4)
            assert codes.abs().max() <= 127 + 1e-4
    with CostMeter(again.model) as meter, torch.no_grad():
        again.model(x)
    sel = {k: v for k, v in meter.per_layer.items() if ".selector." in k}
    assert len(sel) == 4 and all(v["w_bits"] == 8 for v in sel.values())


@pytest.mark.parametrize("shape", [(1, 8, 64, 96), (2, 5, 33, 47), (1, 3, 7, 5), (1, 2, 3, 4)])
def test_matrix_pooling_equals_adaptive_avg_pool(shape):
    import torch.nn.functional as F

    from licq.dynamic.selector import adaptive_avg_pool_mm

    x = torch.randn(*shape, requires_grad=True)
    out = adaptive_avg_pool_mm(x, 5)
    torch.testing.assert_close(out, F.adaptive_avg_pool2d(x, 5), rtol=1e-5, atol=1e-6)
    out.sum().backward()  # differentiable (the selector trains through it)
    assert torch.isfinite(x.grad).all()
