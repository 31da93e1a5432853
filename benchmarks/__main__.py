"""One entry point for licq's benchmarks: list, re-run and report the results tables.

    python -m benchmarks list [TABLE] [--arch ARCH]       # results files and the command of each
    python -m benchmarks run TABLE [--arch ARCH] [--only STEM ...] [--dry-run]
    python -m benchmarks report [--check]                 # docs/results.md + the README summary

Every results file records the command that wrote it (``licq.command`` or
``licq.provenance.command``), so the run list of a table is the table's results files: ``run``
re-runs those commands from the repository root (one command once, where a script wrote several
files; for a file that ``benchmarks/merge_points.py`` merged from runs of disjoint qualities, each
run and then the merge) and ``report`` renders the tables again. The FP32 fine-tuning controls
record only their evaluation; ``run`` calls ``benchmarks/fp32_finetune_control.sh`` for them
instead (training and evaluation), with the settings the file name records.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

#: table -> the results-file prefixes it is computed from (benchmarks/results/<prefix>-*.json)
TABLES: dict[str, tuple[str, ...]] = {
    "baselines": ("baselines",),
    "ptq": ("ptq", "observers", "floor-probe", "equalize-probe"),
    "fmpq": ("fmpq", "search-cost", "sensitivity"),
    "qat": ("qat", "finetune-fp32-control"),
    "dq": ("dq",),
    "deploy": ("deploy", "int8-kernels", "onnx-kernels"),
    "codec": ("codec",),
}
ARCHS = ("bmshj2018-hyperprior", "mbt2018-mean", "cheng2020-anchor")
CONTROL = "finetune-fp32-control"


def table_of(stem: str) -> str | None:
    """The table a results file belongs to (longest matching prefix), or None."""
    best = None
    for table, prefixes in TABLES.items():
        for p in prefixes:
            if (stem == p or stem.startswith(p + "-")) and (best is None or len(p) > len(best[1])):
                best = (table, p)
    return best[0] if best else None


def arch_of(stem: str) -> str:
    """The architecture a file name names (the ScaleHyperprior when it names none)."""
    return next((a for a in ARCHS if f"-{a}" in stem), ARCHS[0])


def recorded_command(data: dict) -> str | None:
    lq = data.get("licq") if isinstance(data.get("licq"), dict) else {}
    for where in (lq, lq.get("provenance") or {}, data.get("provenance") or {}):
        if where.get("command"):
            return where["command"]
    return None


def control_recipe(stem: str) -> str:
    """The ``fp32_finetune_control.sh`` call that trained a control's models (from its name)."""
    env = [f"ARCH={arch_of(stem)}"]
    if m := re.search(r"-s(\d+)", stem):
        env.append(f"STEPS={m.group(1)}")
    if m := re.search(r"-cosine([0-9.e+-]+?)(?:-latent|$)", stem):
        env.append(f"COSINE_LR={m.group(1)}")
    if stem.endswith("-latent-mixed"):
        env.append("LATENT=mixed")
    return " ".join(env) + " bash benchmarks/fp32_finetune_control.sh"


def retired(command: str) -> bool:
    """A command whose script is no longer in the tree (its results stay; git has the script)."""
    argv = shlex.split(command)
    return argv[0].endswith(".py") and not (ROOT / argv[0]).is_file()


def runnable(command: str) -> str:
    """A recorded command as it runs from the repository root with this interpreter."""
    argv = shlex.split(command)
    if Path(argv[0]).name == "licq":
        argv = [sys.executable, "-m", "licq.cli", *argv[1:]]
    elif argv[0].endswith(".py"):
        argv = [sys.executable, *argv]
    return shlex.join(argv)


def entries(table: str | None, arch: str | None, only: list[str] | None) -> list[dict]:
    """The results files of a table (all tables: None) with their reproduction commands."""
    out = []
    for f in sorted(RESULTS.glob("*.json")):
        t = table_of(f.stem)
        if t is None or (table and t != table) or (arch and arch_of(f.stem) != arch):
            continue
        if only and f.stem not in only and f.name not in only:
            continue
        data = json.loads(f.read_text())
        command = recorded_command(data)
        merged = (data.get("licq") or {}).get("merged_from") or []
        if f.stem.startswith(CONTROL):  # the script trains the models and evaluates them
            steps = [control_recipe(f.stem)]
        elif merged:  # benchmarks/merge_points.py: each part's run, then the merge
            steps = [m["command"] for m in merged] + ([command] if command else [])
        else:
            steps = [command] if command else []
        out.append({"file": f.name, "table": t, "steps": steps})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="action", required=True)
    ls = sub.add_parser("list", help="results files and the command that wrote each")
    ls.add_argument("table", nargs="?", choices=sorted(TABLES))
    ls.add_argument("--arch", choices=ARCHS)
    run = sub.add_parser("run", help="re-run the commands of a table's results files")
    run.add_argument("table", choices=sorted(TABLES))
    run.add_argument("--arch", choices=ARCHS)
    run.add_argument("--only", nargs="+", metavar="STEM", help="only these results files")
    run.add_argument("--dry-run", action="store_true", help="print the commands only")
    rep = sub.add_parser("report", help="regenerate docs/results.md and the README summary")
    rep.add_argument("--check", action="store_true", help="exit 1 if they are stale")
    args = ap.parse_args(argv)

    if args.action == "report":
        sys.path.insert(0, str(ROOT / "benchmarks"))
        import report

        return report.main(["--check"] if args.check else [])
    found = entries(args.table, args.arch, getattr(args, "only", None))
    if args.action == "list":
        for e in found:
            print(f"[{e['table']}] {e['file']}")
            for s in e["steps"] or ["(no command recorded: written by the command of its table)"]:
                print(f"    {s}" + ("   [retired script: not re-run]" if retired(s) else ""))
        return 0
    if not found:
        print("no results files match", file=sys.stderr)
        return 2
    done: set[str] = set()
    for e in found:
        for step in e["steps"]:
            cmd = step if step.endswith(".sh") else runnable(step)
            if cmd in done:
                continue
            if retired(step):
                print(f"skip (retired script, results kept): {step}", file=sys.stderr)
                done.add(cmd)
                continue
            done.add(cmd)
            print(f"$ {cmd}", flush=True)
            if not args.dry_run:
                rc = subprocess.run(cmd, shell=True, cwd=ROOT, env=os.environ.copy()).returncode
                if rc:
                    print(f"failed ({rc}): {cmd}", file=sys.stderr)
                    return rc
    return 0


if __name__ == "__main__":
    sys.exit(main())
