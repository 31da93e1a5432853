import json
import subprocess
import sys

import pytest
import torch

from licq.cli import main
from licq.eval import read_results
from licq.models import load_model


@pytest.mark.slow
def test_demo_runs_on_embedded_assets(tmp_path):
    r = subprocess.run([sys.executable, "-m", "licq.cli", "demo", "-o", str(tmp_path),
                        "--no-progress"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "PSNR-RGB" in r.stdout and r.stdout.count("\n    q") == 8
    res = read_results(tmp_path / "default-fp32.json")
    assert len(res["results"]["bpp"]) == 4
    # a real codec: more bits buy more quality
    assert res["results"]["bpp"] == sorted(res["results"]["bpp"])
    assert res["results"]["psnr-rgb"] == sorted(res["results"]["psnr-rgb"])
    ptq = read_results(tmp_path / "default-ptq-w8a8.json")
    assert 2.5 < ptq["licq"]["ratio"] < 3.0  # whole model; CDF tables stay 32-bit
    assert 3.9 < ptq["licq"]["quantized_layers_ratio"] < 4.0
    assert "W8A8 PTQ vs FP32" in r.stdout and "BD-rate" in r.stdout
    assert (tmp_path / "rd-default.png").stat().st_size > 1000
    assert "Traceback" not in r.stderr


def test_train_then_resume_then_eval(tmp_path, crop_dir, capsys):
    out = tmp_path / "run"
    base = ["train", "-a", "bmshj2018-hyperprior", "-N", "8", "-M", "12", "-q", "2",
            "-d", str(crop_dir), "-o", str(out), "--batch-size", "2", "--patch-size", "64",
            "--no-progress", "--log-every", "1", "--threads", "1", "--lr-schedule", "cosine",
            "--latent-rounding", "mixed"]
    assert main(base + ["--steps", "2"]) == 0
    assert main(base + ["--steps", "4", "--resume"]) == 0
    summary = json.loads((out / "train.json").read_text())
    assert summary["steps"] == 4 and summary["lambda"] == 0.0035
    ckpt = torch.load(out / "checkpoint.pth.tar", map_location="cpu", weights_only=True)
    assert ckpt["config"]["latent_rounding"] == "mixed"  # what the loop trained with
    log = (out / "train.log").read_text().splitlines()
    assert [ln.split()[1] for ln in log] == ["step=1", "step=2", "step=3", "step=4"]
    # the lr the step used: 1e-4 at step 1; step 4 runs at 1e-4·(0.01 + 0.99·(1 + cos(3π/4))/2)
    assert log[0].split()[-1] == "lr=0.0001" and log[-1].split()[-1] == "lr=1.55e-05"
    model = load_model("bmshj2018-hyperprior", checkpoint=out / "model.pth.tar")
    with torch.no_grad():
        assert model.compress(torch.rand(1, 3, 64, 64))["strings"]
    res_path = tmp_path / "r.json"
    assert main(["eval", "-m", str(out / "model.pth.tar"), "-d", str(crop_dir),
                 "-o", str(res_path), "--no-progress"]) == 0
    assert read_results(res_path)["licq"]["points"][0]["checkpoint_sha256"]


@pytest.mark.parametrize("args, message", [
    (["train", "-a", "bmshj2018-hyperprior", "-N", "8", "-d", ".", "-o", "x", "--steps", "1",
      "-q", "1"], "needs --N and --M"),
    (["train", "-a", "bmshj2018-hyperprior", "-N", "8", "-M", "8", "-d", ".", "-o", "x",
      "--steps", "1", "-q", "1", "--patch-size", "100"], "multiple of 64"),
    (["train", "-a", "bmshj2018-hyperprior", "-N", "8", "-M", "8", "-d", ".", "-o", "x",
      "--steps", "1", "-q", "1", "--resume"], "nothing to resume"),
    (["eval", "-q", "7"], "qualities [1, 2, 3, 4]"),
    (["bd-rate", "nothere.json", "x.json"], "not found"),
])
def test_user_errors(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_bd_rate_command(tmp_path, capsys):
    def res(scale):
        return {"name": f"s{scale}", "results": {
            "bpp": [0.1 * scale, 0.2 * scale, 0.4 * scale, 0.8 * scale],
            "psnr-rgb": [26.0, 28.0, 30.0, 31.5]}}
    (tmp_path / "a.json").write_text(json.dumps(res(1)))
    (tmp_path / "b.json").write_text(json.dumps(res(1.1)))
    assert main(["bd-rate", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--json",
                 "--plot", str(tmp_path / "p.png")]) == 0
    out = capsys.readouterr().out
    assert "BD-rate +10.00%" in out
    assert (tmp_path / "p.png").exists()


def test_ptq_sensitivity_search_pipeline(tmp_path, crop_dir, image_dir, capsys):
    """train a tiny codec, then sensitivity → search (4 methods) → ptq --bit-config → bd-rate."""
    out = tmp_path / "run"
    assert main(["train", "-a", "bmshj2018-hyperprior", "-N", "8", "-M", "12", "-q", "3",
                 "-d", str(crop_dir), "-o", str(out), "--batch-size", "2", "--patch-size", "64",
                 "--steps", "2", "--no-progress"]) == 0
    ckpt = str(out / "model.pth.tar")
    sens = tmp_path / "sens.json"
    common = ["-m", ckpt, "-q", "3", "--calib-dir", str(crop_dir), "--calib-size", "64"]
    assert main(["sensitivity", *common, "--bits", "2", "4", "8", "--calib-crops", "2",
                 "--cache-dir", str(tmp_path / "cache"), "-o", str(sens), "--no-progress"]) == 0
    assert "g_s.6" in capsys.readouterr().out
    # second call is served from the cache
    assert main(["sensitivity", *common, "--bits", "2", "4", "8", "--calib-crops", "2",
                 "--cache-dir", str(tmp_path / "cache"), "--no-progress"]) == 0
    assert "cached" in capsys.readouterr().err
    for method in ("adaptive", "exhaustive", "dp", "dp-monotone"):
        rc = main(["search", "-m", ckpt, "-q", "3", "--sensitivity", str(sens), "--target-ratio", "5",
                   "--method", method, "--fix", "re:^h_=8", "--accept-best", "--tol", "0.5",
                   "--layer-a-bits", "g_a.0=10",
                   "-o", str(tmp_path / f"{method}.json")])
        assert rc == 0
        cfg = json.loads((tmp_path / f"{method}.json").read_text())
        assert all(v["w_bits"] == 8 for k, v in cfg["layers"].items() if k.startswith("h_"))
        assert cfg["layers"]["g_a.0"]["a_bits"] == 10 and cfg["layers"]["g_s.0"]["a_bits"] == 8
    res = tmp_path / "ptq.json"
    assert main(["ptq", "-m", ckpt, "-q", "3", "--bit-config", str(tmp_path / "dp.json"),
                 "--calib-dir", str(crop_dir), "--calib-size", "64", "--calib-crops", "2",
                 "-d", str(image_dir), "-o", str(res), "--no-progress"]) == 0
    r = read_results(res)
    assert r["licq"]["bit_config"]["layers"]["h_a.0"]["w_bits"] == 8
    assert r["licq"]["calibration_seconds"][0] > 0
    assert {"model_bytes", "fp32_bytes", "ratio", "quantized_layers_ratio", "command",
            "commit"} <= set(r["licq"])
    # --layer-a-bits on top of the allocation (read back from the results file, as FMPQ results
    # are): g_s's inputs at 10 bit, weights unchanged
    assert main(["ptq", "-m", ckpt, "-q", "3", "--bit-config", str(res),
                 "--layer-a-bits", "re:^g_s=10", "--calib-dir", str(crop_dir), "--calib-size",
                 "64", "--calib-crops", "2", "-d", str(image_dir), "--limit", "1", "-o",
                 str(tmp_path / "ptq-a10.json"), "--no-progress"]) == 0
    layers = read_results(tmp_path / "ptq-a10.json")["licq"]["bit_config"]["layers"]
    before = r["licq"]["bit_config"]["layers"]  # g_a.0 at 10 from the search's --layer-a-bits
    assert {k: v["a_bits"] for k, v in layers.items() if v} == {
        k: 10 if k.startswith("g_s") else v["a_bits"] for k, v in before.items() if v}
    assert any(v["a_bits"] == 8 for v in layers.values() if v)
    assert {k: v["w_bits"] for k, v in layers.items() if v} == {
        k: v["w_bits"] for k, v in before.items() if v}


def test_search_failure_is_one_line(tmp_path, crop_dir, capsys):
    from licq.search import SensitivityResult

    layers = ["g_a.0"]
    SensitivityResult(layers=layers, bits=[8], zeta={"g_a.0": {"8": 0.0}}, rd_fp=1.0,
                      settings={"a_bits": 8, "observer": "minmax", "a_observer": "mse"},
                      model_hash="x", seconds=0, evaluations=0).to_json(tmp_path / "s.json")
    rc = main(["search", "-q", "1", "--sensitivity", str(tmp_path / "s.json"),
               "--target-ratio", "4", "-o", str(tmp_path / "b.json")])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no sensitivity" in err[0]


@pytest.mark.parametrize("equalize", [[], ["--equalize", "0.5"],
                                      ["--method", "rdo", "--rdo-iters", "3", "--rdo-e2e-iters", "2"]])
def test_export_then_eval_packed_equals_ptq(tmp_path, crop_dir, image_dir, capsys, equalize):
    common = ["--calib-dir", str(crop_dir), "--calib-crops", "4", "--calib-size", "64",
              "--no-progress", *equalize]
    packed = tmp_path / "q2-w4a8.safetensors"
    assert main(["export", "-q", "2", "--w-bits", "4", "-o", str(packed), *common]) == 0
    assert "size accounting" in capsys.readouterr().out
    assert main(["eval", "-m", str(packed), "-d", str(image_dir), "-o",
                 str(tmp_path / "packed.json"), "--no-progress"]) == 0
    assert main(["ptq", "-q", "2", "--w-bits", "4", "-d", str(image_dir), "-o",
                 str(tmp_path / "ptq.json"), *common]) == 0
    a, b = read_results(tmp_path / "packed.json"), read_results(tmp_path / "ptq.json")
    assert a["results"]["bpp"] == b["results"]["bpp"]  # same bitstreams
    assert a["results"]["psnr-rgb"] == b["results"]["psnr-rgb"]
    if "--equalize" in equalize:  # the packed file is just other float weights: nothing new
        assert b["licq"]["setting"].endswith("-eq0.5")
        assert b["licq"]["points"][0]["equalization"]["alpha"] == 0.5
    if "rdo" in equalize:  # a seeded reconstruction: the same model in export and in ptq
        assert b["licq"]["setting"].endswith("-rdo") and b["licq"]["method"] == "rdo"
        assert b["licq"]["points"][0]["reconstruction"]["blocks"]
        assert b["licq"]["reconstruction_config"]["iters"] == 3


def test_qat_command_smoke(tmp_path, crop_dir, image_dir, capsys, monkeypatch):
    args = ["qat", "-q", "3", "--w-bits", "6", "--preset", "dynaquant-q", "--train-dir",
            str(crop_dir), "--run-dir", str(tmp_path / "run"), "--steps", "2", "--patch-size",
            "64", "--batch-size", "2", "--calib-crops", "2", "--calib-size", "64", "-d",
            str(image_dir), "--limit", "1", "-o", str(tmp_path / "qat.json"), "--no-progress"]
    monkeypatch.setattr(sys, "argv", ["licq", *args, "--no-eval"])  # what provenance records
    assert main([*args, "--no-eval"]) == 0  # train only (a share of the qualities)
    assert not (tmp_path / "qat.json").exists()
    monkeypatch.setattr(sys, "argv", ["licq", *args])
    # a second run reloads the finished quality instead of training again, and evaluates it
    assert main(args) == 0
    assert "finished run" in capsys.readouterr().err
    r = read_results(tmp_path / "qat.json")
    assert r["licq"]["steps"] == [2] and r["licq"]["preset"] == "dynaquant-q"
    assert r["licq"]["qat"]["spec"]["params"] == "dpa"
    # the point names the command that trained it, not only the one that evaluated it
    trained = r["licq"]["points"][0]["train_provenance"]
    assert "--no-eval" in trained["command"] and "--no-eval" not in r["licq"]["command"]
    assert trained["commit"] and trained["date"] <= r["licq"]["provenance"]["date"]


def test_qat_dynaquant_command_reports_bits(tmp_path, crop_dir, image_dir):
    out = tmp_path / "dq.json"
    assert main(["qat", "-q", "2", "--preset", "dynaquant", "--candidates", "4", "8",
                 "--train-dir", str(crop_dir), "--run-dir", str(tmp_path / "run"), "--steps", "2",
                 "--patch-size", "64", "--batch-size", "2", "--calib-crops", "2", "--calib-size",
                 "64", "-d", str(image_dir), "-o", str(out), "--no-progress"]) == 0
    r = read_results(out)
    assert r["licq"]["setting"] == "dq-4-8"
    assert 4 <= r["licq"]["mean_bits"] <= 8
    assert 0 < r["licq"]["selector_share_encode"] < 1
    row = r["licq"]["points"][0]["per_image"][0]
    assert set(row["bits_g_a"]) <= {4, 8} and len(row["bits_g_s"]) == 3
    # every weight read at 4 or 8 bit, the selector MLPs' at 8 bit: between 4x and 8x
    assert 4 <= r["licq"]["ratio_at_mean_bits"] <= 8
    assert r["licq"]["qat"]["selector_bits"] == 8
    assert (tmp_path / "dq.bits.png").stat().st_size > 1000  # the per-image bit heat map
