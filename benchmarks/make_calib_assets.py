"""Bundle a few calibration crops from the training photos (never Kodak) into the package.

``licq ptq`` and ``licq demo`` calibrate on them when no ``--calib-dir`` is given, so the main job
runs on a fresh clone without ``../shared``. Seeded: 8 random 256x256 crops, one per photo.

    python benchmarks/make_calib_assets.py [--shared ../shared]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from licq.data import list_images, read_image_uint8, save_image

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    ap.add_argument("-n", type=int, default=8)
    args = ap.parse_args()
    photos = list_images(args.shared / "data" / "train")
    g = torch.Generator().manual_seed(2026)
    pick = torch.randperm(len(photos), generator=g)[: args.n].tolist()
    out = ROOT / "src" / "licq" / "assets" / "calib"
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in pick:
        img = read_image_uint8(photos[i])
        h, w = img.shape[1:]
        top = int(torch.randint(h - 256 + 1, (1,), generator=g))
        left = int(torch.randint(w - 256 + 1, (1,), generator=g))
        rel = photos[i].relative_to(args.shared / "data" / "train")
        name = f"{rel.parent.name}_{rel.stem}_{top}_{left}.png"
        save_image(img[:, top:top + 256, left:left + 256].float() / 255, out / name)
        lines.append(f"{name}: train/{rel} crop top={top} left={left} 256x256")
    (out / "SOURCES.txt").write_text("\n".join(lines) + "\n")
    print(f"wrote {len(lines)} crops to {out}")


if __name__ == "__main__":
    main()
