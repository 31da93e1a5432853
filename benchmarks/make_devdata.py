"""Pack the training photos for the device tool (whose working tree may hold 64 MiB in all).

    python benchmarks/make_devdata.py [--budget-mb 54.7] [--out .devdata/train]
    python benchmarks/make_devdata.py --init 'benchmarks/models/mbt2018-mean-N64M96-q{q}.safetensors'

Every PNG under ../shared/data/train re-encoded as lossless WebP (checked pixel-identical), taken
in sorted order (CBSD68, McMaster, then wikipedia_photos) while the total fits the budget; the
list of files taken is written to OUT/FILES.txt. Add `/.devdata/` to .git/info/exclude and name
`.devdata` in the run's `carry`. (The first GPU session took 110 of the 130 photos this way.)

``--init PATTERN`` instead writes the models of qualities 1-4 as float16 to .devdata/init/ (initial
weights of a GPU continuation; no entropy-coder tables), keeping float32 what float16 cannot
hold (gpu_train_stages.half_safe).
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", type=Path, default=ROOT.parent / "shared/data/train")
    ap.add_argument("--out", type=Path, default=ROOT / ".devdata/train")
    ap.add_argument("--budget-mb", type=float, default=54.7)
    ap.add_argument("--init", default=None, help="model path pattern with {q}")
    args = ap.parse_args()
    if args.init:
        write_inits(args.init, ROOT / ".devdata/init")
        return
    budget = args.budget_mb * 1e6
    total, taken = 0, []
    for src in sorted(args.src.rglob("*.png")):
        im = Image.open(src).convert("RGB")
        buf = io.BytesIO()
        im.save(buf, "WEBP", lossless=True, quality=100, method=4)
        data = buf.getvalue()
        back = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        if not np.array_equal(back, np.asarray(im)):
            raise SystemExit(f"{src}: WebP round trip is not lossless")
        if total + len(data) > budget:
            continue
        rel = src.relative_to(args.src).with_suffix(".webp")
        dst = args.out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(data)
        total += len(data)
        taken.append(str(rel))
    (args.out / "FILES.txt").write_text("\n".join(taken) + "\n")
    print(f"{len(taken)} images, {total / 1e6:.1f} MB in {args.out}")


def write_inits(pattern: str, out: Path) -> None:
    from gpu_train_stages import TABLES, half_safe
    from safetensors.torch import load_file, save_file

    out.mkdir(parents=True, exist_ok=True)
    for q in (1, 2, 3, 4):
        src = Path(pattern.format(q=q))
        sd = half_safe({k: v for k, v in load_file(str(src)).items() if not k.endswith(TABLES)})
        kept = sorted(k for k, v in sd.items() if v.dtype == torch.float32)
        save_file(sd, str(out / src.name))
        print(f"{src.name}: float16, {len(kept)} tensors kept float32 ({', '.join(kept[:3])}, ...)")


if __name__ == "__main__":
    main()
