"""Regenerate README.md's result sections and plots from ``benchmarks/results/*.json``.

Every table in the README between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` comes from
here; nothing is typed by hand.

    python benchmarks/report.py
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", category=DeprecationWarning)

from licq.defaults import manifest  # noqa: E402
from licq.eval import bd_psnr, bd_rate, plot_rd, read_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
ANCHOR = "bmshj2018-hyperprior"


def _replace_section(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"README.md has no <!-- {name}:start/end --> markers")
    return pattern.sub(lambda m: m.group(1) + body.rstrip() + "\n" + m.group(2), text)


def baselines_section() -> str:
    files = sorted(RESULTS.glob("baselines-*.json"))
    results = {f.stem.removeprefix("baselines-"): read_results(f) for f in files}
    anchor = results.get(ANCHOR)
    lines = [
        "| architecture | q | bpp | PSNR-RGB (dB) | MS-SSIM | encode s | decode s | FP32 bytes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arch, r in results.items():
        res, pts = r["results"], r["licq"]["points"]
        for i, p in enumerate(pts):
            lines.append(
                f"| {arch} | {p['quality']} | {res['bpp'][i]:.4f} | {res['psnr-rgb'][i]:.3f} | "
                f"{res['ms-ssim-rgb'][i]:.4f} | {res['encoding_time'][i]:.3f} | "
                f"{res['decoding_time'][i]:.3f} | {p['model_bytes']:,} |"
            )
    out = ["All 24 Kodak images, real bitstreams, 1 thread; per-image means. "
           "Files: `benchmarks/results/baselines-*.json`; plot: `benchmarks/results/"
           "rd-baselines.png`.", "", *lines, ""]
    if anchor is not None:
        out.append("Reproduction of the figures recorded with `../shared/baselines` (kodak.json), "
                   "measured − recorded:")
        out.append("")
        out.append("| q | Δ PSNR (dB) | Δ bpp (%) | Δ MS-SSIM |")
        out.append("|---|---|---|---|")
        for i, e in enumerate(manifest()["models"]):
            rec, res = e["recorded_kodak"], anchor["results"]
            out.append(
                f"| {e['quality']} | {res['psnr-rgb'][i] - rec['psnr-rgb']:+.4f} | "
                f"{100 * (res['bpp'][i] / rec['bpp'] - 1):+.3f} | "
                f"{res['ms-ssim-rgb'][i] - rec['ms-ssim-rgb']:+.5f} |"
            )
        others = [a for a in results if a != ANCHOR]
        if others:
            out += ["", f"BD-rate against the {ANCHOR} baseline (negative = fewer bits):", "",
                    "| architecture | BD-rate PSNR (%) | BD-PSNR (dB) | BD-rate MS-SSIM (%) |",
                    "|---|---|---|---|"]
            for a in others:
                r = results[a]
                out.append(f"| {a} | {bd_rate(anchor, r):+.2f} | {bd_psnr(anchor, r):+.3f} | "
                           f"{bd_rate(anchor, r, 'ms-ssim-rgb'):+.2f} |")
    plot_rd(list(results.values()), RESULTS / "rd-baselines.png",
            title="licq FP32 baselines, Kodak-24, real bitstreams")
    return "\n".join(out)


def main() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    text = _replace_section(text, "baselines", baselines_section())
    readme.write_text(text)
    print("README.md sections regenerated")


if __name__ == "__main__":
    main()
