import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from licq.api import QuantConfig
from licq.data import CropSampler
from licq.models import get_adapter
from licq.qat import RateDistortionLoss, TrainConfig, Trainer
from licq.qat.engine import PRESETS, QATSettings, load_qat_result, pin_8bit, qat_quantize
from licq.qat.quantizers import QATSpec
from licq.quant.fake_quant import FakeQuantize
from tests.conftest import tiny_model

ARCH = "bmshj2018-hyperprior"


def _train_cfg(steps, **kw):
    base = dict(steps=steps, batch_size=2, patch_size=64, lr=1e-3, log_every=1,
                checkpoint_every=100, seed=5)
    return TrainConfig(**(base | kw))


def _qat(crop_dir, out, steps, settings, config=None, resume=False, **kw):
    model = tiny_model(ARCH)
    settings = QATSettings(spec=settings.spec, pin_8bit_groups=settings.pin_8bit_groups,
                           pin_8bit_first_layers=settings.pin_8bit_first_layers,
                           calib_crops=4, calib_size=64)
    return qat_quantize(model, config or QuantConfig.uniform(4, 8), settings,
                        _train_cfg(steps, **kw), train_dir=crop_dir, out_dir=out,
                        adapter=get_adapter(ARCH), resume=resume, progress=False)


def test_resume_equals_uninterrupted(tmp_path, crop_dir):
    settings = PRESETS["dynaquant-q"].settings  # DPA + DGM: learnable scales and zero points
    full = _qat(crop_dir, tmp_path / "full", 6, settings)
    _qat(crop_dir, tmp_path / "split", 3, settings)
    (tmp_path / "split" / "model.pth.tar").unlink()
    second = _qat(crop_dir, tmp_path / "split", 6, settings, resume=True)
    assert second.steps == 6
    a, b = full.model.state_dict(), second.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the learned activation scales moved away from their calibration
    fresh = _qat(crop_dir, tmp_path / "zero", 0, settings).model.state_dict()
    assert not torch.equal(fresh["g_a.0.input_quant.scale"], a["g_a.0.input_quant.scale"])


def test_train_or_load_resumes_then_loads_and_logs(tmp_path, crop_dir):
    """The per-quality step of `licq qat`: an interrupted run continues from its checkpoint (as
    the uninterrupted run ends), a finished one is loaded, not trained again."""
    from licq.qat.engine import train_or_load

    settings = PRESETS["dynaquant-q"].settings
    full = _qat(crop_dir, tmp_path / "full", 4, settings)
    _qat(crop_dir, tmp_path / "split", 2, settings)
    (tmp_path / "split" / "model.pth.tar").unlink()
    qs = QATSettings(spec=settings.spec, pin_8bit_groups=settings.pin_8bit_groups,
                     pin_8bit_first_layers=settings.pin_8bit_first_layers, calib_crops=4,
                     calib_size=64)
    kw = dict(out_dir=tmp_path / "split", train_dir=crop_dir, adapter=get_adapter(ARCH),
              progress=False)
    resumed = train_or_load(tiny_model(ARCH), QuantConfig.uniform(4, 8), qs, _train_cfg(4), **kw)
    assert resumed.steps == 4
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert "step" in (tmp_path / "split" / "train.log").read_text()
    loaded = train_or_load(tiny_model(ARCH), QuantConfig.uniform(4, 8), qs, _train_cfg(8), **kw)
    assert loaded.steps == 4  # loaded as finished, not trained on to 8


@pytest.fixture(scope="module")
def trained_tiny(crop_dir, tmp_path_factory):
    """The tiny codec after 150 FP32 training steps (a random-init codec is too bad to show
    what quantization costs)."""
    model = tiny_model(ARCH)
    Trainer(model, CropSampler(crop_dir, patch_size=64, seed=1),
            TrainConfig(steps=150, batch_size=4, patch_size=64, lr=3e-3),
            tmp_path_factory.mktemp("fp")).fit(progress=False)
    model.eval().update(force=True)
    return model


