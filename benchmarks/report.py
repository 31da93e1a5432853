"""Regenerate docs/results.md, the README's summary table and the plots from benchmarks/results.

Every table of docs/results.md and the README's summary (between ``<!-- summary:start -->`` and
``<!-- summary:end -->``) comes from the results files; nothing is typed by hand.

    python benchmarks/report.py           # write them
    python benchmarks/report.py --check   # exit 1 if the committed files are stale (a test runs it)
"""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

warnings.filterwarnings("ignore", category=DeprecationWarning)
# the tables mark those BD-rates (‡, bd_overlap) instead of the package warning on every call
warnings.filterwarnings("ignore", message="Insufficient curve overlap")

from licq.defaults import manifest  # noqa: E402
from licq.eval import (  # noqa: E402
    bd_overlap,
    bd_psnr,
    bd_rate,
    plot_bit_heatmap,
    plot_rd,
    read_results,
)

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
    out = ["All 24 Kodak images, real bitstreams, 1 thread; per-image means. Encode/decode times "
           "are wall times on the 2-core machine and were partly measured while other benchmark "
           "jobs ran on the other core: compare them only within one file. "
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
            out += ["", f"BD-rate against the {ANCHOR} baseline (negative = fewer bits); overlap = "
                    "share of the tested curve's log-bpp range inside the anchor's (where it is small, "
                    "BD figures extrapolate); Δ PSNR at equal bpp = each point's PSNR minus the "
                    "anchor's, interpolated linearly in log-bpp (points outside the anchor's range: "
                    "—):", "",
                    "| architecture | BD-rate PSNR (%) | BD-PSNR (dB) | BD-rate MS-SSIM (%) | "
                    "overlap | Δ PSNR at equal bpp, q1…q4 (dB) |", "|---|---|---|---|---|---|"]
            for a in others:
                r = results[a]
                deltas = " / ".join("—" if d is None else f"{d:+.2f}"
                                    for d in _delta_at_equal_rate(anchor, r))
                out.append(f"| {a} | {bd_rate(anchor, r):+.2f} | {bd_psnr(anchor, r):+.3f} | "
                           f"{bd_rate(anchor, r, 'ms-ssim-rgb'):+.2f} | "
                           f"{100 * _overlap(anchor, r):.0f} % | {deltas} |")
    plot_rd(list(results.values()), RESULTS / "rd-baselines.png",
            title="licq FP32 baselines, Kodak-24, real bitstreams")
    return "\n".join(out)


def _delta_at_equal_rate(anchor: dict, r: dict) -> list[float | None]:
    """Each point's PSNR minus the anchor curve's at the same bpp (linear in log-bpp)."""
    import numpy as np

    ab = np.log(np.asarray(anchor["results"]["bpp"]))
    ap = np.asarray(anchor["results"]["psnr-rgb"])
    order = np.argsort(ab)
    out: list[float | None] = []
    for bpp, psnr in zip(r["results"]["bpp"], r["results"]["psnr-rgb"], strict=True):
        x = float(np.log(bpp))
        inside = ab.min() <= x <= ab.max()
        out.append(float(psnr - np.interp(x, ab[order], ap[order])) if inside else None)
    return out


def _overlap(anchor: dict, r: dict) -> float:
    import math

    a = [math.log(x) for x in anchor["results"]["bpp"]]
    b = [math.log(x) for x in r["results"]["bpp"]]
    inside = min(max(a), max(b)) - max(min(a), min(b))
    return max(0.0, inside) / (max(b) - min(b))


def _anchor(arch: str) -> dict | None:
    f = RESULTS / f"baselines-{arch}.json"
    return read_results(f) if f.is_file() else None


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def _sizes(r: dict) -> list[dict]:
    return [p["size"] for p in r["licq"]["points"]]


MIN_OVERLAP = 0.75  # the bjontegaard package's threshold for "Insufficient curve overlap"
OVERLAP_NOTE = (f"‡ The two curves share less than {MIN_OVERLAP:.0%} of their joint quality range "
                "(`licq.eval.bd_overlap`; the bjontegaard package warns there): the BD-rate "
                "averages over the shared range only.")


def _bd_with_value(anchor: dict, r: dict, metric: str = "psnr-rgb") -> tuple[str, float | None]:
    """The BD-rate of ``r`` against ``anchor`` as table text (‡ where the curves overlap too
    little, ``n/a (why)`` where they cannot be compared) and as a number (None there)."""
    try:
        value = bd_rate(anchor, r, metric)
    except Exception as e:  # noqa: BLE001 - a curve that cannot be compared is reported as such
        return f"n/a ({str(e).split(': ')[-1]})", None
    return f"{value:+.2f}" + ("‡" if bd_overlap(anchor, r, metric) < MIN_OVERLAP else ""), value


def _bd(anchor: dict, r: dict, metric: str = "psnr-rgb") -> str:
    return _bd_with_value(anchor, r, metric)[0]


def _delta(anchor: dict, r: dict) -> str:
    """Mean change of PSNR and of bpp per quality point (same qualities): readable where BD fails."""
    a, b = anchor["results"], r["results"]
    dp = _mean([y - x for x, y in zip(a["psnr-rgb"], b["psnr-rgb"], strict=True)])
    db = _mean([100 * (y / x - 1) for x, y in zip(a["bpp"], b["bpp"], strict=True)])
    return f"{dp:+.3f} | {db:+.2f}"


# -ar-latent-fix: re-run after the fix (LATENT_FIX) of the joint autoregressive models' decoded-latent
# grid (licq.ptq.calibrate.forward_latents_are_bitstream_latents)
PTQ_ORDER = ["w8a8", "w8a8-ar-latent-fix", "w6a8", "w4a8", "w8-wonly", "w6-wonly", "w4-wonly"]


def ptq_section() -> str:
    out = []
    archs = {f.stem.removeprefix("ptq-").removesuffix(f"-{s}")
             for f in RESULTS.glob("ptq-*.json") for s in PTQ_ORDER if f.stem.endswith(f"-{s}")}
    for arch in sorted(archs):
        anchor = _anchor(arch)
        if anchor is None:
            continue
        out += [f"**{arch}** (anchor: `baselines-{arch}.json`)", "",
                "| setting | BD-rate PSNR (%) | BD-rate MS-SSIM (%) | mean Δ PSNR (dB) | mean Δ bpp (%) | "
                "model ratio | weight ratio | quantized-layers ratio | calibration s / model |",
                "|---|---|---|---|---|---|---|---|---|"]
        for s in PTQ_ORDER:
            f = RESULTS / f"ptq-{arch}-{s}.json"
            if not f.is_file():
                continue
            r = read_results(f)
            sz = _sizes(r)
            calib = _mean(r["licq"]["calibration_seconds"])
            out.append(
                f"| {s} | {_bd(anchor, r)} | {_bd(anchor, r, 'ms-ssim-rgb')} | {_delta(anchor, r)} | "
                f"{_mean([x['ratio'] for x in sz]):.3f} | {_mean([x['weight_ratio'] for x in sz]):.3f} | "
                f"{_mean([x['quantized_layers_ratio'] for x in sz]):.3f} | "
                f"{f'{calib:.1f}' if calib else '— (weight-only)'} |")
        out.append("")
        out += _act_floor_rows(arch, anchor)
        out += _reconstruction_rows(arch, anchor)
        out += _equalization_rows(arch, anchor)
        out += _floor_probe_rows(arch)
    return "\n".join(out) if out else "No PTQ results yet."


#: issue 29's targets for `--method rdo` (BD-rate PSNR % against the FP32 baseline, minutes per
#: model on 2 cores): W8A8, FMPQ 4x / 6x / 8x
RDO_TARGETS = {"bmshj2018-hyperprior": ((0.5, 1.0, 3.0, 10.0), 10),
               "mbt2018-mean": ((0.5, 1.0, 3.0, 10.0), 10),
               "cheng2020-anchor": ((1.0, 1.5, 4.0, 12.0), 30)}


def _rdo_target(arch: str, setting: str) -> float | None:
    goals = RDO_TARGETS.get(arch)
    if goals is None:
        return None
    if setting.startswith("w8a8"):
        return goals[0][0]
    m = re.match(r"fmpq-(\d)x", setting)
    return {"4": goals[0][1], "6": goals[0][2], "8": goals[0][3]}.get(m.group(1)) if m else None


def _reconstruction_rows(arch: str, anchor: dict) -> list[str]:
    """``run_ptq.sh`` with ``EXTRA="--method rdo" SUFFIX=-rdo``: each setting reconstructed
    (learned rounding and activation steps, licq.ptq.reconstruct), beside its range-only PTQ."""
    rows, bars = [], []
    pre_fallback = False  # a row run before the fallback existed (marked †)
    for f in sorted(RESULTS.glob(f"ptq-{arch}-*-rdo.json"), key=_rdo_order):
        setting = f.stem.removeprefix(f"ptq-{arch}-").removesuffix("-rdo")
        plain = _range_only(arch, setting)
        plain_txt, plain_value = (_bd_with_value(anchor, read_results(plain)) if plain
                                  else ("—", None))
        r = read_results(f)
        value_txt, value = _bd_with_value(anchor, r)
        goal = _rdo_target(arch, setting)
        bars.append((setting, plain_value, value, goal))
        minutes = max(r["licq"]["ptq_seconds"]) / 60
        threads = r["licq"].get("torch_threads", "?")
        budget = RDO_TARGETS.get(arch, ((), None))[1]
        kept = [" + ".join(s for s, k in (("bias corr.", p["reconstruction"]["bias_correction_kept"]),
                                            ("e2e", p["reconstruction"]["e2e_kept"])) if k)
                if p["reconstruction"].get("kept", True) else "calibrated model kept"
                for p in r["licq"]["points"]]
        met = ("—" if goal is None else "**not met**" if value is None or value > goal
               else "met")
        dagger = "" if all("kept" in p["reconstruction"] for p in r["licq"]["points"]) else " †"
        pre_fallback |= bool(dagger)
        rows.append(f"| {setting}{dagger} | {plain_txt} | "
                    f"{value_txt} | {_bd(anchor, r, 'ms-ssim-rgb')} | "
                    f"{'—' if goal is None else f'≤ {goal:g}'} ({met}) | "
                    f"{_mean([x['ratio'] for x in _sizes(r)]):.2f} | {minutes:.1f}"
                    f"{'' if budget is None or minutes <= budget else ' (over budget)'} "
                    f"({threads} thread{'' if threads == 1 else 's'}) | "
                    f"{', '.join(k or 'none' for k in kept)} |")
    if not rows:
        return []
    plot = _plot_rdo(arch, bars)
    zeta_note = (". `fmpq-<R>x` is FMPQ's DP allocation from ζ measured with range-only PTQ "
                 "(`run_fmpq.py`); `fmpq-<R>x-rdo-zeta` the DP allocation at the same target "
                 "from ζ measured after reconstruction (`licq sensitivity --ptq rdo`, "
                 f"`benchmarks/run_rdo_zeta.sh {arch}`)"
                 if any(b[0].endswith("-rdo-zeta") for b in bars) else "")
    return ["RD-optimised reconstruction (`--method rdo`: AdaRound rounding and activation steps "
            "learned block by block on the RD-gradient-weighted error, bias correction and an "
            "end-to-end RD stage each kept only where they lower the RD loss of 8 held-out "
            "training crops, and the whole reconstruction only where it ends below the "
            "calibrated model's (else `calibrated model kept`" + (
                "; † a row run before this fallback existed, which keeps every reconstruction"
                if pre_fallback else "") + "); 32 calibration crops, never "
            "Kodak; no weight is trained; "
            f"`EXTRA=\"--method rdo\" SUFFIX=-rdo ONLY=<setting> run_ptq.sh {arch}` at 1 "
            "thread, or the `licq ptq` command the file records), beside "
            "the range-only PTQ of the same configuration" + zeta_note + ":", "",
            "| setting | BD-rate PSNR (%) range only | with `--method rdo` | its BD-rate MS-SSIM "
            "(%) | target (%) | model ratio | minutes / model (slowest of 4) | stages "
            "kept (q1–q4) |",
            "|---|---|---|---|---|---|---|---|", *rows, "", f"![rdo vs range-only PTQ]"
            f"(benchmarks/results/{plot.name})", ""]


def _range_only(arch: str, setting: str) -> Path | None:
    """The range-only PTQ file a variant of ``setting`` is shown beside (for the joint
    autoregressive models, the one run after the decoded-latent fix where it exists)."""
    return ((arch in _AR_FIXED and _ptq_counterpart(arch, setting + _FIX_SUFFIX))
            or _ptq_counterpart(arch, setting))


def _rdo_order(f: Path) -> tuple[int, str]:
    """w8a8 first, then the FMPQ ratios in increasing order."""
    m = re.search(r"fmpq-(\d+)x", f.stem)
    return (int(m.group(1)) if m else 0, f.stem)


def _plot_rdo(arch: str, bars: list[tuple[str, float | None, float | None, float | None]]
              ) -> Path:
    """Grouped bars: BD-rate of range-only PTQ and of `--method rdo` per setting, with the
    issue's target as a tick (log-scaled y: the settings span two decades)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    xs = range(len(bars))
    for i, (_, plain, rdo, goal) in enumerate(bars):
        if plain is not None:
            ax.bar(i - 0.2, plain, 0.4, color="tab:gray", label="range only" if i == 0 else None)
            ax.annotate(f"{plain:+.1f}", (i - 0.2, plain), ha="center", va="bottom", fontsize=7)
        if rdo is not None:
            ax.bar(i + 0.2, rdo, 0.4, color="tab:blue", label="--method rdo" if i == 0 else None)
            ax.annotate(f"{rdo:+.1f}", (i + 0.2, rdo), ha="center", va="bottom", fontsize=7)
        if goal is not None:
            ax.hlines(goal, i - 0.45, i + 0.45, colors="tab:red",
                      label="target" if i == 0 else None)
    ax.set_yscale("symlog", linthresh=1.0)
    top = max([v for b in bars for v in b[1:] if v is not None] + [1.0])
    ticks = [t for t in (0, 0.5, 1, 2, 3, 5, 10, 20, 50, 100, 200) if t <= 1.5 * top]
    ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
    ax.set_xticks(list(xs), [b[0] for b in bars], fontsize=8)
    ax.axhline(0, color="black", lw=0.5)
    return _save_bd_plot(fig, ax, "setting", f"{arch}: PTQ on Kodak-24, real bitstreams",
                         f"ptq-rdo-{arch}.png")


def _alpha(point: dict) -> str:
    a = point.get("equalization", {}).get("alpha")
    return "none" if a is None else f"{a:g}"


def _equalization_rows(arch: str, anchor: dict) -> list[str]:
    """``run_ptq.sh`` with ``EXTRA="--equalize auto" SUFFIX=-eq-auto``: each setting PTQ'd after
    activation-range equalization, beside the same setting without it."""
    rows = []
    for f in sorted(RESULTS.glob(f"ptq-{arch}-*-eq-auto.json")):
        setting = f.stem.removeprefix(f"ptq-{arch}-").removesuffix("-eq-auto")
        plain = _range_only(arch, setting)
        r = read_results(f)
        alphas = ", ".join(f"q{p.get('quality')}: {_alpha(p)}" for p in r["licq"]["points"])
        rows.append(f"| {setting} | {_bd(anchor, read_results(plain)) if plain else '—'} | "
                    f"{_bd(anchor, r)} | {alphas} |")
    if not rows:
        return []
    return ["With activation-range equalization first (`--equalize auto`: α per quality chosen "
            "by the RD loss on 16 held-out training crops, never Kodak; `EXTRA=\"--equalize "
            f"auto\" SUFFIX=-eq-auto ONLY=<setting> run_ptq.sh {arch}`), same calibration:", "",
            "| setting | BD-rate PSNR (%) without | with `--equalize auto` | α chosen |",
            "|---|---|---|---|", *rows, ""]


def _floor_probe_rows(arch: str) -> list[str]:
    """``benchmarks/floor_probe.py``'s summary: the same question as act_floor.sh, asked on
    training-set crops (BD-rates stored in the summary, each against FP32 on those crops)."""
    import json

    f = RESULTS / f"floor-probe-{arch}.json"
    if not f.is_file():
        return []
    d = json.loads(f.read_text())
    c = d["crops"]
    rows = [f"The same on {c['n']} training-set crops of {c['size']}² (seed {c['seed']}; not "
            f"Kodak, so a QAT configuration may be chosen from it), BD-rate against the FP32 "
            f"baselines on those crops (`benchmarks/floor_probe.py --arch {arch}`, "
            f"`{f.name}`):", "",
            "| variant | BD-rate PSNR (%) |", "|---|---|"]
    for name, v in d["variants"].items():
        rows.append(f"| {name} | {v['bd_rate_psnr']:+.2f} |")
    return [*rows, ""]


def _act_floor_rows(arch: str, anchor: dict) -> list[str]:
    """``benchmarks/act_floor.sh``'s runs: W8A8 with one group's (or layer's) input activations
    left in float or at other bits, as a small table after the uniform PTQ one."""
    runs = []
    for f in RESULTS.glob(f"ptq-{arch}-w8a8-*-*.json"):
        m = re.fullmatch(rf"ptq-{re.escape(arch)}-w8a8-(float|a\d+)-(.+)", f.stem)
        if m:
            runs.append((m.group(2), m.group(1), f))
    if not runs:
        return []
    rows = [f"W8A8 with the input activations of one group or layer in float or at other bits "
            f"(`benchmarks/act_floor.sh {arch}`; all other layers as in w8a8):", "",
            "| layers | their input activations | BD-rate PSNR (%) | BD-rate MS-SSIM (%) |",
            "|---|---|---|---|"]
    for layers, bits, f in sorted(runs):
        r = read_results(f)
        rows.append(f"| {layers} | {bits if bits == 'float' else bits[1:] + ' bit'} | "
                    f"{_bd(anchor, r)} | {_bd(anchor, r, 'ms-ssim-rgb')} |")
    return [*rows, ""]


def _sens_crops(arch: str) -> str:
    """The training-crop counts the sensitivities of ``arch`` were measured on (one per file)."""
    import json

    n = sorted({json.loads(f.read_text())["settings"]["num_crops"]
                for f in RESULTS.glob(f"sensitivity-{arch}-q*.json")})
    return "/".join(map(str, n)) or "?"


def fmpq_section() -> str:
    import json

    out = []
    for cost_file in sorted(RESULTS.glob("search-cost-*.json")):
        arch = cost_file.stem.removeprefix("search-cost-")
        anchor = _anchor(arch)
        if anchor is None:
            continue
        out += [f"**{arch}**, PTQ (A8), ratios on the weight basis (every parameter), Kodak-24:", "",
                "| target | method | weight ratio | model ratio | BD-rate PSNR (%) | predicted Σζ | "
                "measured ζ | additivity gap |", "|---|---|---|---|---|---|---|---|"]
        targets = sorted({float(f.stem.rsplit("-", 1)[1][:-1])
                          for f in RESULTS.glob(f"fmpq-{arch}-*-*x.json")})
        for t in targets:
            for m in ("uniform", "adaptive", "dp", "dp-monotone"):
                f = RESULTS / f"fmpq-{arch}-{m}-{t:g}x.json"
                if not f.is_file():
                    continue
                r = read_results(f)
                pts = r["licq"]["points"]
                sz = _sizes(r)
                pred = _mean([p["predicted_zeta_sum"] for p in pts])
                meas = _mean([p["measured_zeta"] for p in pts])
                label = m + (f" (w{pts[0]['uniform_bits']})" if m == "uniform" else "")
                if m == "adaptive" and not all(p.get("adaptive_reached_target", True) for p in pts):
                    label += " †"
                out.append(f"| {t:g}x | {label} | {_mean([x['weight_ratio'] for x in sz]):.3f} | "
                           f"{_mean([x['ratio'] for x in sz]):.3f} | {_bd(anchor, r)} | {pred:+.4f} | "
                           f"{meas:+.4f} | {meas - pred:+.4f} |")
        c = json.loads(cost_file.read_text())
        missing = [m for m in ("uniform", "adaptive", "dp")
                   if not list(RESULTS.glob(f"fmpq-{arch}-{m}-*x.json"))]
        if missing:
            out += ["", f"Not evaluated on Kodak for {arch}: {', '.join(missing)} (`run_fmpq.py "
                    "--methods`; their allocations are searched and their ζ measured, see the "
                    "plots)."]
        if list(RESULTS.glob(f"fmpq-{arch}-dp-monotone-*x.json")):
            out += ["", "dp-monotone: the DP on ζ̃_n(b) = max(0, max over b' ≥ b of ζ_n(b')) "
                    "(quantizing never helps, fewer bits never cost less), taking the largest "
                    "allocation that fits among equal Σζ̃; its predicted Σζ is on the raw ζ, like "
                    "the other rows."]
        out += ["", "† the adaptive β search could not land within ±0.01 of the target for at least "
                "one quality (the threshold rule reaches only a staircase of sizes); the closest "
                "allocation found is evaluated.", "",
                f"Search cost (`{cost_file.name}`, mean over qualities and targets): sensitivity "
                f"{c['sensitivity_seconds']:.0f} s per model ({c['sensitivity_threads']} thread, "
                f"7 bit-widths × all layers, {_sens_crops(arch)} training crops); adaptive "
                f"{c['adaptive']['iterations']:.1f} iterations, "
                f"{1000 * c['adaptive']['seconds']:.1f} ms; exhaustive "
                f"{c['exhaustive']['evaluations']:.0f} threshold allocations, "
                f"{1000 * c['exhaustive']['seconds']:.1f} ms; DP {1000 * c['dp']['seconds']:.1f} ms; "
                f"full enumeration of a 4-layer subset "
                f"{c['exhaustive']['enumeration_subset'][0]['evaluations']} combinations, "
                f"{c['exhaustive']['enumeration_subset'][0]['seconds']:.2f} s.", "",
                f"Plots: `benchmarks/results/fmpq-{arch}-sensitivity.png`, `fmpq-{arch}-bits.png`, "
                f"`fmpq-{arch}-pareto.png`.", ""]
    return "\n".join(out) if out else "No FMPQ results yet."


QAT_MAIN = [
    "w8a8", "w8a8-eq-auto", "w8a8-latent-mixed", "w8a8-dpa-slr0.01-latent-mixed",
    "w8a8-dpa-slr0.001-latent-mixed", "w8a8-a10-g_s",
    "fmpq-4x", "fmpq-4x-dp-monotone", "fmpq-4x-latent-mixed", "fmpq-4x-dp-monotone-latent-mixed",
    "fmpq-4x-dp-monotone-dpa-slr0.01-latent-mixed", "fmpq-4x-dp-monotone-dpa-slr0.001-latent-mixed",
    "fmpq-6x", "fmpq-6x-dp-monotone", "fmpq-6x-eq-auto", "fmpq-6x-latent-mixed",
    "fmpq-6x-dpa-slr0.01-latent-mixed", "fmpq-6x-dpa-slr0.001-latent-mixed",
    "fmpq-8x", "fmpq-8x-dp-monotone", "fmpq-8x-eq-auto", "fmpq-8x-latent-mixed",
    "fmpq-8x-dpa-slr0.01-latent-mixed", "fmpq-8x-dpa-slr0.001-latent-mixed", "fmpq-8x-a10-g_s",
    "fmpq-4x-dp-monotone-init-rdo-ptq", "fmpq-6x-init-rdo-ptq", "fmpq-8x-init-rdo-ptq"]
# BD-rate (%) goals of the issue; they are about model size, which activation bits do not change
QAT_GOALS = {"fmpq-4x": 0.5, "fmpq-6x": 2.0, "fmpq-8x": 5.0, "fmpq-8x-a10-g_s": 5.0,
             "fmpq-6x-eq-auto": 2.0, "fmpq-8x-eq-auto": 5.0}


# training latents other than CompressAI's noise (run_qat.sh LATENT=…): the same bits, so the same
# goal and the same PTQ counterpart; the control is the FP32 loop with the same latents
_LATENT_SUFFIX = "-latent-mixed"
# trained from the RD-optimised reconstruction (run_qat.sh INIT=rdo-ptq): the same bits
_INIT_SUFFIX = "-init-rdo-ptq"
# learned quantization parameters other than the preset's (run_qat.sh QPARAMS=dpa, SCALE_LR=…):
# the same bits
_QPARAMS_SUFFIX = r"(-dpa)?(-slr[0-9.e+-]+)?"


def _same_bits(setting: str) -> str:
    """A main setting without the training options that leave its bits alone (``-dpa``,
    ``-slr<lr>``, ``-latent-mixed``): ``fmpq-6x-dpa-slr0.001-latent-mixed`` -> ``fmpq-6x``."""
    setting = setting.removesuffix(_INIT_SUFFIX).removesuffix(_LATENT_SUFFIX)
    return re.sub(_QPARAMS_SUFFIX + "$", "", setting, count=1)


def _goal(base: str) -> float | None:
    """The issue's goal for a main setting; a -dp-monotone (or -dpa, -latent-mixed) row has its
    ratio's goal."""
    return QAT_GOALS.get(_same_bits(base).removesuffix("-dp-monotone"))


# a row name's budget/schedule suffix: -s1200, -s6000-decay4800, -s2400-cosine1e-4
_BUDGET_SUFFIX = r"-s\d+(?:-decay\d+|-cosine[0-9.e+-]+)?"
# another training seed (run_qat.sh SEED=N), after the budget and before -ar-latent-fix
_SEED_SUFFIX = r"-seed\d+"


# a row re-run after the fix of the joint autoregressive models' decoded-latent grid
_FIX_SUFFIX = "-ar-latent-fix"


def _unseeded(setting: str) -> str:
    """A row name without its ``-ar-latent-fix`` and ``-seed<N>`` suffixes."""
    return re.sub(_SEED_SUFFIX + "$", "", setting.removesuffix(_FIX_SUFFIX))


def _budget_base(setting: str) -> str:
    """``fmpq-6x-s1200`` (or ``fmpq-8x-s6000-decay4800``, ``fmpq-8x-s2400-cosine1e-4``, or any
    of these ending in ``-ar-latent-fix``) -> ``fmpq-6x`` (a main setting trained for another
    step budget or lr schedule, or after the fix)."""
    core = _unseeded(setting)
    m = re.fullmatch(rf"(.+){_BUDGET_SUFFIX}", core)
    base = m.group(1) if m else core
    return base if base in QAT_MAIN else setting


def _control_prefix(arch: str) -> str:
    return "finetune-fp32-control" + ("" if arch == ANCHOR else f"-{arch}")


def _control_for(arch: str, setting: str) -> Path | None:
    """The FP32 fine-tuning control trained with the same loop, steps and lr schedule as the
    row (``fp32_finetune_control.sh``): ``finetune-fp32-control.json`` for the anchor's 300-step
    rows, ``finetune-fp32-control-s1200-cosine1e-4.json`` for ``…-s1200-cosine1e-4``,
    ``finetune-fp32-control-<arch>….json`` for another architecture; None if there is none."""
    core = _unseeded(setting)  # FP32: no fix, one control for every seed
    m = re.search(rf"{_BUDGET_SUFFIX}$", core)
    latent = _LATENT_SUFFIX if _LATENT_SUFFIX in core else ""
    f = RESULTS / f"{_control_prefix(arch)}{m.group(0) if m else ''}{latent}.json"
    return f if f.is_file() else None


def _controls(arch: str) -> list[str]:
    """The README lines naming each FP32 control of ``arch`` and its BD-rate."""
    out = []
    for control in sorted(RESULTS.glob(f"{_control_prefix(arch)}*.json")):
        budget = control.stem.removeprefix(_control_prefix(arch))
        if not re.fullmatch(rf"(-s\d+\S*)?({_LATENT_SUFFIX})?", budget):
            continue  # another architecture's control
        budget = budget.lstrip("-")
        what = (f"the loop of the `{budget}` rows" if budget
                else "the same loop, steps and learning rate as the 300-step rows")
        out += [f"Control (`{control.name}`): {what} on the FP32 models, no "
                f"quantization: BD-rate {_bd(_anchor(arch), read_results(control))} %.", ""]
    return out


def _steps_in_name(setting: str) -> int:
    m = re.search(r"-s(\d+)", setting)
    return int(m.group(1)) if m else 0


def _ptq_counterpart(arch: str, setting: str) -> Path | None:
    if setting.endswith(_INIT_SUFFIX):  # its starting point: the reconstructed PTQ model
        f = RESULTS / f"ptq-{arch}-{setting.removesuffix(_INIT_SUFFIX)}-rdo.json"
        return f if f.is_file() else None
    fix = _FIX_SUFFIX if setting.endswith(_FIX_SUFFIX) else ""  # its PTQ after the fix too
    setting = _same_bits(_budget_base(setting))
    # w8a8-a10-g_s: act_floor.sh's PTQ; fmpq-8x-a10-g_s: run_ptq.sh ONLY=fmpq-8x-a10-g_s
    # …-eq-auto: run_ptq.sh EXTRA="--equalize auto" SUFFIX=-eq-auto ONLY=<setting>
    # fmpq-<R>x-rdo-zeta: run_rdo_zeta.sh's range-only PTQ of its allocation
    if (setting.split("-")[0] == "w8a8" or re.fullmatch(r"fmpq-\d+x-(a\d+-g_s|rdo-zeta)", setting)
            or setting.endswith("-eq-auto")):
        f = RESULTS / f"ptq-{arch}-{setting}{fix}.json"
    elif m := re.fullmatch(r"fmpq-(\d+x)(-dp-monotone)?", setting):
        f = RESULTS / f"fmpq-{arch}-{'dp-monotone' if m.group(2) else 'dp'}-{m.group(1)}{fix}.json"
        if not f.is_file():  # run_ptq.sh ONLY=fmpq-<R>x…: the same PTQ re-run (after the fix)
            f = RESULTS / f"ptq-{arch}-{setting}{fix}.json"
    else:
        return None
    return f if f.is_file() else None


def _spec(r: dict) -> str:
    q = r["licq"]["qat"]["spec"]
    clip = f"leaky {q['leaky_slope']:g}" if q["clip"] == "leaky" else "hard"
    rnd = f"dgm β={q['dgm_beta']:g}" if q["rounding"] == "dgm" else "ste"
    t = r["licq"].get("train", {})
    lr = f"lr {t['lr']:g}" if "lr" in t else ""
    if t.get("lr_schedule") == "cosine":
        start = t.get("lr_decay_start", 0)
        lr += " cosine" + (f" from step {start}" if start else "")
    slr = r["licq"]["qat"].get("scale_lr", 1e-4)
    params = q["params"] + (f" (scale lr {slr:g})" if q["params"] != "fixed" and slr != 1e-4 else "")
    return f"{r['licq']['loss']}, {clip} clip, {rnd}, {params}" + (f", {lr}" if lr else "")


def qat_section() -> str:
    out = []
    for arch in sorted(f.stem.removeprefix("baselines-") for f in RESULTS.glob("baselines-*.json")):
        anchor = _anchor(arch)
        if anchor is None or not list(RESULTS.glob(f"qat-{arch}-*.json")):
            continue
        head = ["| setting | QAT: loss, clip, rounding, params | BD-rate PSNR (%) QAT | PTQ | "
                "goal (judged vs control) | QAT vs its FP32 control (%) | weight ratio | "
                "steps / model | train s / model | code |", "|---|---|---|---|---|---|---|---|---|---|"]
        main_rows, abl_rows = [], []
        series: dict[str, list[tuple[float, float, str]]] = {}  # main setting -> (steps, BD, name)
        for f in sorted(RESULTS.glob(f"qat-{arch}-*.json")):
            if f.stem.startswith("qat-probe"):
                continue
            setting = f.stem.removeprefix(f"qat-{arch}-")
            base = _budget_base(setting)
            r = read_results(f)
            ptq = _ptq_counterpart(arch, setting)
            ptq_bd = _bd(anchor, read_results(ptq)) if ptq else "—"
            sz = _sizes(r)
            bd_txt, bd = _bd_with_value(anchor, r)
            if base in QAT_MAIN and bd is not None and not setting.endswith(_FIX_SUFFIX):
                series.setdefault(base, []).append((_mean(r["licq"]["steps"]), bd, setting))
            goal = _goal(base)
            control = _control_for(arch, setting)
            # the goal is judged against the control where there is one
            vs_control, judged = (_bd_with_value(read_results(control), r) if control
                                  else ("—", bd))
            if goal is None:
                goal_txt = "—"
            elif judged is None:
                goal_txt = f"≤ {goal:g}: n/a"
            elif control is None:
                goal_txt = f"≤ {goal:g}: not judged, no control (vs baseline: " + (
                    "within)" if judged <= goal else "above)")
            else:
                goal_txt = f"≤ {goal:g}: {'met' if judged <= goal else 'NOT met'}"
            row = (f"| {setting} | {_spec(r)} | {bd_txt} | {ptq_bd} | {goal_txt} | "
                   f"{vs_control} | {_mean([x['weight_ratio'] for x in sz]):.3f} | "
                   f"{_mean(r['licq']['steps']):.0f} | {_mean(r['licq']['train_seconds']):.0f} | "
                   f"{_train_code(r)} |")
            (main_rows if base in QAT_MAIN else abl_rows).append((setting, row))
        main_rows.sort(key=lambda t: (QAT_MAIN.index(_budget_base(t[0])), _steps_in_name(t[0]),
                                      t[0]))
        plotted = _plot_qat_budget(arch, anchor, series)
        names = [n for n, _ in main_rows]
        what = ["PTQ column: the same bits without training, from `ptq-*-w8a8*.json` / "
                "`fmpq-*-dp-*.json`"]
        if "w8a8-a10-g_s" in names:
            what.append("`w8a8-a10-g_s`: W8A8 with g_s's input activations at 10 bit, "
                        "`run_qat.sh a10-gs`")
        if any("-dp-monotone" in n for n in names):
            what.append("`fmpq-<R>x-dp-monotone…`: trained from the dp-monotone allocation "
                        "(`ALLOC=dp-monotone run_qat.sh main`, or `long` for the `-s<steps>` "
                        "rows)")
        if any(n.endswith(_FIX_SUFFIX) for n in names):
            what.append("`…-ar-latent-fix`: trained and evaluated after the fix of the "
                        "decoded-latent grid (`NAME_SFX=-ar-latent-fix run_qat.sh …`; the other "
                        "rows of a joint autoregressive model predate it; the PTQ column of these rows: "
                        "`ptq-<arch>-<setting>.json`, `SUFFIX=-ar-latent-fix ONLY=… run_ptq.sh`)")
        if any(re.search(_SEED_SUFFIX, n) for n in names):
            what.append("`…-seed<N>`: the same run with training seed N instead of 0 (crops and "
                        "noise; same calibration), `SEED=N run_qat.sh …`")
        if any("-eq-auto" in n for n in names):
            what.append("`…-eq-auto`: activation-range equalization first (`--equalize auto`, "
                        "`EQ=auto run_qat.sh …`; see the PTQ section)")
        if any("-dpa-" in n for n in names if _budget_base(n) in QAT_MAIN):
            what.append("`…-dpa-…`: DynaQuant's DPA (learnable per-channel scale and zero point, "
                        "for weights and input activations) instead of the preset's LSQ scales, "
                        "`QPARAMS=dpa run_qat.sh …`; `-slr<lr>`: that Adam lr of the scales "
                        "(default 1e-4; `SCALE_LR=<lr>`)")
        if any(_LATENT_SUFFIX in n for n in names):
            what.append("`…-latent-mixed`: trained with `--latent-rounding mixed` (rate from the "
                        "noisy latent, synthesis fed the rounded one), `LATENT=mixed run_qat.sh …`; "
                        "its FP32 control: the same loop with the same latents")
        if any(n.endswith(_INIT_SUFFIX) for n in names):
            what.append("`…-init-rdo-ptq`: trained from the RD-optimised reconstruction "
                        "(`--init rdo-ptq`, `INIT=rdo-ptq run_qat.sh main …`); its PTQ column is "
                        "that reconstruction (`ptq-<arch>-<setting>-rdo.json`)")
        if any(n.startswith("fmpq-8x-a10-g_s") for n in names):
            what.append("`fmpq-8x-a10-g_s-…`: the 8× allocation's weights with g_s's input "
                        "activations at 10 bit, `A_GS=10 run_qat.sh long 8x`")
        out += [f"**{arch}** (anchor `baselines-{arch}.json`; {'; '.join(what)})", "", *head,
                *[r for _, r in main_rows], ""]
        if plotted:
            out += [f"BD-rate against training steps: `benchmarks/results/{plotted.name}`.", ""]
        if abl_rows:
            out += ["Ablations (each differs from `fmpq-6x` in one switch; same steps and data):",
                    "", *head, *[r for _, r in abl_rows], ""]
        out += _controls(arch)
    if not out:
        return "No QAT results yet."
    if any(line.startswith("Control (") for line in out):
        out += ["The baselines are not converged, so the fine-tuning loop alone moves their "
                "curve; the column “QAT vs its FP32 control” is the row's BD-rate against the "
                "control trained with the same loop, steps and lr schedule (— where none was "
                "trained): the loss due to quantization, without the recipe's own gain. The goal "
                "column is the issue's target; a goal counts as met only against the control "
                "(the baselines are not converged).", ""]
    out += [f"Code (every table): the commit that trained the row; “pre-fix” rows were trained "
            f"before {LATENT_FIX} (latent quantizers rounded the noisy training latents again, "
            "see above): compare them only with each other.", ""]
    out += ["Training (every table): `benchmarks/run_qat.sh` (batch 8, 128 px crops of "
            "../shared/data/train, weight lr as in the row (constant unless it says cosine), scale "
            "lr 1e-4 (scaled alike), 1 CPU thread, calibration on 32 training crops); evaluation: "
            "Kodak-24, real bitstreams. Budget: 300 steps per "
            "model (`-sN` rows: N steps per model, `run_qat.sh long`; `-decayM`: the constant-lr "
            "run of M steps continued with a cosine decay to N, `run_qat.sh decay`); see the "
            "controls for what the loop alone does.", ""]
    return "\n".join(out)


def _plot_qat_budget(arch: str, anchor: dict,
                     series: dict[str, list[tuple[float, float, str]]]) -> Path | None:
    """BD-rate vs steps per model of each main QAT setting (``series``: setting -> (steps,
    BD-rate, row name); constant lr: lines, other schedules: markers), PTQ and the goal as
    horizontal lines; -> ``qat-<arch>-steps.png``."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not any(len(v) > 1 for v in series.values()):
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, (base, pts) in enumerate(sorted(series.items(), key=lambda t: QAT_MAIN.index(t[0]))):
        color = f"C{i}"
        const = sorted((s, b) for s, b, name in pts if "-cosine" not in name and "-decay" not in name)
        if const:
            ax.plot(*zip(*const, strict=True), "o-", color=color, label=f"{base} (constant lr)")
        for s_, b, name in pts:
            if "-cosine" in name or "-decay" in name:
                ax.plot(s_, b, "*" if "-cosine" in name else "s", color=color, ms=9,
                        label=name)
        goal = _goal(base)
        if goal is not None:
            ax.axhline(goal, color=color, ls="--", lw=0.8)
        ptq = _ptq_counterpart(arch, base)
        if ptq:
            try:
                ax.axhline(bd_rate(anchor, read_results(ptq)), color=color, ls=":", lw=0.8)
            except Exception:  # noqa: BLE001
                pass
    ax.set_xscale("log")
    steps = sorted({s_ for pts in series.values() for s_, _, _ in pts})
    ax.set_xticks(steps, [f"{s_:.0f}" for s_ in steps], rotation=30)
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    if all(b > 0 for pts in series.values() for _, b, _ in pts):
        ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    return _save_bd_plot(fig, ax, "QAT steps per model (batch 8, 128 px)",
                         f"{arch}: QAT budget (dashed: goal, dotted: PTQ)", f"qat-{arch}-steps.png")


def _save_bd_plot(fig, ax, xlabel: str, title: str, name: str) -> Path:
    """Label a BD-rate-vs-something plot, add its legend and write it to ``RESULTS / name``."""
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel("BD-rate vs FP32 on Kodak (%)")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = RESULTS / name
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


#: the commit that stopped QAT from rounding the noisy training latents twice
LATENT_FIX = "e60620d"


def _train_code(r: dict) -> str:
    """The code column: the commits that trained the qualities (recorded per point where the
    file has them; a quality trained by an earlier ``--no-eval`` command keeps its own), else the commit of
    the command that wrote the file."""
    commits = [(pt.get("train_provenance") or {}).get("commit") for pt in r["licq"]["points"]]
    if not commits or not all(commits):
        return _code_label(r["licq"]["commit"])
    return ", ".join(dict.fromkeys(_code_label(c) for c in commits))  # (+dirty: same label)


def _code_label(commit: str) -> str:
    """``commit`` (may end in +dirty) short, marked “pre-fix” when it precedes LATENT_FIX."""
    c = commit.removesuffix("+dirty")
    before = _descends(LATENT_FIX, c) and not c.startswith(LATENT_FIX)
    return f"{c[:7]}{' pre-fix' if before else ''}"


def dq_section() -> str:
    out = []
    for arch in sorted(f.stem.removeprefix("baselines-") for f in RESULTS.glob("baselines-*.json")):
        anchor = _anchor(arch)
        files = sorted(RESULTS.glob(f"dq-{arch}-*.json"))
        if anchor is None or not files:
            continue
        out += [f"**{arch}** (anchor `baselines-{arch}.json`)", "",
                "| setting | BD-rate PSNR (%) | vs its FP32 control (%) | mean bits | 32 / mean bits | "
                "weight ratio at the bits read | selector share encode / decode | selectors: "
                "hidden, weight bits | steps / model | bits chosen | layers varying with the "
                "image |",
                "|---|---|---|---|---|---|---|---|---|---|---|"]
        points: list[tuple[float, float, str, bool]] = []  # (32 / bits, BD-rate, name, dynamic)
        for f in files:
            r = read_results(f)
            lq = r["licq"]
            dyn = "mean_bits" in lq
            if dyn:  # the per-image choices, redrawn from the file with the current plot code
                plot_bit_heatmap(r, f.with_suffix(".bits.png"), title=r["name"])
            name = f.stem.removeprefix(f"dq-{arch}-")
            m = re.match(r"static-w(\d+)", name)
            if dyn or m:  # the plot's x: 32 / mean bits, or 32 / B of a static-wB comparator
                try:
                    points.append((32 / lq["mean_bits"] if dyn else 32 / int(m.group(1)),
                                   bd_rate(anchor, r), name, dyn))
                except Exception:  # noqa: BLE001  (no BD-rate: the table says why)
                    pass
            control = _control_for(arch, name)
            vs_control = _bd(read_results(control), r) if control else "—"
            out.append(
                f"| {name} | {_bd(anchor, r)} | {vs_control} | "
                f"{lq['mean_bits']:.2f} | {32 / lq['mean_bits']:.2f}x | "
                f"{lq['ratio_at_mean_bits']:.2f}x | "
                f"{100 * lq['selector_share_encode']:.2f}% / {100 * lq['selector_share_decode']:.2f}% | "
                f"{_selector(lq)} | {_mean(lq['steps']):.0f} | {_choices(lq)} |" if dyn else
                f"| {name} | {_bd(anchor, r)} | {vs_control} | static | — | "
                f"{_mean([x['weight_ratio'] for x in _sizes(r)]):.2f}x (stored) | — | — | "
                f"{_mean(lq['steps']):.0f} | — | — |")
        pub = DQ_PUBLISHED.get(arch)
        pub_txt = (f"; published for {DQ_PUBLISHED_NAME[arch]}: {pub[1]} % BD-rate at {pub[0]}×"
                   if pub else "")
        out += ["", "`static-wB`: `--preset dynaquant-q` (DPA + DGM) at uniform B-bit weights and "
                "activations, with h_a, h_s and each side's first layer at 8 bits — the comparator "
                "at a dynamic run's rounded mean bits. Dynamic rows count the selector MLPs' "
                "weights in the bits read at their stored precision; static rows give the stored "
                "weight ratio. `32 / mean bits` is the ratio DynaQuant reports (mean over the "
                f"dynamic layers only{pub_txt}); "
                "the bits-read ratio also counts the fixed 8-bit layers and the selectors. "
                "`bits chosen`: how often each candidate was chosen over all images, qualities "
                "and dynamic layers; `layers varying with the image`: per quality (q1–q4), how "
                "many dynamic layers do not get the same bits on all images. `vs its FP32 "
                "control`: against the FP32 models fine-tuned with the same loop, steps and lr "
                "schedule (the controls of the QAT section; — where none was trained). "
                f"Per-image choices: `benchmarks/results/dq-{arch}-*.bits.png`."]
        plot = _plot_dq_tradeoff(arch, points)
        if plot:
            out += ["", f"BD-rate against `32 / mean bits`, with the published DynaQuant point: "
                    f"`benchmarks/results/{plot.name}`."]
        if not list(RESULTS.glob(f"qat-{arch}-*.json")):  # else the QAT section lists them
            out += ["", *_controls(arch)]
        out.append("")
    return "\n".join(out) if out else "No dynamic-bit-width results yet."


#: DynaQuant's published (32 / mean bits, BD-rate %) per architecture (arXiv 2511.07903)
DQ_PUBLISHED = {"bmshj2018-hyperprior": (4.55, 7.63), "cheng2020-anchor": (5.17, 7.15)}
DQ_PUBLISHED_NAME = {"bmshj2018-hyperprior": "Ballé's hyperprior", "cheng2020-anchor": "Cheng2020"}


def _plot_dq_tradeoff(arch: str, points: list[tuple[float, float, str, bool]]) -> Path | None:
    """BD-rate vs ``32 / mean bits`` of the dynamic runs (circles) and their static comparators
    (squares, at 32 / B), with DynaQuant's published point; -> ``dq-<arch>-tradeoff.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not points:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for x, y, name, dyn in points:
        ax.plot(x, y, "o" if dyn else "s", color="C0" if dyn else "C1", ms=7)
        ax.annotate(name, (x, y), fontsize=6, xytext=(4, 3), textcoords="offset points")
    pub = DQ_PUBLISHED.get(arch)
    if pub:
        ax.plot(*pub, "*", color="C3", ms=12)
        ax.annotate("DynaQuant (published)", pub, fontsize=7, color="C3", xytext=(4, -10),
                    textcoords="offset points")
    ax.plot([], [], "o", color="C0", label="dynamic (licq)")
    ax.plot([], [], "s", color="C1", label="static comparator (licq)")
    ax.grid(True, alpha=0.3)
    return _save_bd_plot(fig, ax, "32 / mean bits (dynamic layers)",
                         f"{arch}: dynamic bit-widths, lower right is better",
                         f"dq-{arch}-tradeoff.png")


def _choices(lq: dict) -> str:
    """``4: 24, 6: 480, 8: 72 | 0/0/1/1`` from the per-image choices of a dynamic run."""
    from collections import Counter

    counts: Counter = Counter()
    varying = []
    for p in lq["points"]:
        rows = []
        for im in p["per_image"]:
            row = []
            for key in sorted(k for k in im if k.startswith("bits_")):
                row += im[key]
            rows.append(row)
            counts.update(row)
        varying.append(sum(len(set(col)) > 1 for col in zip(*rows, strict=True)))
    total = ", ".join(f"{b}: {n}" for b, n in sorted(counts.items()))
    return f"{total} | {'/'.join(map(str, varying))}"


def _selector(lq: dict) -> str:
    q = lq.get("qat", {})
    bits = q.get("selector_bits")  # absent or 0: float
    return f"{q.get('selector_hidden', 64)}, {bits if bits else 32}"


def deploy_section() -> str:
    import json

    files = sorted(RESULTS.glob("deploy-*.json"))
    if not files:
        return "No deployment results yet."
    out = []
    for f in files:
        d = json.loads(f.read_text())
        m = d["licq"]["machine"]
        out += [f"**{d['arch']}** (`{f.relative_to(ROOT)}`): q{'/'.join(map(str, d['qualities']))}, "
                f"{len(d['images'])} Kodak images, {d['threads']} thread(s), "
                f"torch {d['torch']}, onnxruntime {d['onnxruntime']}, CPU: {m.get('cpu', '?')}. "
                "Times are per-image means of `compress` / `decompress` (entropy coding "
                "included), same process and thread count for every engine.", "",
                "| config | file bytes (vs accounted) | FP32 file | encode s: fp32 / ort-fp32 / "
                "fake-quant / int8 | decode s: fp32 / ort-fp32 / fake-quant / int8 | int8 speed-up "
                "enc / dec vs PyTorch fp32 | vs ORT fp32 | GBitOps enc+dec | "
                "BD-rate int8 vs fake-quant | BD-rate fake-quant / int8 vs FP32 | "
                "ORT convs int8 / all |",
                "|---|---|---|---|---|---|---|---|---|---|---|"]
        for c, v in d["configs"].items():
            k = v["per_quality"][0]["ort_kernels"]
            q8 = sum(p.get("QLinearConv", 0) for p in k.values())
            allc = sum(sum(p.values()) for p in k.values())

            def pct(x: float | None) -> str:
                return "n/a" if x is None else f"{x:+.2f} %"
            out.append(
                f"| {c} | {v['file_bytes']:,.0f} "
                f"({100 * (v['file_bytes'] / v['accounted_bytes'] - 1):+.2f} %) | "
                f"{v['fp32_file_bytes']:,.0f} | {v['encode_seconds_fp32']:.3f} / "
                f"{v['encode_seconds_ort_fp32']:.3f} / {v['encode_seconds_fakequant']:.3f} / "
                f"{v['encode_seconds_int8']:.3f} | {v['decode_seconds_fp32']:.3f} / "
                f"{v['decode_seconds_ort_fp32']:.3f} / {v['decode_seconds_fakequant']:.3f} / "
                f"{v['decode_seconds_int8']:.3f} | {v['encode_speedup_int8_vs_fp32']:.2f}x / "
                f"{v['decode_speedup_int8_vs_fp32']:.2f}x | "
                f"{v['encode_seconds_ort_fp32'] / v['encode_seconds_int8']:.2f}x / "
                f"{v['decode_seconds_ort_fp32'] / v['decode_seconds_int8']:.2f}x | "
                f"{v['bitops'] / 1e9:,.0f} | "
                f"{pct(v['bd_rate_int8_vs_fakequant'])} | {pct(v['bd_rate_fakequant_vs_fp32'])} / "
                f"{pct(v['bd_rate_int8_vs_fp32'])} | {q8} / {allc} |")
        goals = []
        for c, v in d["configs"].items():
            e, dd = v["encode_speedup_int8_vs_fp32"], v["decode_speedup_int8_vs_fp32"]
            goals.append(f"{c}: encode {e:.2f}x ({'met' if e >= 1.8 else 'not met'}), decode "
                         f"{dd:.2f}x ({'met' if dd >= 1.3 else 'not met'})")
        flags = m.get("cpu_flags")
        storage = d.get("weight_storage_8bit", "u8")
        out += ["", "Goals encode ≥ 1.8×, decode ≥ 1.3× faster than FP32 (PyTorch): "
                + "; ".join(goals) + ". Against the FP32 graphs in ONNX Runtime (the same "
                "runtime), the int8 gain is the 'vs ORT fp32' column: part of the gain over "
                "PyTorch is ONNX Runtime itself. CPU features: "
                + (", ".join(flags) if flags else "not recorded") + f". 8-bit weights ran as "
                f"{'int8 (u8·s8 kernels)' if storage == 's8' else 'uint8 (u8·u8 kernels)'}"
                + (f" (ORT's u8·s8 kernel {'is' if d['u8s8_exact'] else 'is not'} exact on "
                   "this CPU)" if "u8s8_exact" in d else "")
                + "; weights of ≤ 7 bits always run as int8."]
        if d.get("variants"):
            out += ["", "| W8A8 variant (q" + str(next(iter(d["variants"].values()))["quality"])
                    + ") | 8-bit weights | ORT optimisation | encode s (default) | decode s "
                    "(default) | max abs diff g_a vs fake-quant |", "|---|---|---|---|---|---|"]
            for name, v in d["variants"].items():
                out.append(f"| {name} | {v['weight_storage_8bit']} | {v['opt_level']} | "
                           f"{v['encode_seconds']:.3f} ({v['encode_seconds_default']:.3f}) | "
                           f"{v['decode_seconds']:.3f} ({v['decode_seconds_default']:.3f}) | "
                           f"{v['parity_vs_fakequant']['g_a']['max_abs_diff']:.2e} |")
        par = d["parity"]
        rows = []
        for name, per_q in par.items():
            for part in ("g_a", "h_a", "g_s"):
                mx = max(pq[part]["max_abs_diff"] for pq in per_q.values())
                ref = max(pq[part]["max_abs_ref"] for pq in per_q.values())
                rows.append(f"| {name} | {part} | {mx:.2e} | {mx / ref:.1e} |")
        out += ["", "ONNX Runtime vs PyTorch on the first 4 Kodak images (max |difference|; "
                "relative to the output's max |value|):", "",
                "| comparison | transform | max abs diff | relative |", "|---|---|---|---|", *rows, ""]
    out += kernels_section()
    return "\n".join(out)


def kernels_section() -> list[str]:
    """Per-layer int8 kernel timings (benchmarks/int8_kernels.py), if measured."""
    import json

    files = sorted(RESULTS.glob("int8-kernels-*.json"))
    out: list[str] = []
    for f in files:
        d = json.loads(f.read_text())
        names = ["torch-fp32", *[f"torch-int8-{e}" for e in d["torch_engines"]], "ort-fp32",
                 "ort-int8"]
        m = d["licq"]["machine"]
        out += ["", f"Per-layer kernels (`{f.relative_to(ROOT)}`, `benchmarks/int8_kernels.py`): "
                f"one call of each convolution at a {d['input_hw'][1]}×{d['input_hw'][0]} input, "
                f"{d['threads']} thread(s), min of {d['reps']}, ms; CPU {m.get('cpu', '?')} "
                f"({', '.join(m.get('cpu_flags', [])) or 'flags not recorded'}). Sub-pixel rows: "
                "the transposed convolution as Conv2d + PixelShuffle (what the int8 backend runs).",
                "", "| layer | MMACs | " + " | ".join(names) + " | fastest int8 |",
                "|---|---|" + "---|" * len(names) + "---|"]
        for r in d["layers"]:
            cells = []
            for n in names:
                v = r["seconds"].get(n)
                cells.append(f"{v * 1e3:.2f}" if v is not None else
                             ("unsupported" if n in r["errors"] else "—"))
            out.append(f"| {r['layer']} | {r['macs'] / 1e6:,.0f} | " + " | ".join(cells)
                       + f" | {r['fastest_int8'] or '—'} |")
        for part, t in d["totals_seconds"].items():
            out.append(f"| **{part} total** | | " + " | ".join(
                f"{t[n] * 1e3:.1f}" if t.get(n) is not None else "—" for n in names) + " | |")
        errs = sorted({e for r in d["layers"] for e in r["errors"].values()})
        if errs:
            out += ["", "Refused by PyTorch: " + "; ".join(f"“{e}”" for e in errs) + "."]
    return out


def codec_section() -> str:
    import json

    f = RESULTS / "codec-bmshj2018-hyperprior.json"
    if not f.is_file():
        return "No codec results yet."
    d = json.loads(f.read_text())
    names = {"cross_process_1thread": "other process, 1 thread",
             "cross_process_2threads_batch2": "other process, 2 threads, batches of 2",
             "cross_machine_cpu": "other machine's CPU, 1 thread",
             "cross_machine_cpu_8threads_batch2": "other machine's CPU, 8 threads, batches of 2",
             "cross_device_gpu": "GPU (CUDA)"}
    runs = [r for r in names if r in d["decode_runs"]]
    lines = ["| variant | bpp | PSNR (dB) | encode / decode s | " + " | ".join(names[r] for r in runs)
             + " |", "|---" * (4 + len(runs)) + "|"]
    for v, e in d["variants"].items():
        cells = []
        for r in runs:
            n, t = d["decode_runs"][r][v]
            cells.append(f"{n}/{t}")
        lines.append(f"| {v} | {e['bpp_mean']:.4f} | {e['psnr_mean']:.3f} | "
                     f"{e['encode_seconds_mean']:.2f} / {e['decode_seconds_mean_encoder_side']:.2f} | "
                     + " | ".join(cells) + " |")
    other = d.get("other_machine_cpu") or {}
    fz = d.get("fuzz") or {}
    out = [f"`{f.relative_to(ROOT)}`: all {d['images']} Kodak images at q{d['quality']}, encoded "
           "in one process with 2 threads on this machine; each cell counts the images whose "
           "reconstruction is bit-identical to the encoder-side reconstruction. The other "
           f"machine is the device tool's ({other.get('model', '?')}, "
           f"{', '.join(other.get('flags', []))}) with its GPU. Encode / decode times: the "
           "encoding process (2 threads; other benchmark jobs shared the 2 cores).", "", *lines, ""]
    mins = {v: e["cross_process_1thread"]["min_psnr_vs_encoder_side"]
            for v, e in d["variants"].items() if "cross_process_1thread" in e}
    if mins:
        out.append("Severity where the float paths mismatch in the other process here: lowest "
                   "PSNR of a decoded image against the encoder-side reconstruction "
                   + ", ".join(f"{v} {x:.1f} dB" for v, x in mins.items() if x != float("inf"))
                   + " (a few pixel values off, the entropy decoding itself intact). On the other "
                   "machine only hashes were compared, so how far those decodes were off is not "
                   "measured.")
        out.append("")
    for g in sorted(RESULTS.glob("codec-*.json")):
        if g in (f, FUZZ):
            continue
        o = json.loads(g.read_text())
        runs_o = [r for r in names if r in o["decode_runs"]]
        out += [f"`{g.relative_to(ROOT)}` ({o['arch']}, q{o['quality']}, W8A8 PTQ of the baseline "
                f"as committed at {o['licq']['commit'][:7]}; {o['images']} Kodak images, encoded "
                "with 2 threads):", "",
                "| variant | bpp | PSNR (dB) | encode / decode s | "
                + " | ".join(names[r] for r in runs_o) + " | lowest PSNR vs encoder side, "
                "1 thread |", "|---" * (5 + len(runs_o)) + "|"]
        for v, e in o["variants"].items():
            cells = ["{}/{}".format(*o["decode_runs"][r][v]) for r in runs_o]
            low = e.get("cross_process_1thread", {}).get("min_psnr_vs_encoder_side")
            out.append(f"| {v} | {e['bpp_mean']:.4f} | {e['psnr_mean']:.3f} | "
                       f"{e['encode_seconds_mean']:.2f} / {e['decode_seconds_mean_encoder_side']:.2f}"
                       " | " + " | ".join(cells) + " | "
                       + ("all identical" if low == float("inf") else f"{low:.1f} dB") + " |")
        if not _descends(o["licq"]["commit"], EXACT_BLOCKS):
            out += ["", "Measured before the exact path covered residual and attention blocks "
                    f"({EXACT_BLOCKS}): its synthesis ran in float, so only the entropy decoding "
                    "was reproducible; the reconstructions that differ are off in the last bits "
                    "(the PSNR column).", ""]
        else:
            out.append("")
    if fz:
        kinds = ", ".join(f"{k}: {sum(v.values())}" for k, v in sorted(fz["by_kind"].items()))
        out.append(f"Earlier fuzz run (`codec_determinism.py fuzz`, in `{f.name}`): "
                   f"{fz['cases']:,} mutated files in {fz['seconds']:.0f} s ({kinds}); "
                   f"{fz['failure_count']} ended in anything but `CodecFormatError` or a clean "
                   f"decode, or took over {fz['time_bound_seconds']:.0f} s.")
        out.append("")
    out += _fuzz_rows()
    return "\n".join(out)


#: the commit that put CompressAI's residual and attention blocks on the exact path
EXACT_BLOCKS = "5ebedd2"
FUZZ = RESULTS / "codec-fuzz.json"


def _fuzz_rows() -> list[str]:
    """``benchmarks/codec_fuzz.py``'s run: outcomes per kind of mutation, memory and time."""
    import json

    if not FUZZ.is_file():
        return []
    d = json.loads(FUZZ.read_text())
    outcomes = sorted({o for v in d["by_kind"].values() for o in v})
    out = [f"Fuzz (`{FUZZ.relative_to(ROOT)}`, `benchmarks/codec_fuzz.py`): {d['cases']:,} "
           f"mutated files against {', '.join(f'`{m}`' for m in d['models'])} "
           f"({d['seconds']:.0f} s, one worker process, {d['timeout_seconds']:.0f} s per case "
           "before a case counts as a hang):", "",
           "| mutation | " + " | ".join(outcomes) + " | peak RSS (MB) |",
           "|---" * (len(outcomes) + 2) + "|"]
    for kind, v in d["by_kind"].items():
        out.append(f"| {kind} | " + " | ".join(f"{v.get(o, 0):,}" for o in outcomes)
                   + f" | {d['peak_rss_kb_by_kind'][kind] / 1024:.0f} |")
    normal = max(d["normal_decode_peak_rss_kb"].values()) / 1024
    over = d["over_2x_normal_rss"]
    sizes = sorted({o["detail"] for o in over})
    out += ["", f"Crashes {d['crashes']}, tracebacks {d['tracebacks']}, hangs {d['hangs']}, "
            f"silently other images {d['other_image']} (targets: 0). Peak RSS of a normal decode "
            f"of the base files: {normal:.0f} MB (the whole process); files over twice that: "
            f"{len(over)}" + (f", all declaring large images ({', '.join(sizes)}) over a small "
                               "payload: the entropy decoding of that many symbols before the "
                               "digest refuses the file" if over and all(
                                   o["kind"] == "oversized" for o in over) else "")
            + f". Slowest case: {d['slowest_case']['seconds']:.2f} s "
            f"({d['slowest_case'].get('kind')}, {d['slowest_case'].get('detail')}, "
            f"{d['slowest_case'].get('outcome')}).", ""]
    return out


# -- the README's summary and docs/results.md ------------------------------------------------------
#: the commit that gave the joint autoregressive models' decoded latent its bitstream grid
AR_LATENT_FIX = "049f23f"
_AR_FIXED = ("cheng2020-anchor",)


def _descends(commit: str, ancestor: str) -> bool:
    import subprocess

    return subprocess.run(["git", "merge-base", "--is-ancestor", ancestor,
                           commit.removesuffix("+dirty")], cwd=ROOT,
                          capture_output=True).returncode == 0


def _current(arch: str, f: Path, r: dict) -> bool:
    """False for a row of a joint autoregressive model whose code (the commit that wrote the
    file, or that trained any of its qualities) predates the decoded-latent fix."""
    if arch not in _AR_FIXED or f.stem.endswith(_FIX_SUFFIX):
        return True
    commits = [r["licq"]["commit"]] + [(p.get("train_provenance") or {}).get("commit")
                                       for p in r["licq"].get("points", [])]
    return all(_descends(c, AR_LATENT_FIX) for c in commits if c)


def _candidates(arch: str, kind: str, setting: str) -> list[Path]:
    """Results files of one deployable setting with 8-bit activations: ``kind`` ptq or qat,
    ``setting`` w8a8 or fmpq-<R>x (any allocation method, calibration, reconstruction, training
    recipe or budget; no probe, no float or 10-bit activation group)."""
    files = sorted(RESULTS.glob(f"{kind}-{arch}-{setting}.json"))
    files += sorted(RESULTS.glob(f"{kind}-{arch}-{setting}-*.json"))
    if kind == "ptq" and setting != "w8a8":  # run_fmpq.py's PTQ of its DP allocations
        r_ = setting.removeprefix("fmpq-")
        files += [RESULTS / f"fmpq-{arch}-{m}-{r_}.json" for m in ("dp", "dp-monotone")]
    return [f for f in files if f.is_file() and not re.search(r"-(float-|a10-)", f.stem)]


def _best(arch: str, kind: str, setting: str, anchor: dict) -> tuple | None:
    """(file, BD vs baseline, BD vs control or None, weight ratio) of the row with the lowest
    BD-rate against its FP32 control where the rows have controls, else against the baseline."""
    rows = []
    for f in _candidates(arch, kind, setting):
        r = read_results(f)
        if not _current(arch, f, r):
            continue
        try:
            vs_base = bd_rate(anchor, r)
        except Exception:  # noqa: BLE001 - a curve BD cannot compare is left out of the summary
            continue
        control = _control_for(arch, f.stem.removeprefix(f"{kind}-{arch}-")) if kind == "qat" else None
        vs_control = bd_rate(read_results(control), r) if control else None
        ratio = _mean([x["weight_ratio"] for x in _sizes(r)])
        rows.append((f, vs_base, vs_control, ratio))
    return _pick(rows)


def _pick(rows: list[tuple]) -> tuple | None:
    """Of ``(file, BD vs baseline, BD vs control or None, …)`` rows, the lowest against the
    control where any row has one, else the lowest against the baseline."""
    if not rows:
        return None
    with_control = [x for x in rows if x[2] is not None]
    return min(with_control, key=lambda x: x[2]) if with_control else min(rows, key=lambda x: x[1])


SUMMARY_SETTINGS = [("ptq", "w8a8", "PTQ W8A8"), ("ptq", "fmpq-4x", "PTQ FMPQ 4×"),
                    ("ptq", "fmpq-6x", "PTQ FMPQ 6×"), ("ptq", "fmpq-8x", "PTQ FMPQ 8×"),
                    ("qat", "w8a8", "QAT W8A8"), ("qat", "fmpq-4x", "QAT FMPQ 4×"),
                    ("qat", "fmpq-6x", "QAT FMPQ 6×"), ("qat", "fmpq-8x", "QAT FMPQ 8×")]


def summary_section() -> str:
    """One row per setting and architecture: the best measured result (README)."""
    out = ["| architecture | setting | weight ratio | BD-rate vs FP32 baseline (%) | "
           "vs FP32 control (%) | results file |", "|---|---|---|---|---|---|"]
    archs = sorted(f.stem.removeprefix("baselines-") for f in RESULTS.glob("baselines-*.json"))
    curves = {}
    for arch in archs:
        anchor = _anchor(arch)
        for kind, setting, label in SUMMARY_SETTINGS:
            best = _best(arch, kind, setting, anchor)
            if best is None:
                continue
            f, vs_base, vs_control, ratio = best
            out.append(f"| {arch} | {label} | {ratio:.2f}× | {vs_base:+.2f} | "
                       f"{'—' if vs_control is None else f'{vs_control:+.2f}'} | `{f.name}` |")
            if arch == ANCHOR and setting in ("w8a8", "fmpq-8x"):
                curves[label] = read_results(f)
        dq = _best_dynamic(arch, anchor)
        if dq is not None:
            f, vs_base, vs_control, bits = dq
            out.append(f"| {arch} | DynaQuant (per-image bits) | {32 / bits:.2f}× (32 / mean "
                       f"bits) | {vs_base:+.2f} | "
                       f"{'—' if vs_control is None else f'{vs_control:+.2f}'} | `{f.name}` |")
    plot = RESULTS / "rd-summary.png"
    anchor = _anchor(ANCHOR)
    named = [anchor | {"name": f"FP32 baseline ({ANCHOR})"}]
    named += [r | {"name": name} for name, r in curves.items()]
    plot_rd(named, plot, title=f"{ANCHOR}, Kodak-24, real bitstreams")
    out += ["", "Kodak-24, real bitstreams, BD-rate PSNR; the lowest BD-rate against the FP32 "
            "control where a setting has controlled runs (every training recipe has its own "
            "control: the FP32 models fine-tuned with the same loop, steps, schedule and "
            "latents), else against the baseline. 8-bit activations everywhere; "
            "cheng2020-anchor rows measured before its decoded-latent fix are left out. Every "
            "row and its caveats: [docs/results.md](docs/results.md).", "",
            f"![RD curves](benchmarks/results/{plot.name})"]
    return "\n".join(out)


def _best_dynamic(arch: str, anchor: dict) -> tuple | None:
    rows = []
    for f in sorted(RESULTS.glob(f"dq-{arch}-*.json")):
        r = read_results(f)
        if "mean_bits" not in r["licq"] or not _current(arch, f, r):
            continue
        try:
            vs_base = bd_rate(anchor, r)
        except Exception:  # noqa: BLE001 - left out of the summary
            continue
        control = _control_for(arch, f.stem.removeprefix(f"dq-{arch}-"))
        vs_control = bd_rate(read_results(control), r) if control else None
        rows.append((f, vs_base, vs_control, r["licq"]["mean_bits"]))
    return _pick(rows)


#: docs/results.md: (title, what the section's tables are, the function that writes them)
SECTIONS = [
    ("FP32 baselines", "The codecs every BD-rate in licq is measured against: CompressAI's "
     "ScaleHyperprior (`bmshj2018-hyperprior`), mean-scale hyperprior (`mbt2018-mean`) and "
     "Cheng2020-anchor at N=64 (M=96), four qualities each, trained with `licq train` (steps, "
     "wall time and data of every stage in `benchmarks/models/*-manifest.json`). They are not "
     "converged: training recipes improve them too, which is why every trained result is also "
     "reported against an FP32 control.", baselines_section),
    ("Post-training quantization", "Uniform PTQ of the baselines, q1–q4: weights per output "
     "channel, inputs per tensor, calibrated on 32 crops of 256² from the training photos (never "
     "Kodak); all 24 Kodak images through real bitstreams. Then the probes that locate the loss "
     "(one layer group's inputs left in float), RD-optimised reconstruction (`--method rdo`) "
     "against its targets, activation-range equalization (`--equalize auto`) and training-crop "
     "probes.", ptq_section),
    ("FMPQ mixed precision", "Per-layer sensitivities ζ_n(b) on training crops, allocations at "
     "target weight ratios (nearest uniform precision, FMPQ's adaptive β, licq's exact DP and "
     "`dp-monotone`), each evaluated after PTQ on Kodak. Predicted Σζ against the measured ζ of "
     "the whole allocation tests FMPQ's additivity assumption.", fmpq_section),
    ("Quantization-aware training", "QAT on the RD loss from the FP32 baselines (and from an "
     "allocation), evaluated on Kodak through real bitstreams. Every row is given against the "
     "FP32 baseline and against its FP32 control: the same loop, steps, learning-rate schedule "
     "and training latents on the unquantized models. The goals are judged against the "
     "control.", qat_section),
    ("DynaQuant: per-image bit-widths", "Per-layer selectors (Gumbel-softmax, L_bits) choose "
     "each dynamic layer's bits per image; static comparators at the rounded mean bits.",
     dq_section),
    ("Deployment", "Packed model files (real bytes against the accounted size), the ONNX "
     "Runtime int8 backend against PyTorch, BitOps; timings are machine-specific and each file "
     "records its CPU.", deploy_section),
    ("The .licq codec", "Decode agreement of `.licq` files across threads, processes, machines "
     "and devices, and the fuzz run of the container parser.", codec_section),
]

DOCS_RESULTS = ROOT / "docs" / "results.md"
README = ROOT / "README.md"


def render() -> dict[Path, str]:
    """The generated files' text: docs/results.md, and README.md with its summary regenerated."""
    page = ["# Results", "",
            "<!-- generated by `python benchmarks/report.py` from benchmarks/results/*.json; "
            "do not edit by hand -->", "",
            "Every table below is computed from the results files in `benchmarks/results/` "
            "(each records its command, git commit, date and machine; "
            "[reproduce.md](reproduce.md) has one command per table). BD-rates are "
            "Bjøntegaard deltas of rate at equal PSNR-RGB (Akima interpolation, the "
            "`bjontegaard` package) over the four qualities on all 24 Kodak images, bitstream "
            "bytes included; negative is better. Kodak is never used for calibration, training "
            "or tuning.", ""]
    page += [f"- [{title}](#{re.sub(r'[^a-z0-9 -]', '', title.lower()).replace(' ', '-')})"
             for title, _, _ in SECTIONS]
    page.append("")
    for title, intro, fn in SECTIONS:
        body = fn().rstrip()
        if "‡" in body:
            body += "\n\n" + OVERLAP_NOTE
        page += [f"## {title}", "", intro, "", body, ""]
    readme = _replace_section(README.read_text(), "summary", summary_section())
    return {DOCS_RESULTS: "\n".join(page).rstrip() + "\n", README: readme}


@contextmanager
def _images_unwritten() -> Iterator[None]:
    """Render without writing any PNG (``--check``): every figure goes through Figure.savefig."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    saved = Figure.savefig
    Figure.savefig = lambda self, *a, **k: None
    try:
        yield
    finally:
        Figure.savefig = saved


def stale() -> list[Path]:
    """The generated files whose committed text differs from what the results files give."""
    with _images_unwritten():
        rendered = render()
    return [p for p, text in rendered.items() if not p.is_file() or p.read_text() != text]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true",
                    help="write nothing; exit 1 if docs/results.md or the README summary is stale")
    args = ap.parse_args(argv)
    if args.check:
        bad = stale()
        for p in bad:
            print(f"{p.relative_to(ROOT)} is stale: run python benchmarks/report.py", file=sys.stderr)
        return 1 if bad else 0
    for path, text in render().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
