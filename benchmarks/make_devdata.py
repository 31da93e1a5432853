"""Pack the training photos for the device tool (whose working tree may hold 64 MiB in all).

    python benchmarks/make_devdata.py [--budget-mb 54.7] [--out .devdata/train]

Every PNG under ../shared/data/train re-encoded as lossless WebP (checked pixel-identical), taken
in sorted order (CBSD68, McMaster, then wikipedia_photos) while the total fits the budget; the
list of files taken is written to OUT/FILES.txt. Add `/.devdata/` to .git/info/exclude and name
`.devdata` in the run's `carry`. (The first GPU session took 110 of the 130 photos this way.)
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", type=Path, default=ROOT.parent / "shared/data/train")
    ap.add_argument("--out", type=Path, default=ROOT / ".devdata/train")
    ap.add_argument("--budget-mb", type=float, default=54.7)
    args = ap.parse_args()
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


if __name__ == "__main__":
    main()
