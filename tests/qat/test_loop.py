from fractions import Fraction

import pytest
import torch

from licq._provenance import provenance
from licq.data import CropSampler
from licq.errors import CheckpointError
from licq.qat import RateDistortionLoss, TrainConfig, Trainer
from tests.conftest import tiny_model


def _trainer(crop_dir, out, steps, meta=None, **kw):
    model = tiny_model("bmshj2018-hyperprior").train()
    cfg = TrainConfig(**dict(steps=steps, batch_size=2, patch_size=64, lr=1e-3, log_every=1,
                             checkpoint_every=100, seed=3) | kw)
    return Trainer(model, CropSampler(crop_dir, patch_size=64, seed=3), cfg, out, meta=meta)


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_resume_equals_uninterrupted(tmp_path, crop_dir, schedule):
    full = _trainer(crop_dir, tmp_path / "full", steps=6, lr_schedule=schedule)
    full.fit(progress=False)

    # the first half is trained as part of a 6-step run (a cosine decays over the whole run)
    first = _trainer(crop_dir, tmp_path / "split", steps=6, lr_schedule=schedule,
                     max_seconds=1e-9)
    first.fit(progress=False)
    assert first.state.step == 1
    second = _trainer(crop_dir, tmp_path / "split", steps=6, lr_schedule=schedule)
    second.load_checkpoint(tmp_path / "split" / Trainer.CHECKPOINT)
    assert second.state.step == 1
    second.fit(progress=False)

    a, b = full.model.state_dict(), second.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert full.optimizer.state_dict()["state"][0]["exp_avg"].equal(
        second.optimizer.state_dict()["state"][0]["exp_avg"])
    # and training moved the weights at all
    assert not torch.equal(a["g_a.0.weight"], tiny_model("bmshj2018-hyperprior").g_a[0].weight)


@pytest.mark.parametrize("meta", ["provenance", "torch-version-object"])
def test_checkpoint_with_provenance_meta_resumes(tmp_path, crop_dir, meta):
    # the CLI puts provenance() into the meta; it once held torch.__version__ (a TorchVersion),
    # which torch.load(weights_only=True) refused, so no `licq qat` run could be resumed
    extra = provenance() if meta == "provenance" else {"torch": torch.__version__}
    if meta == "provenance":
        assert type(extra["machine"]["torch"]) is str
    first = _trainer(crop_dir, tmp_path, steps=2, meta={"provenance": extra})
    first.fit(progress=False)
    second = _trainer(crop_dir, tmp_path, steps=3)
    second.load_checkpoint(tmp_path / Trainer.CHECKPOINT)
    assert second.state.step == 2


def test_checkpoint_with_foreign_object_is_refused(tmp_path, crop_dir):
    t = _trainer(crop_dir, tmp_path, steps=1, meta={"what": Fraction(1, 3)})
    t.fit(progress=False)
    with pytest.raises(CheckpointError, match="cannot read training checkpoint"):
        _trainer(crop_dir, tmp_path, steps=2).load_checkpoint(tmp_path / Trainer.CHECKPOINT)


def test_training_lowers_the_rd_loss(tmp_path, crop_dir):
    t = _trainer(crop_dir, tmp_path, steps=40)
    sampler = CropSampler(crop_dir, patch_size=64, seed=99)
    x = sampler.batch(4)
    crit = RateDistortionLoss(0.0067)
    with torch.no_grad():
        before = crit(t.model.eval()(x), x)["loss"].item()
    t.fit(progress=False)
    with torch.no_grad():
        after = crit(t.model.eval()(x), x)["loss"].item()
    assert after < 0.8 * before


def test_cosine_schedule_factors():
    cfg = TrainConfig(steps=100, lr_schedule="cosine", lr_final=0.1)
    assert cfg.lr_factor(0) == 1.0
    assert cfg.lr_factor(50) == pytest.approx(0.55)
    assert cfg.lr_factor(100) == pytest.approx(0.1)
    assert cfg.lr_factor(250) == pytest.approx(0.1)
    f = [cfg.lr_factor(i) for i in range(101)]
    assert all(a > b for a, b in zip(f, f[1:], strict=False))
    assert TrainConfig(steps=100).lr_factor(70) == 1.0
    late = TrainConfig(steps=100, lr_schedule="cosine", lr_final=0.1, lr_decay_start=60)
    assert [late.lr_factor(i) for i in (0, 59, 60)] == [1.0, 1.0, 1.0]
    assert late.lr_factor(80) == pytest.approx(0.55) and late.lr_factor(100) == pytest.approx(0.1)


def test_cosine_schedule_sets_every_group(tmp_path, crop_dir):
    model = tiny_model("bmshj2018-hyperprior").train()
    extra = [{"params": [torch.nn.Parameter(torch.zeros(3))], "lr": 0.5}]
    cfg = TrainConfig(steps=4, batch_size=2, patch_size=64, lr=1e-3, lr_schedule="cosine",
                      lr_final=0.2)
    t = Trainer(model, CropSampler(crop_dir, patch_size=64, seed=3), cfg, tmp_path,
                extra_param_groups=extra)
    t.fit(progress=False)
    lrs = [g["lr"] for g in t.optimizer.param_groups]
    assert lrs == pytest.approx([1e-3 * cfg.lr_factor(3), 0.5 * cfg.lr_factor(3)])
    assert lrs[0] < 1e-3 and t.aux_optimizer.param_groups[0]["lr"] == cfg.aux_lr


