"""Does activation-range equalization survive QAT? A screening on training crops, never Kodak.

    python benchmarks/equalize_probe.py [--arch bmshj2018-hyperprior] [--quality 3] [--ratio 8x]
                                        [--steps 300]

One baseline, the FMPQ DP allocation of ``run_fmpq.py`` at that ratio, PTQ and a short
``--preset fmpq`` QAT (constant lr 1e-5, the 300-step rows' recipe), each without and with
``--equalize auto`` (:mod:`licq.ptq.equalize`, α chosen on its own 16 held-out crops, seed 1).
Reports the RD loss, bpp and MSE on 32 other held-out 256-px training crops (seed 7) against the
FP32 model. Writes benchmarks/results/equalize-probe-<arch>-<ratio>-q<quality>.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", category=DeprecationWarning)

import torch  # noqa: E402
from baselines import baseline_checkpoint  # noqa: E402  (benchmarks/, the script's folder)

from licq._provenance import provenance  # noqa: E402
from licq.api import QuantConfig  # noqa: E402
from licq.data import CropSampler  # noqa: E402
from licq.models import get_adapter, lambda_for, load_model  # noqa: E402
from licq.ptq import post_training_quantize  # noqa: E402
from licq.qat import TrainConfig  # noqa: E402
from licq.qat.engine import PRESETS, qat_quantize  # noqa: E402
from licq.qat.loss import RateDistortionLoss  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@torch.no_grad()
def held_out(model: torch.nn.Module, batches: list[torch.Tensor], lmbda: float) -> dict:
    crit = RateDistortionLoss(lmbda)
    model.eval()
    outs = [crit(model(x), x) for x in batches]
    return {k: sum(o[k].item() for o in outs) / len(outs) for k in ("loss", "bpp_loss", "mse_loss")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="bmshj2018-hyperprior")
    ap.add_argument("--quality", type=int, default=3)
    ap.add_argument("--ratio", default="8x")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    args = ap.parse_args()
    torch.set_num_threads(1)
    q, lmbda, arch = args.quality, lambda_for(args.quality), args.arch
    train = args.shared / "data/train"
    ckpt = baseline_checkpoint(arch, q, args.shared)
    alloc = ROOT / "benchmarks/results" / f"fmpq-{arch}-dp-{args.ratio}.json"
    point = next(p for p in json.loads(alloc.read_text())["licq"]["points"] if p["quality"] == q)
    cfg = QuantConfig.from_dict(point["bit_config"])
    sampler = CropSampler(train, patch_size=256, seed=7, flip=False)
    batches = [sampler.batch(8) for _ in range(4)]
    fp = held_out(load_model(arch, checkpoint=ckpt), batches, lmbda)
    rows: dict[str, dict] = {}
    for eq in (None, "auto"):
        tag = "equalize-auto" if eq else "plain"
        r = post_training_quantize(load_model(arch, checkpoint=ckpt), cfg, train, progress=False,
                                   equalize=eq, lmbda=lmbda)
        rows[f"ptq-{tag}"] = {**held_out(r.model, batches, lmbda),
                              "alpha": r.equalization["alpha"] if r.equalization else None}
        settings = PRESETS["fmpq"].settings
        if eq:
            from dataclasses import replace

            settings = replace(settings, equalize=eq)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            run = qat_quantize(load_model(arch, checkpoint=ckpt), cfg, settings,
                               TrainConfig(lmbda=lmbda, lr=1e-5, steps=args.steps),
                               train_dir=train, out_dir=tmp, adapter=get_adapter(arch),
                               progress=False)
        rows[f"qat-{tag}"] = {**held_out(run.model, batches, lmbda),
                              "alpha": run.equalization["alpha"] if run.equalization else None,
                              "seconds": round(time.perf_counter() - t0, 1)}
    for row in rows.values():
        row["vs_fp32_percent"] = round(100 * (row["loss"] / fp["loss"] - 1), 3)
    result = {"arch": arch, "quality": q, "allocation": alloc.name, "preset": "fmpq",
              "qat": {"steps": args.steps, "lr": 1e-5},
              "held_out": "32 crops 256px, seed 7, ../shared/data/train", "fp32": fp,
              "rows": rows, "provenance": provenance()}
    out = ROOT / "benchmarks/results" / f"equalize-probe-{arch}-{args.ratio}-q{q}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    for k, r in rows.items():
        print(f"{k:22s} loss {r['loss']:.5f} ({r['vs_fp32_percent']:+.2f} % vs FP32) "
              f"bpp {r['bpp_loss']:.5f} mse {r['mse_loss']:.7f} α {r['alpha']}")


if __name__ == "__main__":
    main()
