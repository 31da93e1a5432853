import pytest
import torch

import licq.search.sensitivity as S
from licq.search import SensitivityResult, SensitivitySettings, compute_sensitivity
from tests.conftest import tiny_model


@pytest.mark.parametrize("arch", ["bmshj2018-hyperprior", "mbt2018-mean", "mbt2018",
                                  "cheng2020-anchor"])
def test_staged_reuse_equals_full_forward(arch, crop_dir, monkeypatch):
    model = tiny_model(arch)  # with live latents (conftest._alive)
    settings = SensitivitySettings(bits=(2, 8), calib_dir=str(crop_dir), num_crops=2,
                                   patch_size=64, batch_size=2)
    staged = compute_sensitivity(model, settings, progress=False)
    moved = {n.split(".")[0] for n in staged.layers if abs(staged.zeta[n]["2"]) > 1e-4}
    assert moved >= {"g_a", "g_s"}, moved  # (the rate stages barely move a tiny model's RD
    # loss, which its distortion dominates: the next test compares their outputs directly)
    assert staged.path == "staged"
    monkeypatch.setattr(S, "_staged", lambda m: False)
    full = compute_sensitivity(model, settings, progress=False)
    assert full.path == "generic"
    assert staged.rd_fp == pytest.approx(full.rd_fp, rel=1e-6)
    for n in full.layers:
        for b in ("2", "8"):
            assert staged.zeta[n][b] == pytest.approx(full.zeta[n][b], rel=1e-4, abs=1e-7), (n, b)


@pytest.mark.parametrize("arch", ["bmshj2018-hyperprior", "mbt2018-mean", "mbt2018",
                                  "cheng2020-anchor"])
def test_staged_outputs_equal_full_forward_for_every_layer(arch):
    """Each layer swapped for a changed copy: the staged rerun gives the full forward's x̂ and
    likelihoods, and the change shows in them (so a stage that skipped work would be caught)."""
    import copy

    from licq.api import quantizable_layer_names

    torch.manual_seed(1)
    model = tiny_model(arch)
    x = torch.rand(2, 3, 64, 64)
    assert S._staged(model)

    def outputs(out):
        return [out["x_hat"], out["likelihoods"]["y"], out["likelihoods"]["z"]]

    with torch.no_grad():
        stages = S._stages_for(model, x)
        ref = outputs(model(x))
        for n in quantizable_layer_names(model):
            parent_name, _, child = n.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            original = getattr(parent, child)
            changed = copy.deepcopy(original)
            for prm in changed.parameters():  # noise, not a scale: a ReLU may zero a scale
                prm.add_(torch.randn_like(prm) * prm.abs().mean().clamp_min(0.05))
            setattr(parent, child, changed)
            try:
                got = outputs(stages.output_with(*S._stage_of(n)))
                full = outputs(model(x))
            finally:
                setattr(parent, child, original)
            for g, f in zip(got, full, strict=True):
                assert torch.allclose(g, f, rtol=1e-4, atol=1e-6), n
            assert any(not torch.allclose(f, r, rtol=1e-4, atol=1e-6)
                       for f, r in zip(full, ref, strict=True)), f"{n}: the change shows nowhere"


def test_sensitivity_on_real_codec_and_json_round_trip(tmp_path, crop_dir):
    from licq.defaults import default_checkpoints
    from licq.models import load_model

    model = load_model("bmshj2018-hyperprior", checkpoint=default_checkpoints()[1])
    settings = SensitivitySettings(bits=(2, 8), lmbda=0.0018, calib_dir=str(crop_dir),
                                   num_crops=2, patch_size=64, batch_size=2)
    r = compute_sensitivity(model, settings, layers=["g_a.0", "g_s.6", "h_s.4"], progress=False)
    for n in r.layers:  # a 2-bit layer hurts more than an 8-bit one
        assert r.zeta[n]["2"] > r.zeta[n]["8"]
        assert r.zeta[n]["2"] > 0.01
    r.to_json(tmp_path / "s.json")
    assert SensitivityResult.from_json(tmp_path / "s.json").zeta == r.zeta
    assert r.settings["calibration_revision"] == S.CALIBRATION_REVISION  # what run_fmpq.py checks
    with pytest.raises(ValueError, match="not a licq sensitivity file"):
        (tmp_path / "bad.json").write_text("{}")
        SensitivityResult.from_json(tmp_path / "bad.json")


