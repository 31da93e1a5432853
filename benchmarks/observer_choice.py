"""Which range observers licq uses by default, measured on training crops (never Kodak).

RD-loss increase of the q3 ScaleHyperprior baseline on 8 seeded 256x256 crops of
../shared/data/train/CBSD68 for uniform weight-only quantization (observers minmax / mse /
percentile, symmetric and asymmetric) and for 8-bit input activations with float weights.
Writes benchmarks/results/observers-bmshj2018-hyperprior.json.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", category=DeprecationWarning)

import torch  # noqa: E402

from licq._provenance import provenance  # noqa: E402
from licq.api import LayerQConfig, QuantConfig, quantize_  # noqa: E402
from licq.data import CropSampler  # noqa: E402
from licq.models import load_model  # noqa: E402
from licq.ptq import calibrate_on_folder  # noqa: E402
from licq.qat import RateDistortionLoss  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CKPT = SHARED / "baselines" / "bmshj2018-hyperprior-N64M96-q3.pth.tar"


def main() -> None:
    torch.set_num_threads(1)
    x = CropSampler(SHARED / "data" / "train" / "CBSD68", patch_size=256, seed=5, flip=False).batch(8)
    crit = RateDistortionLoss(0.0067)

    def rd(m: torch.nn.Module) -> float:
        with torch.no_grad():
            return crit(m.eval()(x), x)["loss"].item()

    ref = rd(load_model("bmshj2018-hyperprior", checkpoint=CKPT))
    rows = []
    for bits in (8, 6, 5, 4):
        for obs in ("minmax", "mse", "percentile"):
            for sym in (True, False):
                m = load_model("bmshj2018-hyperprior", checkpoint=CKPT)
                quantize_(m, QuantConfig(default=LayerQConfig(bits, None, observer=obs, symmetric=sym)))
                rows.append({"weights": bits, "activations": None, "observer": obs,
                             "symmetric": sym, "rd_increase": rd(m) / ref - 1})
    for obs in ("minmax", "mse", "percentile"):
        m = load_model("bmshj2018-hyperprior", checkpoint=CKPT)
        quantize_(m, QuantConfig(default=LayerQConfig(16, 8, a_observer=obs)))
        calibrate_on_folder(m, SHARED / "data" / "train", num_crops=32, progress=False)
        rows.append({"weights": 16, "activations": 8, "a_observer": obs, "rd_increase": rd(m) / ref - 1})
    out = ROOT / "benchmarks" / "results" / "observers-bmshj2018-hyperprior.json"
    out.write_text(json.dumps({"rd_fp": ref, "rows": rows, "provenance": provenance()}, indent=1) + "\n")
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()
