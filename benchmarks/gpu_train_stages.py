"""Train the cheng2020-anchor and mbt2018-mean baselines on a lent GPU in ONE process.

    python benchmarks/gpu_train_stages.py --data .devdata/train --runs runs/gpu --out $OUT \
        [--batch-size 16] [--cheng-base-s 160] [--cheng-q-s 40] [--mbt-q-s 25] \
        [--mbt-init '.devdata/init/mbt2018-mean-N64M96-q{q}.safetensors'] [--mbt-lr 1e-4] \
        [--skip-cheng | --cheng-init '.devdata/init/cheng2020-anchor-N64-q{q}.safetensors'] \
        [--patch-size 128] [--qualities 1 2 3 4]

Every stage is a `licq train` run (the same CLI entry point, called in-process so that Python,
CUDA and the data are started once, and one stage runs at a time: benchmarks/README.md, "GPU
notes"):
  cheng2020-anchor N=64: base at λ=0.0067 from scratch (lr 3e-4), then q1..q4 from the base at
      CompressAI's λ (lr 1e-4); or, with --cheng-init, q1..q4 continued from those models;
  mbt2018-mean N=64 M=96: q1..q4 continued from the CPU-trained models of
      benchmarks/models/ (--mbt-lr), when --mbt-init is given. A stage that stops with
      non-finite losses (TrainingDiverged) keeps its last checkpoint (every 500 steps): its
      weights are packed with a train.json that says so (`diverged`, `steps`).
After each quality stage, OUT/<stage>.tar holds its weights (cheng2020-anchor in float32;
mbt2018-mean rounded to float16 with --mbt-fp16, to fit the device tool's 64 MiB of returned
files), train.json and train.log (and, for cheng2020-anchor q1, the base's log and json), without
the entropy-coder tables, which `update(force=True)` rebuilds from the weights.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from licq.models.loading import CODER_TABLES as TABLES  # noqa: E402


def pack(out: Path, stage: str, run: Path, fp16: bool, extra: list[Path]) -> None:
    from safetensors.torch import load_file, save

    sd = load_file(str(run / "model.safetensors"))
    sd = {k: v.contiguous() for k, v in sd.items() if not k.endswith(TABLES)}
    if fp16:
        sd = half_safe(sd)
    blob = save(sd, metadata={"stage": stage, "dtype": "float16" if fp16 else "float32"})
    tmp = out / f".{stage}.tar"
    with tarfile.open(tmp, "w") as tar:
        info = tarfile.TarInfo(f"{stage}/model.safetensors")
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
        for f in [run / "train.json", run / "train.log", *extra]:
            if f.is_file():
                tar.add(f, arcname=f"{stage}/{f.parent.name}-{f.name}" if f in extra
                        else f"{stage}/{f.name}")
    os.replace(tmp, out / f"{stage}.tar")


def half_safe(sd: dict) -> dict:
    """Floating tensors as float16, except the constants float16 cannot hold: a scalar whose
    non-zero value would round to 0 (the likelihood lower bounds, 1e-9, and the GDN pedestals,
    2^-36) or any tensor that would overflow stays float32. Rounding those scalars to 0 made a
    continuation from float16 weights diverge within steps (log of a zero likelihood): session
    3's `TrainingDiverged`. Tiny entries of a weight tensor may round to 0 (GDN's reparametrised
    γ/β are lower-bounded anyway)."""
    import torch

    out = {}
    for k, v in sd.items():
        if v.is_floating_point():
            h = v.half()
            lost = v.numel() == 1 and bool((h == 0) & (v != 0))
            v = v.float() if lost or not bool(torch.isfinite(h).all()) else h
        out[k] = v.contiguous()
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=".devdata/train")
    ap.add_argument("--runs", type=Path, default=Path("runs/gpu"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--patch-size", type=int, default=128)
    ap.add_argument("--cheng-base-s", type=float, default=160)
    ap.add_argument("--cheng-q-s", type=float, default=40)
    ap.add_argument("--mbt-q-s", type=float, default=25)
    ap.add_argument("--mbt-init", default=None, help="path pattern with {q}")
    ap.add_argument("--mbt-fp16", action="store_true")
    ap.add_argument("--mbt-lr", default="1e-4")
    ap.add_argument("--skip-cheng", action="store_true")
    ap.add_argument("--cheng-init", default=None, help="path pattern with {q}: continue these")
    ap.add_argument("--qualities", type=int, nargs="+", default=[1, 2, 3, 4],
                    help="the quality stages to run (continuations of some qualities only)")
    args = ap.parse_args()
    from licq.cli import main as licq

    args.out.mkdir(parents=True, exist_ok=True)
    common = ["-d", args.data, "--device", args.device, "--no-progress", "--log-every", "200",
              "--checkpoint-every", "500", "--batch-size", str(args.batch_size),
              "--patch-size", str(args.patch_size)]
    t_start = time.time()

    def train(stage: str, *extra: str, keep_diverged: bool = False) -> Path | None:
        run = args.runs / stage
        t0 = time.time()
        rc = licq(["train", "-o", str(run), *common, *extra])
        if rc != 0 and keep_diverged and (run / "checkpoint.pth.tar").is_file():
            salvage(run, stage)
        summary = json.loads((run / "train.json").read_text()) if (run / "train.json").is_file() else {}
        print(f"[{time.time() - t_start:6.0f}s] {stage}: rc={rc} steps={summary.get('steps')} "
              f"train_s={summary.get('train_seconds', 0):.0f} wall_s={time.time() - t0:.0f} "
              f"last={summary.get('last')}", flush=True)
        if not (run / "train.json").is_file():
            if keep_diverged:  # the other stages still run
                return None
            raise SystemExit(f"{stage} failed")
        return run

    if not args.skip_cheng:
        train_cheng(args, train)
    if args.mbt_init:
        quality_stages(args, train, "mbt2018-mean", ["-N", "64", "-M", "96"], args.mbt_init,
                       lr=args.mbt_lr, seed0=10, seconds=args.mbt_q_s, fp16=args.mbt_fp16,
                       keep_diverged=True)
    print(f"[{time.time() - t_start:6.0f}s] all stages done", flush=True)
    return 0


def salvage(run: Path, stage: str) -> None:
    """After TrainingDiverged: the last checkpoint's weights become the stage's result."""
    import torch
    from safetensors.torch import save_file

    ckpt = torch.load(run / "checkpoint.pth.tar", map_location="cpu", weights_only=True)
    save_file({k: v.contiguous() for k, v in ckpt["model"].items()}, str(run / "model.safetensors"))
    summary = {"steps": ckpt["step"], "train_seconds": ckpt["elapsed"], "diverged": True,
               "note": f"{stage} stopped with non-finite losses; weights of the checkpoint at "
                       f"step {ckpt['step']}", "meta": ckpt.get("meta")}
    (run / "train.json").write_text(json.dumps(summary, indent=1) + "\n")


def quality_stages(args: argparse.Namespace, train, arch: str, sizes: list[str], init: str,
                   lr: str, seed0: int, seconds: float, fp16: bool = False,
                   keep_diverged: bool = False, extra_q1: list[Path] | None = None) -> None:
    """q1..q4 of ``arch`` at CompressAI's λ, each from ``init`` (a path; ``{q}`` in it becomes
    the quality), packed."""
    for q in args.qualities:
        stage = f"{arch}-q{q}"
        run = train(stage, "-a", arch, *sizes, "-q", str(q), "--lr", lr, "--seed", str(seed0 + q),
                    "--max-seconds", str(seconds), "--init", init.replace("{q}", str(q)),
                    keep_diverged=keep_diverged)
        if run is not None:
            pack(args.out, stage, run, fp16, (extra_q1 or []) if q == 1 else [])


def train_cheng(args: argparse.Namespace, train) -> None:
    if args.cheng_init:  # continue the committed models: no base stage
        quality_stages(args, train, "cheng2020-anchor", ["-N", "64"], args.cheng_init, lr="1e-4",
                       seed0=20, seconds=args.cheng_q_s, keep_diverged=True)
        return
    base = train("cheng2020-anchor-base", "-a", "cheng2020-anchor", "-N", "64", "--lambda",
                 "0.0067", "--lr", "3e-4", "--max-seconds", str(args.cheng_base_s))
    quality_stages(args, train, "cheng2020-anchor", ["-N", "64"],
                   str(base / "model.safetensors"),
                   lr="1e-4", seed0=0, seconds=args.cheng_q_s,
                   extra_q1=[base / "train.json", base / "train.log"])


if __name__ == "__main__":
    raise SystemExit(main())