def test_cache_key_depends_on_model_and_settings():
    a, b = SensitivitySettings(), SensitivitySettings(num_crops=32)
    assert S.cache_key("m1", a) != S.cache_key("m1", b) != S.cache_key("m2", b)
    assert S.cache_key("m1", a) == S.cache_key("m1", SensitivitySettings())


def test_cache_key_changes_with_the_calibration_revision(monkeypatch):
    before = S.cache_key("m1", SensitivitySettings())
    monkeypatch.setattr(S, "CALIBRATION_REVISION", S.CALIBRATION_REVISION + 1)
    assert S.cache_key("m1", SensitivitySettings()) != before


@pytest.mark.slow
def test_torchrun_data_parallel_equals_single_process(tmp_path, crop_dir):
    import json
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    torch_run = Path(sys.executable).with_name("torchrun")
    if not torch_run.exists():
        torch_run = shutil.which("torchrun")
    args = ["sensitivity", "-q", "2", "--bits", "3", "8", "--calib-dir", str(crop_dir),
            "--calib-size", "64", "--calib-crops", "4", "--batch-size", "2", "--no-cache",
            "--no-progress", "--threads", "1"]
    # the bundled default model, 4 crops in 2 batches of 2: one batch per rank
    single = subprocess.run([sys.executable, "-m", "licq.cli", *args, "-o", str(tmp_path / "1.json")],
                            capture_output=True, text=True)
    assert single.returncode == 0, single.stderr
    dp = subprocess.run([str(torch_run), "--standalone", "--nproc_per_node=2", "-m", "licq.cli",
                         *args, "-o", str(tmp_path / "2.json")],
                        capture_output=True, text=True, env={**__import__("os").environ,
                                                             "OMP_NUM_THREADS": "1"})
    assert dp.returncode == 0, dp.stderr[-2000:]
    s1 = json.loads((tmp_path / "1.json").read_text())
    s2 = json.loads((tmp_path / "2.json").read_text())
    assert s1["rd_fp"] == pytest.approx(s2["rd_fp"], rel=1e-9)
    for n in s1["layers"]:
        for b in ("3", "8"):
            assert s1["zeta"][n][b] == pytest.approx(s2["zeta"][n][b], rel=1e-6, abs=1e-9)


def test_rdo_sensitivity_measures_what_the_reconstructed_layer_loses():
    """ptq="rdo": each trial layer is reconstructed first, so at 2 bits (where rounding costs
    most) the RD loss it adds is lower than round to nearest's (a trained model: the embedded
    default; a random one's RD loss hardly depends on its layers)."""
    from licq.defaults import default_calibration_dir, default_checkpoints
    from licq.models import lambda_for, load_model

    model = load_model("bmshj2018-hyperprior", checkpoint=default_checkpoints()[2])
    base = dict(bits=(2,), calib_dir=str(default_calibration_dir()), num_crops=4, patch_size=64,
                batch_size=2, lmbda=lambda_for(2))
    layers = ["g_a.2", "g_s.4"]
    rtn = compute_sensitivity(model, SensitivitySettings(**base), layers=layers, progress=False)
    rdo = compute_sensitivity(model, SensitivitySettings(**base, ptq="rdo", rdo_iters=300),
                              layers=layers, progress=False)
    assert rdo.settings["ptq"] == "rdo" and rtn.settings["ptq"] == "range"
    assert rdo.rd_fp == rtn.rd_fp
    for n in layers:
        assert 0 < rdo.zeta[n]["2"] < 0.9 * rtn.zeta[n]["2"], (n, rdo.zeta[n], rtn.zeta[n])
    with pytest.raises(ValueError, match="ptq must be"):
        SensitivitySettings(ptq="adaround")
