"""``licq models``, ``licq eval``, ``licq bd-rate``, ``licq demo``: real-bitstream RD evaluation."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from licq.cli._common import (
    _add_eval_args,
    _evaluate_and_write,
    _log,
    _rd_points,
    _set_threads,
)


def cmd_models(args: argparse.Namespace) -> int:
    from licq.models import get_adapter, list_models

    for name in list_models():
        a = get_adapter(name)
        model = a.build(*a.tiny_args)
        groups = a.groups(model)
        desc = ", ".join(f"{g}: {len(v)}" for g, v in groups.items())
        print(f"{name:22s} {a.cls.__name__:40s} quantizable layers ({desc})")
        if args.layers:
            for layer, group in a.quantizable_layers(model).items():
                print(f"    {group:20s} {layer}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    _set_threads(args.threads)
    arch, points, source = _rd_points(args)
    _evaluate_and_write(args, arch, points, source, args.name or f"{arch}-licq")
    return 0


def cmd_bd_rate(args: argparse.Namespace) -> int:
    from licq.eval import bd_psnr, bd_rate, plot_rd, read_results

    anchor = read_results(args.anchor)
    tests = [read_results(t) for t in args.test]
    out = []
    for path, test in zip(args.test, tests, strict=True):
        row = {"anchor": anchor["name"], "test": test["name"], "file": str(path),
               "metric": args.metric,
               "bd_rate_percent": bd_rate(anchor, test, args.metric, args.method),
               "bd_metric": bd_psnr(anchor, test, args.metric, args.method)}
        out.append(row)
        unit = "dB" if args.metric == "psnr-rgb" else ""
        print(f"{test['name']} vs {anchor['name']} ({args.metric}): "
              f"BD-rate {row['bd_rate_percent']:+.2f}%  BD-{args.metric} "
              f"{row['bd_metric']:+.4f}{unit}")
    if args.json:
        print(json.dumps(out, indent=1))
    if args.plot:
        plot_rd([anchor, *tests], args.plot)
        _log(f"wrote {args.plot}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job on the embedded default model and bundled images.

    FP32 evaluation, then uniform W8A8 post-training quantization (calibrated on the bundled
    training crops), both through real bitstreams; prints both RD tables, the model sizes and the
    BD-rate of the quantized codec against FP32, and writes the results and an RD plot.
    """
    from licq.eval import bd_psnr, bd_rate, plot_rd, read_results

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    from licq.cli import build_parser

    parser = build_parser()  # the two steps are exactly these commands, with their defaults
    opts = ["--threads", str(args.threads)] + (["--no-progress"] if args.no_progress else [])
    for step in (["eval", "--name", "licq-default-fp32", "-o", str(out / "default-fp32.json")],
                 ["ptq", "--w-bits", "8", "--a-bits", "8", "--name", "licq-default-ptq-w8a8",
                  "-o", str(out / "default-ptq-w8a8.json")]):
        sub_args = parser.parse_args(step + opts)
        sub_args.func(sub_args)
        print()
    fp32 = read_results(out / "default-fp32.json")
    ptq = read_results(out / "default-ptq-w8a8.json")
    plot_rd([fp32, ptq], out / "rd-default.png", title="embedded default, bundled images")
    print(f"\nW8A8 PTQ vs FP32 on the {len(fp32['licq']['images'])} bundled images: "
          f"BD-rate {bd_rate(fp32, ptq):+.2f}%, BD-PSNR {bd_psnr(fp32, ptq):+.3f} dB; "
          f"model {ptq['licq']['ratio']:.2f}x smaller (weights {ptq['licq']['weight_ratio']:.2f}x, "
          f"quantized layers {ptq['licq']['quantized_layers_ratio']:.2f}x)")
    _log(f"demo finished in {time.perf_counter() - t0:.1f}s; results and rd-default.png in {out}/")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("models", help="list registered architectures and their layer groups")
    s.add_argument("--layers", action="store_true", help="list every quantizable layer")
    s.set_defaults(func=cmd_models)

    s = sub.add_parser("eval", help="real-bitstream RD evaluation (CompressAI results JSON)")
    _add_eval_args(s)
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser("bd-rate", help="BD-rate / BD-PSNR of results files against an anchor")
    s.add_argument("anchor", type=Path)
    s.add_argument("test", type=Path, nargs="+")
    s.add_argument("--metric", default="psnr-rgb", choices=["psnr-rgb", "ms-ssim-rgb"])
    s.add_argument("--method", default="akima", choices=["akima", "pchip", "cubic"])
    s.add_argument("--plot", type=Path, help="RD plot PNG of all curves")
    s.add_argument("--json", action="store_true", help="also print the numbers as JSON")
    s.set_defaults(func=cmd_bd_rate)

    s = sub.add_parser("demo", help="the main job on the embedded default model and images")
    s.add_argument("-o", "--output", "--out", dest="out", default="out/demo",
                   help="output folder (default out/demo)")
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=cmd_demo)
