"""Train the cheng2020-anchor and mbt2018-mean baselines on a lent GPU in ONE process.

    python benchmarks/gpu_train_stages.py --data .devdata/train --runs runs/gpu --out $OUT \
        [--batch-size 16] [--cheng-base-s 160] [--cheng-q-s 40] [--mbt-q-s 25] \
        [--mbt-init '.devdata/init/mbt2018-mean-N64M96-q{q}.safetensors']

Every stage is a `licq train` run (the same CLI entry point, called in-process so that Python,
CUDA and the data are started once, and one stage runs at a time: benchmarks/README.md, "GPU
notes"):
  cheng2020-anchor N=64: base at λ=0.0067 from scratch (lr 3e-4), then q1..q4 from the base at
      CompressAI's λ (lr 1e-4);
  mbt2018-mean N=64 M=96: q1..q4 continued from the CPU-trained models of
      benchmarks/models/ (lr 1e-4), when --mbt-init is given.
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

TABLES = ("_quantized_cdf", "_offset", "_cdf_length")


def pack(out: Path, stage: str, run: Path, fp16: bool, extra: list[Path]) -> None:
    from safetensors.torch import load_file, save

    sd = load_file(str(run / "model.safetensors"))
    sd = {k: (v.half() if fp16 and v.is_floating_point() else v).contiguous()
          for k, v in sd.items() if not k.endswith(TABLES)}
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


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=".devdata/train")
    ap.add_argument("--runs", type=Path, default=Path("runs/gpu"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--cheng-base-s", type=float, default=160)
    ap.add_argument("--cheng-q-s", type=float, default=40)
    ap.add_argument("--mbt-q-s", type=float, default=25)
    ap.add_argument("--mbt-init", default=None, help="path pattern with {q}")
    ap.add_argument("--mbt-fp16", action="store_true")
    args = ap.parse_args()
    from licq.cli import main as licq

    args.out.mkdir(parents=True, exist_ok=True)
    common = ["-d", args.data, "--device", args.device, "--no-progress", "--log-every", "200",
              "--checkpoint-every", "100000", "--batch-size", str(args.batch_size)]
    t_start = time.time()

    def train(stage: str, *extra: str) -> Path:
        run = args.runs / stage
        t0 = time.time()
        rc = licq(["train", "-o", str(run), *common, *extra])
        summary = json.loads((run / "train.json").read_text()) if rc == 0 else {}
        print(f"[{time.time() - t_start:6.0f}s] {stage}: rc={rc} steps={summary.get('steps')} "
              f"train_s={summary.get('train_seconds', 0):.0f} wall_s={time.time() - t0:.0f} "
              f"last={summary.get('last')}", flush=True)
        if rc != 0:
            raise SystemExit(f"{stage} failed")
        return run

    base = train("cheng2020-anchor-base", "-a", "cheng2020-anchor", "-N", "64", "--lambda",
                 "0.0067", "--lr", "3e-4", "--max-seconds", str(args.cheng_base_s))
    for q in (1, 2, 3, 4):
        run = train(f"cheng2020-anchor-q{q}", "-a", "cheng2020-anchor", "-N", "64", "-q", str(q),
                    "--lr", "1e-4", "--seed", str(q), "--max-seconds", str(args.cheng_q_s),
                    "--init", str(base / "model.safetensors"))
        extra = [base / "train.json", base / "train.log"] if q == 1 else []
        pack(args.out, f"cheng2020-anchor-q{q}", run, False, extra)
    if args.mbt_init:
        for q in (1, 2, 3, 4):
            run = train(f"mbt2018-mean-q{q}", "-a", "mbt2018-mean", "-N", "64", "-M", "96",
                        "-q", str(q), "--lr", "1e-4", "--seed", str(10 + q),
                        "--max-seconds", str(args.mbt_q_s),
                        "--init", args.mbt_init.format(q=q))
            pack(args.out, f"mbt2018-mean-q{q}", run, args.mbt_fp16, [])
    print(f"[{time.time() - t_start:6.0f}s] all stages done", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
