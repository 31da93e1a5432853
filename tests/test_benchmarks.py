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