def test_config_validation():
    with pytest.raises(ValueError, match="needs steps"):
        TrainConfig(max_seconds=10, lr_schedule="cosine")
    with pytest.raises(ValueError, match="lr_decay_start"):
        TrainConfig(steps=10, lr_schedule="cosine", lr_decay_start=10)
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(steps=1, lr_schedule="step")
    with pytest.raises(ValueError, match="steps or max_seconds"):
        TrainConfig()
    with pytest.raises(ValueError, match="learning rates"):
        TrainConfig(steps=1, lr=0)
    with pytest.raises(ValueError, match="metric"):
        RateDistortionLoss(0.01, "psnr")


def test_rd_loss_hand_computed():
    x = torch.zeros(1, 3, 4, 4)
    out = {"x_hat": torch.full_like(x, 0.1),
           "likelihoods": {"y": torch.full((1, 2, 2, 2), 0.5)}}  # 8 symbols × 1 bit
    r = RateDistortionLoss(0.01)(out, x)
    assert r["bpp_loss"].item() == pytest.approx(8 / 16)
    assert r["loss"].item() == pytest.approx(0.5 + 0.01 * 255**2 * 0.01)


def test_non_finite_loss_stops_training_with_a_clear_error(tmp_path, crop_dir):
    from licq.qat.loop import TrainingDiverged

    t = _trainer(crop_dir, tmp_path, steps=3)
    t.sampler.batch = lambda n: torch.full((n, 3, 64, 64), float("nan"))
    with pytest.raises(TrainingDiverged, match="non-finite"):
        t.fit(progress=False)


def test_settle_quantiles_lowers_aux_loss_and_touches_only_quantiles():
    from licq.qat import settle_quantiles

    torch.manual_seed(0)
    model = tiny_model("bmshj2018-hyperprior")
    with torch.no_grad():  # push the quantiles off their fitted values
        model.entropy_bottleneck.quantiles.add_(torch.randn_like(model.entropy_bottleneck.quantiles))
    others = {k: v.clone() for k, v in model.state_dict().items() if not k.endswith("quantiles")}
    before, after = settle_quantiles(model, steps=3000, lr=0.1)
    assert after < 0.5 * before
    for k, v in model.state_dict().items():
        if not k.endswith("quantiles"):
            assert torch.equal(v, others[k]), k


def _entropy_outputs(model, x, mode, seed=0):
    """(ŷ fed to g_s, its likelihoods, ẑ's likelihoods, the (scales, means) the Gaussian
    conditional got) of a training forward under ``mode``."""
    from licq.qat.loop import latent_rounding

    seen = {}

    def keep(key, value):  # a pre-hook that returns None leaves the call's arguments alone
        seen.setdefault(key, value)

    hooks = [
        model.g_s.register_forward_pre_hook(lambda m, a: keep("y_hat", a[0])),
        model.gaussian_conditional.register_forward_pre_hook(
            lambda m, a, kw: keep("params", (a[1], kw.get("means"))), with_kwargs=True),
    ]
    torch.manual_seed(seed)
    with latent_rounding(model, mode):
        out = model(x)
    for h in hooks:
        h.remove()
    return seen["y_hat"], out["likelihoods"]["y"], out["likelihoods"]["z"], seen["params"]


@pytest.mark.parametrize("arch", ["bmshj2018-hyperprior", "mbt2018-mean", "mbt2018"])
def test_mixed_latents_feed_the_synthesis_rounded_and_rate_the_noisy_ones(arch):
    from licq.qat.loop import latent_rounding

    model = tiny_model(arch).train()
    x = torch.rand(1, 3, 64, 64)
    y_noise, _, zlik_noise, _ = _entropy_outputs(model, x, "noise")
    y_mixed, lik_mixed, zlik_mixed, (scales, means) = _entropy_outputs(model, x, "mixed")
    y_ste, lik_ste, _, _ = _entropy_outputs(model, x, "ste")
    # the synthesis gets the latent as at inference (mbt2018-mean: round(y − μ) + μ, not an
    # integer), the same as "ste" gives it ...
    torch.testing.assert_close(y_mixed, y_ste)
    assert not torch.equal(y_mixed, y_noise)
    if arch == "bmshj2018-hyperprior":
        assert torch.equal(y_mixed, torch.round(y_mixed))
    # ... while the rate is the noisy latent's: ẑ's likelihoods are those "noise" gives (same
    # draws), ŷ's are the noisy y's (the same draw "noise" fed g_s) under the entropy parameters
    # that the rounded ẑ (and, for mbt2018, the rounded context) gave
    torch.testing.assert_close(zlik_mixed, zlik_noise)
    gc = model.gaussian_conditional
    expected = gc.likelihood_lower_bound(gc._likelihood(y_noise, scales, means))
    torch.testing.assert_close(lik_mixed, expected)
    assert not torch.allclose(lik_mixed, lik_ste)
    # straight-through: the synthesis' gradient reaches the analysis
    model.zero_grad()
    with latent_rounding(model, "mixed"):
        model(x)["x_hat"].sum().backward()
    assert model.g_a[0].weight.grad is not None and model.g_a[0].weight.grad.abs().sum() > 0
    # outside the block the entropy models are CompressAI's again
    for m in (model.entropy_bottleneck, model.gaussian_conditional):
        assert not {"forward", "quantize", "_licq_noisy"} & set(vars(m))
    # and in eval mode "mixed" changes nothing
    model.eval()
    with torch.no_grad():
        ref = model(x)
        with latent_rounding(model, "mixed"):
            got = model(x)
    torch.testing.assert_close(got["x_hat"], ref["x_hat"])


def test_latent_rounding_rejects_unknown_modes():
    from licq.qat.loop import latent_rounding

    with pytest.raises(ValueError, match="latent_rounding"):
        TrainConfig(steps=1, latent_rounding="round")
    with pytest.raises(ValueError, match="latent_rounding"), latent_rounding(torch.nn.Linear(1, 1), "x"):
        pass
