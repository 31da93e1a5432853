"""The embedded default codec and sample images that ship inside the package.

The default model is licq's FP32 ScaleHyperprior baseline (``bmshj2018-hyperprior``, N=64, M=96,
qualities 1-4), stored as ``.safetensors`` with a manifest (sha256, recipe, recorded Kodak
figures); the sample images are three Kodak images, so ``licq demo`` runs with no data folder and
no internet.
"""

from __future__ import annotations

import json
from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
DEFAULT_ARCH = "bmshj2018-hyperprior"


def manifest() -> dict:
    return json.loads((ASSETS / "models" / "manifest.json").read_text())


def default_checkpoints() -> dict[int, Path]:
    """``quality -> .safetensors path`` of the embedded default model."""
    return {int(e["quality"]): ASSETS / "models" / e["file"] for e in manifest()["models"]}


def default_calibration_dir() -> Path:
    """Bundled calibration crops: 256x256 crops of training photos (never Kodak)."""
    return ASSETS / "calib"


def sample_images() -> list[Path]:
    return sorted((ASSETS / "images").glob("*.png"))
