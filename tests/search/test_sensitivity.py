import pytest

import licq.search.sensitivity as S
from licq.search import SensitivityResult, SensitivitySettings, compute_sensitivity
from tests.conftest import tiny_model


@pytest.mark.parametrize("arch", ["bmshj2018-hyperprior", "mbt2018-mean"])
def test_staged_reuse_equals_full_forward(arch, crop_dir, monkeypatch):
    model = tiny_model(arch)
    settings = SensitivitySettings(bits=(2, 8), calib_dir=str(crop_dir), num_crops=2,
                                   patch_size=64, batch_size=2)
    staged = compute_sensitivity(model, settings, progress=False)
    assert staged.path == "staged"
    monkeypatch.setattr(S, "_staged", lambda m: False)
    full = compute_sensitivity(model, settings, progress=False)
    assert full.path == "generic"
    assert staged.rd_fp == pytest.approx(full.rd_fp, rel=1e-6)
    for n in full.layers:
        for b in ("2", "8"):
            assert staged.zeta[n][b] == pytest.approx(full.zeta[n][b], rel=1e-4, abs=1e-7), (n, b)


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
    with pytest.raises(ValueError, match="not a licq sensitivity file"):
        (tmp_path / "bad.json").write_text("{}")
        SensitivityResult.from_json(tmp_path / "bad.json")


def test_cache_key_depends_on_model_and_settings():
    a, b = SensitivitySettings(), SensitivitySettings(num_crops=32)
    assert S.cache_key("m1", a) != S.cache_key("m1", b) != S.cache_key("m2", b)
    assert S.cache_key("m1", a) == S.cache_key("m1", SensitivitySettings())