def test_short_qat_lowers_the_rd_loss_of_a_badly_calibrated_model(tmp_path, crop_dir, trained_tiny):
    """Activations calibrated on crops darkened to a tenth: W4A8 is far off the float codec;
    60 QAT steps (LSQ scales, leaky clip) must recover a good part of the gap."""
    import copy

    from licq.data import read_image, save_image

    dark = tmp_path / "dark"
    dark.mkdir()
    for p in sorted(crop_dir.iterdir()):
        save_image(read_image(p) * 0.1, dark / p.name)
    x = CropSampler(crop_dir, patch_size=64, seed=77).batch(4)
    crit = RateDistortionLoss(0.0067)
    settings = QATSettings(spec=QATSpec(params="lsq", clip="leaky"), calib_crops=4, calib_size=64)

    def loss(model):
        with torch.no_grad():
            return crit(model.eval()(x), x)["loss"].item()

    def run(steps, out):
        r = qat_quantize(copy.deepcopy(trained_tiny), QuantConfig.uniform(4, 8), settings,
                         _train_cfg(steps, lr=1e-4), train_dir=crop_dir, calib_dir=dark,
                         out_dir=out, progress=False)
        return loss(r.model)

    fp, before, after = loss(trained_tiny), run(0, tmp_path / "a"), run(60, tmp_path / "b")
    assert before > 1.5 * fp  # the bad calibration really hurts
    assert after < before - 0.4 * (before - fp), (fp, before, after)


def test_finished_run_reloads_identically(tmp_path, crop_dir):
    run = _qat(crop_dir, tmp_path, 3, PRESETS["dynaquant-q"].settings)
    again = load_qat_result(tiny_model(ARCH), tmp_path)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(run.model(x)["x_hat"], again.model(x)["x_hat"])
    s1, s2 = run.model.compress(x), again.model.compress(x)
    assert s1["strings"] == s2["strings"]
    out = again.model.decompress(s2["strings"], s2["shape"])
    assert out["x_hat"].shape == x.shape and torch.isfinite(out["x_hat"]).all()


def test_dynaquant_preset_pins_hyper_and_first_layers_to_8_bit():
    model = tiny_model(ARCH)
    adapter = get_adapter(ARCH)
    cfg = pin_8bit(model, adapter, QuantConfig.uniform(4, 6), PRESETS["dynaquant-q"].settings)
    resolved = cfg.resolve(list(adapter.quantizable_layers(model)))
    groups = adapter.quantizable_layers(model)
    first = {next(n for n, g in groups.items() if g == side) for side in ("g_a", "g_s")}
    for name, c in resolved.items():
        if groups[name] in ("h_a", "h_s") or name in first:
            assert (c.w_bits, c.a_bits) == (8, 8), name
        else:
            assert (c.w_bits, c.a_bits) == (4, 6), name
    # the fmpq preset leaves the allocation alone
    same = pin_8bit(model, adapter, QuantConfig.uniform(4, 6), PRESETS["fmpq"].settings)
    assert same == QuantConfig.uniform(4, 6)


def test_distortion_only_loss_ignores_rate():
    x = torch.rand(1, 3, 16, 16)
    out = {"x_hat": x * 0.5, "likelihoods": {"y": torch.full((1, 2, 4, 4), 0.25)}}
    rd = RateDistortionLoss(0.01)(out, x)
    d = RateDistortionLoss(0.01, rate_weight=0.0)(out, x)
    assert d["loss"].item() == pytest.approx(rd["loss"].item() - rd["bpp_loss"].item(), rel=1e-6)
    assert d["bpp_loss"].item() == pytest.approx(rd["bpp_loss"].item())


# -- data-parallel equivalence --------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, crop_dir, out, result_file):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        trainer = _ddp_trainer(crop_dir, out)
        trainer.fit(progress=False)
        if rank == 0:
            torch.save(trainer.model.state_dict(), result_file)
    finally:
        dist.destroy_process_group()


