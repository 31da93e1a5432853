"""The FP32 baselines of an architecture, as ``benchmarks/baselines.sh`` finds them (Python side).

bmshj2018-hyperprior: the shared reference codecs (``../shared/baselines``); any other: the models
committed under ``benchmarks/models/`` (their manifests say how they were trained).
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def baseline_checkpoint(arch: str, quality: int, shared: Path) -> Path:
    """The baseline of ``arch`` at ``quality`` (exactly one must exist)."""
    if arch == "bmshj2018-hyperprior":
        return shared / "baselines" / f"{arch}-N64M96-q{quality}.pth.tar"
    found = sorted((ROOT / "benchmarks/models").glob(f"{arch}-*-q{quality}.safetensors"))
    if len(found) != 1:
        raise SystemExit(f"{arch} q{quality}: {len(found)} baselines under benchmarks/models")
    return found[0]
