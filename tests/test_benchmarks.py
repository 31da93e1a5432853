"""The benchmark runner and the generated results pages."""

import importlib
import json

runner = importlib.import_module("benchmarks.__main__")


def test_every_results_file_belongs_to_a_table_and_records_its_command():
    files = sorted(runner.RESULTS.glob("*.json"))
    assert len(files) > 100
    for f in files:
        assert runner.table_of(f.stem) is not None, f.name
        if f.stem.startswith("sensitivity-"):  # run_fmpq.py's cache of ζ, written by its command
            continue
        assert runner.recorded_command(json.loads(f.read_text())), f.name


def test_table_of_takes_the_longest_prefix():
    assert runner.table_of("qat-mbt2018-mean-fmpq-6x") == "qat"
    assert runner.table_of("finetune-fp32-control-s1200-cosine1e-4") == "qat"
    assert runner.table_of("ptq-cheng2020-anchor-w8a8") == "ptq"
    assert runner.table_of("something-else") is None


def test_control_recipe_from_the_name():
    assert runner.control_recipe("finetune-fp32-control") == (
        "ARCH=bmshj2018-hyperprior bash benchmarks/fp32_finetune_control.sh")
    assert runner.control_recipe("finetune-fp32-control-mbt2018-mean-s2400-cosine1e-4-latent-mixed") == (
        "ARCH=mbt2018-mean STEPS=2400 COSINE_LR=1e-4 LATENT=mixed "
        "bash benchmarks/fp32_finetune_control.sh")


def test_run_dry_lists_each_command_once(capsys):
    assert runner.main(["run", "fmpq", "--arch", "cheng2020-anchor", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines and all(line.startswith("$ ") and "run_fmpq.py" in line for line in lines)
    assert len(lines) == len(set(lines))


def test_runnable_uses_this_interpreter():
    import sys

    cmd = runner.runnable(".venv/bin/licq ptq -a x --name 'a b'")
    assert cmd.startswith(sys.executable) and "-m licq.cli ptq" in cmd and "'a b'" in cmd


def test_results_page_and_readme_summary_regenerate_identically():
    """docs/results.md and the README's summary are what report.py makes of the results files
    (run `python benchmarks/report.py` after adding or changing one)."""
    report = importlib.import_module("benchmarks.report")
    assert report.stale() == []


def test_codec_fuzz_mutations_keep_the_crc_valid_and_hit_the_named_field(tmp_path):
    """The fuzz run's header and payload mutations recompute the CRC (so they test the parser
    and the digest, not only the CRC), and its field map matches the container layout."""
    import random
    import struct
    import zlib

    import torch

    from licq.codec import Container, compress_image
    from tests.conftest import tiny_model

    fuzz = importlib.import_module("benchmarks.codec_fuzz")
    from licq.api import QuantConfig, quantize_
    from licq.ptq import calibrate

    model = tiny_model("bmshj2018-hyperprior").eval()
    quantize_(model, QuantConfig.uniform(8, 8))
    with calibrate(model):
        model(torch.rand(1, 3, 64, 64))
    model.update(force=True)
    data = compress_image(model, b"m" * 16, torch.rand(1, 3, 64, 80))
    c = Container.from_bytes(data)
    f = fuzz.fields(data)
    assert struct.unpack_from("<II", data, f["height"][0]) == (c.height, c.width)
    assert [data[p:p + n] for p, n in f["payload"]] == [s for g in c.strings for s in g]
    assert f["tail"][1] == 12  # the digest
    rng = random.Random(0)
    for mutate in (fuzz.mutate_header, fuzz.mutate_payload):
        for _ in range(50):
            _, new = mutate(data, rng)
            assert zlib.crc32(new[:-4]) == struct.unpack("<I", new[-4:])[0]
    _, big = fuzz.oversized(data, 64, 1 << 26, rng)
    h, w = struct.unpack_from("<II", big, f["height"][0])
    shape = [struct.unpack_from("<I", big, p)[0] for p, _ in f["shape"]]
    assert h * w > c.height * c.width and shape == [-(-h // 64), -(-w // 64)]


def test_every_recorded_script_exists_or_is_deliberately_retired():
    scripts = set()
    for f in runner.RESULTS.glob("*.json"):
        command = runner.recorded_command(json.loads(f.read_text()))
        if command and runner.retired(command):
            scripts.add(command.split()[0])
    assert scripts == {"benchmarks/qat_latent_check.py"}  # superseded by the latent fix


def _part(qualities, *, setting="w8a8", ratio=4.0):
    from licq.eval.results import make_results

    pts = [{"psnr-rgb": 30.0 + q, "ms-ssim-rgb": 0.9, "bpp": 0.1 * q, "encoding_time": 1.0,
            "decoding_time": 1.0} for q in qualities]
    licq = {"arch": "cheng2020-anchor", "setting": setting, "method": "rdo", "commit": "abc",
            "points": [{"quality": q} for q in qualities], "model_bytes": [100 * q for q in qualities],
            "ptq_seconds": [60.0 * q for q in qualities], "ratio": ratio,
            "command": f"licq ptq -q {' '.join(map(str, qualities))} -o part.json"}
    return make_results("x", pts, description="d", licq=licq)


def test_merge_points_orders_by_quality_and_keeps_each_part_command():
    merge = importlib.import_module("benchmarks.merge_points")
    out = merge.merge([_part([3, 4], ratio=5.0), _part([1, 2], ratio=3.0)], "merge cmd")
    assert [p["quality"] for p in out["licq"]["points"]] == [1, 2, 3, 4]
    assert out["results"]["bpp"] == [0.1, 0.2, 0.1 * 3, 0.4]
    assert out["licq"]["ptq_seconds"] == [60.0, 120.0, 180.0, 240.0]
    assert out["licq"]["model_bytes"] == [100, 200, 300, 400]
    assert out["licq"]["ratio"] == 4.0  # mean over the 4 points
    assert [m["qualities"] for m in out["licq"]["merged_from"]] == [[3, 4], [1, 2]]
    assert out["licq"]["command"] == "merge cmd"
    assert "-q 3 4" in out["licq"]["merged_from"][0]["command"]


def test_merge_points_refuses_parts_of_different_runs():
    import pytest

    merge = importlib.import_module("benchmarks.merge_points")
    with pytest.raises(merge.MergeError, match="licq.setting"):
        merge.merge([_part([1, 2]), _part([3, 4], setting="fmpq-6x")], "m")
    with pytest.raises(merge.MergeError, match="more than one part"):
        merge.merge([_part([1, 2]), _part([2, 3])], "m")
    with pytest.raises(merge.MergeError, match="at least two"):
        merge.merge([_part([1, 2])], "m")


def test_runner_steps_of_a_merged_file_are_each_part_then_the_merge(tmp_path, monkeypatch):
    merge = importlib.import_module("benchmarks.merge_points")
    out = merge.merge([_part([1, 2]), _part([3, 4])], "benchmarks/merge_points.py a b -o c")
    (tmp_path / "ptq-cheng2020-anchor-w8a8-rdo.json").write_text(json.dumps(out))
    monkeypatch.setattr(runner, "RESULTS", tmp_path)
    (e,) = runner.entries("ptq", None, None)
    assert e["steps"] == ["licq ptq -q 1 2 -o part.json", "licq ptq -q 3 4 -o part.json",
                          "benchmarks/merge_points.py a b -o c"]
