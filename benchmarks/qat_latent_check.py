"""Why QAT lost to PTQ at W8A8: the quantizer of the decoded latent during training.

    python benchmarks/qat_latent_check.py [--steps 300] [--quality 3]

The ScaleHyperprior baseline at W8A8, preset fmpq, QAT twice with the same seed and data: with the
latent quantizers adding only their error on round(y) while training (licq since session 4), and
with the earlier behaviour (the noisy training latent y + u quantized again,
``FakeQuantize.requantize_training_latents``). Reports rate of ŷ and ẑ (from the likelihoods),
MSE and RD loss on 16 held-out 256-px training crops (seed 1234; never Kodak) for FP32, PTQ and
both QAT runs, and, for the earlier behaviour, the FP32 model with one group of the QAT-trained
weights copied in (which transform moved the rate). Writes
benchmarks/results/qat-latent-check-<arch>.json.
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

from licq._provenance import provenance  # noqa: E402
from licq.api import QuantConfig  # noqa: E402
from licq.data import CropSampler  # noqa: E402
from licq.models import get_adapter, lambda_for, load_model  # noqa: E402
from licq.ptq import post_training_quantize  # noqa: E402
from licq.qat import TrainConfig  # noqa: E402
from licq.qat.engine import PRESETS, qat_quantize  # noqa: E402
from licq.quant.fake_quant import FakeQuantize  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ARCH = "bmshj2018-hyperprior"


@torch.no_grad()
def held_out(model: torch.nn.Module, x: torch.Tensor, lmbda: float) -> dict[str, float]:
    model.eval()
    out = model(x)
    pixels = x.shape[0] * x.shape[2] * x.shape[3]
    r = {f"bpp_{k}": float(-torch.log2(v).sum() / pixels) for k, v in out["likelihoods"].items()}
    mse = float(torch.mean((out["x_hat"].clamp(0, 1) - x) ** 2))
    return {**r, "mse": mse, "loss": sum(r.values()) + lmbda * 255**2 * mse}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quality", type=int, default=3)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--train", type=Path, default=ROOT.parent / "shared/data/train")
    args = ap.parse_args()
    torch.set_num_threads(1)
    q, lmbda = args.quality, lambda_for(args.quality)
    ckpt = args.train.parent.parent / "baselines" / f"{ARCH}-N64M96-q{q}.pth.tar"
    x = CropSampler(args.train, patch_size=256, seed=1234, flip=False).batch(16)
    rows = {"fp32": held_out(load_model(ARCH, checkpoint=ckpt), x, lmbda)}
    cfg = QuantConfig.uniform(8, 8)
    rows["ptq"] = held_out(post_training_quantize(load_model(ARCH, checkpoint=ckpt), cfg,
                                                  args.train, progress=False).model, x, lmbda)
    trained = {}
    for name, requantize in (("qat", False), ("qat-requantize-latents", True)):
        FakeQuantize.requantize_training_latents = requantize
        t0 = time.perf_counter()
        try:
            with tempfile.TemporaryDirectory() as tmp:
                run = qat_quantize(load_model(ARCH, checkpoint=ckpt), cfg, PRESETS["fmpq"].settings,
                                   TrainConfig(lmbda=lmbda, lr=1e-5, steps=args.steps),
                                   train_dir=args.train, out_dir=tmp, adapter=get_adapter(ARCH),
                                   progress=False)
        finally:
            FakeQuantize.requantize_training_latents = False
        trained[name] = run.model
        rows[name] = {**held_out(run.model, x, lmbda), "seconds": time.perf_counter() - t0}
        print(name, rows[name], flush=True)
    # which transform moved the rate: FP32 + one group of the earlier behaviour's weights
    qsd = trained["qat-requantize-latents"].state_dict()
    for group in ("g_a", "h_a", "h_s", "g_s"):
        fp = load_model(ARCH, checkpoint=ckpt)
        own = fp.state_dict()
        fp.load_state_dict({**own, **{k: v for k, v in qsd.items()
                                      if k.startswith(group + ".") and k in own
                                      and own[k].shape == v.shape}})
        rows[f"fp32 + {group} of qat-requantize-latents"] = held_out(fp, x, lmbda)
    result = {"arch": ARCH, "quality": q, "bit_config": "W8A8", "preset": "fmpq",
              "steps": args.steps, "held_out": "16 crops 256px, seed 1234, ../shared/data/train",
              "rows": rows, "provenance": provenance()}
    out = ROOT / "benchmarks/results" / f"qat-latent-check-{ARCH}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    for k, r in rows.items():
        print(f"{k:42s} bpp_y {r['bpp_y']:.5f} bpp_z {r['bpp_z']:.5f} mse {r['mse']:.7f} "
              f"loss {r['loss']:.5f}")


if __name__ == "__main__":
    main()
