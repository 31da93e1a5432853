"""Convert the shared FP32 ScaleHyperprior baselines into licq's embedded default model.

Reads ``../shared/baselines/*.pth.tar`` (CompressAI state dicts, weights_only), writes fp32
``.safetensors`` into ``src/licq/assets/models/`` and a manifest with both files' sha256, the
training recipe and the Kodak figures recorded with the baselines (``kodak.json``).

    python benchmarks/make_default_assets.py [--shared ../shared]
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", category=DeprecationWarning)

from safetensors.torch import save_file  # noqa: E402

from licq._provenance import sha256_file  # noqa: E402
from licq.models import lambda_for, load_model, read_state_dict  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    args = ap.parse_args()
    src_dir = args.shared / "baselines"
    out_dir = ROOT / "src" / "licq" / "assets" / "models"
    out_dir.mkdir(parents=True, exist_ok=True)
    kodak = json.loads((src_dir / "kodak.json").read_text())
    entries = []
    for q in (1, 2, 3, 4):
        src = src_dir / f"bmshj2018-hyperprior-N64M96-q{q}.pth.tar"
        sd = {k: v.contiguous() for k, v in read_state_dict(src).items()}
        dst = out_dir / f"bmshj2018-hyperprior-N64M96-q{q}.safetensors"
        save_file(sd, str(dst), metadata={"arch": "bmshj2018-hyperprior", "quality": str(q),
                                          "N": "64", "M": "96"})
        load_model("bmshj2018-hyperprior", checkpoint=dst)  # must load strictly
        entries.append({
            "quality": q, "lambda": lambda_for(q), "file": dst.name,
            "sha256": sha256_file(dst), "source": f"shared/baselines/{src.name}",
            "source_sha256": sha256_file(src),
            "recorded_kodak": {k: v[q - 1] for k, v in kodak["results"].items()},
        })
    manifest = {
        "arch": "bmshj2018-hyperprior", "sizes": {"N": 64, "M": 96}, "dtype": "float32",
        "recipe": "shared/baselines/README.md: CPU, 130 training photos, 128px crops, batch 8, "
                  "bpp + λ·255²·MSE, base λ=0.0067 3,400 s then 900 s per quality at lr 1e-4",
        "recorded_kodak_description": kodak.get("description", ""),
        "models": entries,
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"wrote {len(entries)} models and manifest.json to {out_dir}")


if __name__ == "__main__":
    main()
