"""FMPQ mixed precision after PTQ: sensitivity, allocation (uniform / adaptive / DP) at target
weight ratios, real-bitstream Kodak evaluation, search cost, additivity check, plots.

    python benchmarks/run_fmpq.py [--arch bmshj2018-hyperprior] [--ratios 4 6 8] [--cost-only]
                                  [--methods uniform adaptive dp dp-monotone]
                                  [--eval-ratios 4]

--methods limits the Kodak evaluation to those allocation methods (every allocation is still
searched, its ζ measured on training crops and drawn); `--methods dp` writes only the allocations
that `run_qat.sh main` trains from, a third of the Kodak runs (for cheng2020-anchor on a 2-core
CPU, each one is ~20 min). Resumable: cached sensitivities are reused and a results file
already written is not evaluated again (delete it to re-run). --eval-ratios limits the Kodak
evaluation to those targets while the search cost and plots still cover every --ratios target.
dp-monotone is the DP on ζ made non-negative and non-increasing in the bits
(licq.search.allocate); its "predicted" Σζ is reported on the raw ζ, like the other methods, so
the additivity gap compares the same quantity.

Writes benchmarks/results/fmpq-<arch>-<method>-<R>x.json (CompressAI format, one entry per
quality), search-cost-<arch>.json, sensitivity-<arch>-q<q>.json and the plots
fmpq-<arch>-sensitivity.png, fmpq-<arch>-bits.png, fmpq-<arch>-pareto.png.
Calibration and sensitivities use training crops (../shared/data/train); Kodak only evaluates.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", category=DeprecationWarning)

import matplotlib  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from licq._provenance import provenance  # noqa: E402
from licq.api import LayerQConfig, QuantConfig  # noqa: E402
from licq.data import list_images  # noqa: E402
from licq.eval import RDPoint, evaluate_rd, write_results  # noqa: E402
from licq.models import lambda_for, load_model  # noqa: E402
from licq.ptq import post_training_quantize  # noqa: E402
from licq.ptq.calibrate import CALIBRATION_REVISION  # noqa: E402
from licq.quant.size import model_size  # noqa: E402
from licq.search import (  # noqa: E402
    Problem,
    SearchError,
    SensitivityResult,
    SensitivitySettings,
    adaptive,
    compute_sensitivity,
    dp,
    enumerate_subset,
    exhaustive,
)
from licq.search.measure import measured_zeta  # noqa: E402

METHODS = ("uniform", "adaptive", "dp", "dp-monotone")  # allocation methods, in table order

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"  # --out changes it (smoke runs)


def checkpoints(arch: str, shared: Path) -> dict[int, Path]:
    if arch == "bmshj2018-hyperprior":
        return {q: shared / "baselines" / f"bmshj2018-hyperprior-N64M96-q{q}.pth.tar"
                for q in (1, 2, 3, 4)}
    return {q: next((ROOT / "benchmarks" / "models").glob(f"{arch}-*-q{q}.safetensors"))
            for q in (1, 2, 3, 4)}


def nearest_uniform(model, a_bits: int, target: float) -> tuple[int, QuantConfig, float]:
    best = None
    for b in range(2, 9):
        cfg = QuantConfig(default=LayerQConfig(b, a_bits))
        r = model_size(model, cfg).weight_ratio
        if best is None or abs(r - target) < abs(best[2] - target):
            best = (b, cfg, r)
    return best


def main() -> None:
    global RESULTS
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="bmshj2018-hyperprior")
    ap.add_argument("--ratios", type=float, nargs="+", default=[4.0, 6.0, 8.0])
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    ap.add_argument("--sens-crops", type=int, default=16)
    ap.add_argument("--calib-crops", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--kodak-limit", type=int, help="smoke runs only: first N Kodak images")
    ap.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS),
                    help="allocation methods to evaluate on Kodak (all are searched)")
    ap.add_argument("--eval-ratios", type=float, nargs="+",
                    help="targets to evaluate on Kodak (default: every --ratios target)")
    ap.add_argument("--cost-only", action="store_true",
                    help="only re-measure the search cost (cached sensitivities; no Kodak runs)")
    args = ap.parse_args()
    RESULTS = args.out
    RESULTS.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    arch = args.arch
    train = args.shared / "data" / "train"
    kodak = list_images(args.shared / "data" / "kodak")[: args.kodak_limit]
    ckpts = checkpoints(arch, args.shared)
    prov = provenance()

    sens, cost = {}, {"adaptive": [], "exhaustive": [], "dp": [], "dp-monotone": [],
                      "sensitivity_seconds": [],
                      "enumeration": []}
    for q, ck in ckpts.items():
        settings = SensitivitySettings(lmbda=lambda_for(q), calib_dir=str(train),
                                       num_crops=args.sens_crops)
        path = RESULTS / f"sensitivity-{arch}-q{q}.json"
        model = load_model(arch, checkpoint=ck)
        if path.is_file():
            sens[q] = SensitivityResult.from_json(path)
            rev = sens[q].settings.get("calibration_revision", 1)
            if rev != CALIBRATION_REVISION:
                print(f"warning: {path} was measured with calibration revision {rev}, this code "
                      f"is revision {CALIBRATION_REVISION}; delete it to measure again",
                      file=sys.stderr, flush=True)
        else:
            sens[q] = compute_sensitivity(model, settings, progress=False)
            sens[q].settings.update({"arch": arch, "quality": q, "checkpoint": str(ck)})
            sens[q].to_json(path)
        cost["sensitivity_seconds"].append(sens[q].seconds)
        print(f"q{q}: sensitivity {sens[q].seconds:.0f}s", flush=True)

    allocations: dict[tuple[str, float], dict[int, dict]] = {}
    for target in args.ratios:
        for q, ck in ckpts.items():
            model = load_model(arch, checkpoint=ck)
            p = Problem(model, sens[q])
            settings = SensitivitySettings.from_dict(sens[q].settings)
            found = {}
            b, ucfg, ur = nearest_uniform(model, 8, target)
            found["uniform"] = {"config": ucfg, "ratio": ur, "uniform_bits": b,
                                "predicted": float(sum(sens[q].zeta[n][str(b)]
                                                       for n in sens[q].layers))}
            try:
                a = adaptive(p, target)
                ok = True
            except SearchError as e:
                a, ok = e.best, False
            found["adaptive"] = {"config": a.config, "ratio": a.ratio, "predicted": a.predicted,
                                 "reached": ok, "summary": a.summary()}
            cost["adaptive"].append({"quality": q, "target": target, "iterations": a.iterations,
                                     "seconds": a.seconds, "reached": ok})
            try:
                ex, ex_ok = exhaustive(p, target), True
            except SearchError as e:  # the closest threshold allocation still cost a full scan
                ex, ex_ok = e.best, False
            cost["exhaustive"].append({"quality": q, "target": target, "reached": ex_ok,
                                       "evaluations": ex.evaluations, "seconds": ex.seconds})
            d, front = dp(p, target)
            found["dp"] = {"config": d.config, "ratio": d.ratio, "predicted": d.predicted,
                           "summary": d.summary(),
                           "front": {"bytes": front.bytes[::50].tolist(),
                                     "loss": [None if not np.isfinite(v) else float(v)
                                              for v in front.loss[::50]]}}
            cost["dp"].append({"quality": q, "target": target, "seconds": d.seconds})
            dm, _ = dp(Problem(model, sens[q], monotone=True), target)
            found["dp-monotone"] = {"config": dm.config, "ratio": dm.ratio,
                                    "predicted": p.predicted({n: dm.bits[n] for n in p.layers}),
                                    "predicted_monotone": dm.predicted, "summary": dm.summary()}
            cost["dp-monotone"].append({"quality": q, "target": target, "seconds": dm.seconds})
            for m, f in found.items():
                if args.cost_only:
                    continue
                f["measured"] = measured_zeta(model, f["config"], settings)
                f["weight_bytes"] = model_size(model, f["config"]).weight_bytes
                allocations.setdefault((m, target), {})[q] = f
            print(f"R={target} q{q}: " + ", ".join(
                f"{m} {f['ratio']:.3f}x pred {f['predicted']:+.4f} meas {f.get('measured', 0):+.4f}"
                for m, f in found.items()), flush=True)
        # brute-force enumeration on a 4-layer subset (others at min bits) for the cost table
        q0 = 3
        p = Problem(load_model(arch, checkpoint=ckpts[q0]), sens[q0])
        sub = p.layers[:4]
        t0 = time.perf_counter()
        budget = p.fp32_bytes * 8 / target
        _, _, count = enumerate_subset(p, sub, budget)
        cost["enumeration"].append({"quality": q0, "target": target, "layers": sub,
                                    "evaluations": count, "seconds": time.perf_counter() - t0})

    # real-bitstream Kodak evaluation of every allocation
    for (method, target), per_q in ({} if args.cost_only else allocations).items():
        tag = f"{target:g}x"
        out = RESULTS / f"fmpq-{arch}-{method}-{tag}.json"
        evaluate = method in args.methods and (args.eval_ratios is None
                                               or target in args.eval_ratios)
        if not evaluate or out.is_file():  # a finished evaluation is kept
            print(f"skip {out.name}", flush=True)
            continue
        points = []
        for q, f in per_q.items():
            model = load_model(arch, checkpoint=ckpts[q])
            r = post_training_quantize(model, f["config"], train, num_crops=args.calib_crops,
                                       progress=False)
            points.append(RDPoint(model, q, {
                "checkpoint": str(ckpts[q]), "bit_config": f["config"].to_dict(),
                "size": r.size.as_dict(), "predicted_zeta_sum": f["predicted"],
                "measured_zeta": f["measured"], "calibration_seconds": r.calibration.seconds,
                **({"adaptive_reached_target": f["reached"]} if "reached" in f else {}),
                **({"uniform_bits": f["uniform_bits"]} if "uniform_bits" in f else {}),
                **({"predicted_monotone_zeta_sum": f["predicted_monotone"]}
                   if "predicted_monotone" in f else {}),
            }))
        name = f"{arch}-fmpq-{method}-{tag}"
        res = evaluate_rd(points, kodak, name=name, arch=arch, progress=False,
                          description=f"PTQ W{method}/A8 at weight ratio {tag}, Kodak-24, real "
                                      "bitstreams, 1 thread",
                          extra={"method": method, "target_ratio": target,
                                 "ratio": float(np.mean([p.info["size"]["weight_ratio"] for p in points])),
                                 "model_ratio": float(np.mean([p.info["size"]["ratio"] for p in points])),
                                 "quantized_layers_ratio": float(np.mean(
                                     [p.info["size"]["quantized_layers_ratio"] for p in points])),
                                 "ratio_basis": "weights", "a_bits": 8,
                                 "command": prov["command"], "commit": prov["commit"]})
        write_results(res, out)
        print(f"wrote {out.name}", flush=True)

    cost_out = {
        "adaptive": {"iterations": float(np.mean([c["iterations"] for c in cost["adaptive"]])),
                     "seconds": float(np.mean([c["seconds"] for c in cost["adaptive"]])),
                     "runs": cost["adaptive"]},
        "exhaustive": {"evaluations": float(np.mean([c["evaluations"] for c in cost["exhaustive"]])),
                       "seconds": float(np.mean([c["seconds"] for c in cost["exhaustive"]])),
                       "runs": cost["exhaustive"], "enumeration_subset": cost["enumeration"]},
        "dp": {"seconds": float(np.mean([c["seconds"] for c in cost["dp"]])), "runs": cost["dp"]},
        "dp-monotone": {"seconds": float(np.mean([c["seconds"] for c in cost["dp-monotone"]])),
                        "runs": cost["dp-monotone"]},
        "sensitivity_seconds": float(np.mean(cost["sensitivity_seconds"])),
        "sensitivity_threads": args.threads,
        "provenance": prov,
    }
    (RESULTS / f"search-cost-{arch}.json").write_text(json.dumps(cost_out, indent=1) + "\n")
    if not args.cost_only:
        plots(arch, sens, allocations, args.ratios)


def plots(arch, sens, allocations, ratios) -> None:
    s = sens[3]
    z = np.array([[s.zeta[n][str(b)] for b in s.bits] for n in s.layers])
    fig, ax = plt.subplots(figsize=(6, 0.32 * len(s.layers) + 1.5))
    im = ax.imshow(np.log10(np.clip(z, 1e-5, None)), aspect="auto", cmap="viridis")
    ax.set_yticks(range(len(s.layers)), s.layers, fontsize=7)
    ax.set_xticks(range(len(s.bits)), s.bits)
    ax.set_xlabel("weight bits (this layer only)")
    fig.colorbar(im, label="log10 ζ (fractional RD increase)")
    ax.set_title(f"{arch} q3 sensitivity")
    fig.tight_layout()
    fig.savefig(RESULTS / f"fmpq-{arch}-sensitivity.png", dpi=120)
    plt.close(fig)

    width = max(9.0, 0.18 * len(s.layers))  # cheng2020-anchor: 56 layer names on the axis
    fig, axes = plt.subplots(len(ratios), 1, figsize=(width, 2.4 * len(ratios)), squeeze=False)
    for ax, r in zip(axes[:, 0], ratios, strict=True):
        for k, m in enumerate(("adaptive", "dp", "dp-monotone")):
            bits = allocations[(m, r)][3]["config"].layers
            vals = [bits[n].w_bits if bits.get(n) else 32 for n in s.layers]
            ax.bar(np.arange(len(s.layers)) + (k - 1) * 0.27, vals, width=0.27, label=m)
        ax.set_xticks(range(len(s.layers)), s.layers, rotation=90, fontsize=7)
        ax.set_ylabel("bits")
        ax.set_title(f"q3, weight ratio {r:g}x", fontsize=9)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the bars
    fig.tight_layout()
    fig.savefig(RESULTS / f"fmpq-{arch}-bits.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    front = allocations[("dp", ratios[0])][3]["front"]
    fb = np.array(front["bytes"], dtype=float)
    fl = np.array([np.nan if v is None else v for v in front["loss"]], dtype=float)
    ax.plot(fb / 1e6, fl, "-", label="DP Pareto front (predicted Σζ)")
    colors = {"uniform": "C3", "adaptive": "C1", "dp": "C2", "dp-monotone": "C4"}
    for m, mk in (("uniform", "s"), ("adaptive", "o"), ("dp", "^"), ("dp-monotone", "v")):
        for r in ratios:
            f = allocations[(m, r)][3]
            ax.plot(f["weight_bytes"] / 1e6, f["measured"], mk, color=colors[m],
                    label=f"{m} (measured)" if r == ratios[0] else None)
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_xlabel("weight MB")
    ax.set_ylabel("ζ = fractional RD-loss increase")
    ax.set_title(f"{arch} q3: predicted front and measured allocations")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / f"fmpq-{arch}-pareto.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