def _ddp_trainer(crop_dir, out):
    from licq.api import quantize_
    from licq.qat.quantizers import prepare_qat

    model = tiny_model(ARCH)
    quantize_(model, QuantConfig.uniform(6, 8))
    for m in model.modules():
        if isinstance(m, FakeQuantize) and not bool(m.calibrated):
            m.scale.fill_(0.02)
            m.zero_point.fill_(100.0)
            m.calibrated.fill_(True)
    q = prepare_qat(model, QATSpec(params="dpa", rounding="dgm", clip="leaky"))
    cfg = _train_cfg(4, batch_size=4, latent_rounding="ste")
    return Trainer(model, CropSampler(crop_dir, patch_size=64, seed=5), cfg, out,
                   extra_param_groups=[{"params": q["scale"], "lr": 1e-3},
                                       {"params": q["zero_point"], "lr": 1e-2}])


@pytest.mark.slow
def test_two_process_ddp_equals_one_process_with_the_global_batch(tmp_path, crop_dir):
    single = _ddp_trainer(crop_dir, tmp_path / "single")
    single.fit(progress=False)
    result = tmp_path / "ddp.pt"
    mp.spawn(_ddp_worker, args=(2, _free_port(), crop_dir, tmp_path / "ddp", result), nprocs=2)
    a = single.model.state_dict()
    b = torch.load(result, weights_only=True)
    assert a.keys() == b.keys()
    moved = 0
    start = _ddp_trainer(crop_dir, tmp_path / "x").model.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6, msg=k)
        moved += int(not torch.equal(a[k], start[k]))
    assert moved > 10  # training changed weights and quantizer parameters


def test_qat_with_equalization_records_it_and_reloads(tmp_path, crop_dir):
    settings = QATSettings(spec=PRESETS["fmpq"].settings.spec, calib_crops=4, calib_size=64,
                           equalize=0.5)
    model = tiny_model(ARCH)
    run = qat_quantize(model, QuantConfig.uniform(8, 8), settings, _train_cfg(2),
                       train_dir=crop_dir, out_dir=tmp_path, progress=False)
    assert run.equalization["alpha"] == 0.5 and "g_s.2" in run.equalization["layers"]
    again = load_qat_result(tiny_model(ARCH), tmp_path)
    assert again.equalization == run.equalization
    a, b = run.model.state_dict(), again.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the equalized weights are what was trained: g_s.2's input channels were rescaled
    assert not torch.equal(a["g_s.2.weight"], tiny_model(ARCH).state_dict()["g_s.2.weight"])


def test_qat_from_the_reconstructed_model(tmp_path, crop_dir, monkeypatch):
    """--init rdo-ptq: training starts from the reconstructed model (on-grid weights, held-out
    RD losses recorded), with the rounding it learned, not the round-to-nearest one."""
    import licq.qat.engine as engine
    from licq.ptq import ReconstructionConfig
    from licq.ptq.reconstruct import weights_on_grid

    started = []
    real_prepare = engine.prepare_qat
    monkeypatch.setattr(engine, "prepare_qat",
                        lambda m, spec: started.append(weights_on_grid(m)) or real_prepare(m, spec))
    settings = QATSettings(spec=PRESETS["fmpq"].settings.spec, calib_crops=4, calib_size=64,
                           init="rdo-ptq",
                           reconstruction=ReconstructionConfig(iters=5, e2e_iters=0,
                                                               fallback=False))
    qat_quantize(tiny_model(ARCH), QuantConfig.uniform(4, 8), settings, _train_cfg(2),
                 train_dir=crop_dir, out_dir=tmp_path, progress=False)
    assert started == [True]
    summary = json.loads((tmp_path / "qat.json").read_text())
    assert summary["qat"]["init"] == "rdo-ptq"
    assert "calibrated" in summary["reconstruction"]["heldout_rd_loss"]


def test_rdo_init_is_refused_with_dynamic_bits():
    with pytest.raises(ValueError, match="rdo-ptq"):
        QATSettings(init="rdo-ptq", dynamic_candidates=(4, 6, 8))
    with pytest.raises(ValueError, match="init must be one of"):
        QATSettings(init="adaround")
