"""Pick QAT's settings (weight lr, schedule, variants) on training data (never Kodak).

    python benchmarks/qat_probe.py --steps 200 --lrs 1e-5 1e-4 [--schedules constant cosine]
    python benchmarks/qat_probe.py --arch mbt2018-mean --quality 4 \
        --allocation benchmarks/results/fmpq-mbt2018-mean-dp-6x.json --steps 300 --lrs 1e-5 \
        --variants lsq/leaky/ste/mixed/1e-4 --tag=-latent-6x-q4-mixed

QAT of one baseline (default the ScaleHyperprior q3; others: benchmarks/baselines.py) at an FMPQ
allocation (default DP-6x), one run per variant and lr, then the RD loss (eval mode: latents
rounded, bpp from the likelihoods) on 16 held-out 256-px crops of ../shared/data/train drawn with
another seed than training and calibration. Writes benchmarks/results/qat-probe-<arch><tag>.json.
"""

from __future__ import annotations

import argparse
import itertools
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
from licq.qat import RateDistortionLoss, TrainConfig  # noqa: E402
from licq.qat.engine import PRESETS, QATSettings, qat_quantize  # noqa: E402
from licq.qat.quantizers import QATSpec  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@torch.no_grad()
def held_out_loss(model, x, lmbda):
    model.eval()
    out = RateDistortionLoss(lmbda)(model(x), x)
    return {k: float(v) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="bmshj2018-hyperprior")
    ap.add_argument("--quality", type=int, default=3)
    ap.add_argument("--allocation", type=Path,
                    default=ROOT / "benchmarks/results/fmpq-bmshj2018-hyperprior-dp-6x.json")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--lrs", type=float, nargs="+", default=[1e-5, 1e-4])
    ap.add_argument("--variants", nargs="+", default=["fmpq"],
                    help="PARAMS/CLIP/ROUNDING[/LATENT[/SCALE_LR]] or a preset name")
    ap.add_argument("--schedules", nargs="+", default=["constant"], choices=["constant", "cosine"],
                    help="learning-rate schedules (cosine: to 0.01 × the lr at --steps)")
    ap.add_argument("--tag", default="", help="suffix of the results file")
    ap.add_argument("--train", type=Path, default=ROOT.parent / "shared/data/train")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    prov = provenance()
    q = args.quality
    lmbda = lambda_for(q)
    ckpt = baseline_checkpoint(args.arch, q, args.train.parent.parent)
    points = json.loads(args.allocation.read_text())["licq"]["points"]
    cfg = QuantConfig.from_dict(next(p["bit_config"] for p in points if p["quality"] == q))
    x = CropSampler(args.train, patch_size=256, seed=1234, flip=False).batch(16)
    rows = []
    fp = load_model(args.arch, checkpoint=ckpt)
    rows.append({"what": "fp32", **held_out_loss(fp, x, lmbda)})
    ptq = post_training_quantize(load_model(args.arch, checkpoint=ckpt), cfg, args.train,
                                 progress=False).model
    rows.append({"what": "ptq", **held_out_loss(ptq, x, lmbda)})
    for variant in args.variants:
        latent, settings = "noise", None
        if variant in PRESETS:
            settings = PRESETS[variant].settings
        else:
            parts = variant.split("/")
            spec = QATSpec(params=parts[0], clip=parts[1], rounding=parts[2])
            latent = parts[3] if len(parts) > 3 else "noise"
            settings = QATSettings(spec=spec, scale_lr=float(parts[4]) if len(parts) > 4 else 1e-3)
        for lr, schedule in itertools.product(args.lrs, args.schedules):
            model = load_model(args.arch, checkpoint=ckpt)
            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                run = qat_quantize(model, cfg, settings,
                                   TrainConfig(lmbda=lmbda, lr=lr, steps=args.steps,
                                               latent_rounding=latent, lr_schedule=schedule),
                                   train_dir=args.train, out_dir=tmp,
                                   adapter=get_adapter(args.arch), progress=False)
            what = f"{variant} lr={lr:g}" + ("" if schedule == "constant" else f" {schedule}")
            rows.append({"what": what, "steps": run.steps,
                         "seconds": time.perf_counter() - t0,
                         **held_out_loss(run.model, x, lmbda)})
            print(rows[-1], flush=True)
    result = {"arch": args.arch, "quality": q, "allocation": str(args.allocation.name),
              "held_out": "16 crops 256px, seed 1234, ../shared/data/train", "rows": rows,
              "provenance": prov}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"qat-probe-{args.arch}{args.tag}.json").write_text(json.dumps(result, indent=1) + "\n")
    for r in rows:
        print(f"{r['what']:36s} loss {r['loss']:.4f} bpp {r['bpp_loss']:.4f} mse {r['mse_loss']:.6f}")


if __name__ == "__main__":
    main()
