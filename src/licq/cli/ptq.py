"""``licq ptq``, ``licq sensitivity``, ``licq search``: post-training quantization and the FMPQ search."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from licq.cli._common import (
    _add_bits_args,
    _add_calib_args,
    _add_equalize_arg,
    _add_eval_args,
    _add_model_args,
    _add_ptq_method_args,
    _apply_layer_a_bits,
    _evaluate_and_write,
    _init_distributed,
    _layer_a_bits,
    _log,
    _name_bits,
    _point_lambda,
    _ptq_config,
    _rd_points,
    _reconstruction_config,
    _set_threads,
    _single_model,
)


def _constraints(args: argparse.Namespace):
    from licq.search import Constraints

    return Constraints(fixed=_name_bits(args.fix, "--fix"), min_bits=args.min_bits,
                       max_bits=args.max_bits,
                       a_bits=_layer_a_bits(args),
                       float_layers=tuple(args.keep_float or ()))


def cmd_ptq(args: argparse.Namespace) -> int:
    """Post-training quantization of each quality point, then real-bitstream evaluation."""
    from licq.defaults import default_calibration_dir
    from licq.ptq import post_training_quantize

    _set_threads(args.threads)
    arch, points, source = _rd_points(args)
    configs, setting = _ptq_config(args, [p.quality for p in points])
    if len(configs) == 1:
        configs = configs * len(points)
    if len(configs) != len(points):
        raise ValueError(f"{len(configs)} bit configs for {len(points)} models: give one or one each")
    over = _layer_a_bits(args)
    if over:
        configs = _apply_layer_a_bits(over, configs, points)
        setting += "-a" + "-a".join(f"{b}({k})" for k, b in over.items())
    if args.equalize is not None:
        setting += f"-eq{args.equalize}"
    rec_cfg = _reconstruction_config(args)
    method = getattr(args, "method", "range")  # (licq demo's namespace has no --method)
    if method != "range":
        setting += f"-{method}"
    calib = args.calib_dir or default_calibration_dir()
    sizes, seconds, ptq_seconds = [], [], []
    for p, cfg in zip(points, configs, strict=True):
        t0 = time.perf_counter()
        r = post_training_quantize(p.model, cfg, calib, num_crops=args.calib_crops,
                                   patch_size=args.calib_size, seed=args.calib_seed,
                                   progress=not args.no_progress, equalize=args.equalize,
                                   lmbda=_point_lambda(args, p), method=method,
                                   reconstruction=rec_cfg, metric=args.metric)
        ptq_seconds.append(time.perf_counter() - t0)
        sec = r.calibration.seconds if r.calibration else 0.0
        p.info.update({"bit_config": cfg.to_dict(), "size": r.size.as_dict(),
                       "calibration_seconds": sec, "ptq_seconds": ptq_seconds[-1]})
        if r.equalization is not None:
            p.info["equalization"] = r.equalization
        if r.reconstruction is not None:
            p.info["reconstruction"] = r.reconstruction.as_dict()
            kept = r.reconstruction.heldout_rd_loss
            _log(f"q{p.quality}: reconstruction {r.reconstruction.seconds:.0f}s; held-out RD "
                 "loss " + ", ".join(f"{k} {v:.4f}" for k, v in kept.items()))
        sizes.append(r.size)
        seconds.append(sec)
        _log(f"q{p.quality}: {r.size.model_bytes:,.0f} B, model ratio {r.size.ratio:.3f}x, weight "
             f"ratio {r.size.weight_ratio:.3f}x, quantized layers "
             f"{r.size.quantized_layers_ratio:.3f}x; calibration {sec:.1f}s")
    from licq._provenance import provenance
    from licq.quant.size import size_summary

    prov = provenance()
    extra = {
        "setting": setting,
        **size_summary(sizes),
        "bit_config": configs[0].to_dict() if len(set(map(str, configs))) == 1 else None,
        "calibration_seconds": seconds,
        "ptq_seconds": ptq_seconds,
        "method": method,
        "reconstruction_config": rec_cfg.as_dict() if method == "rdo" else None,
        "calibration": {"dir": str(calib) if calib else None, "crops": args.calib_crops,
                        "size": args.calib_size, "seed": args.calib_seed},
        "command": prov["command"], "commit": prov["commit"],
    }
    name = args.name or f"{arch}-ptq-{setting}"
    _evaluate_and_write(args, arch, points, f"{source}, PTQ {setting}", name, extra)
    return 0


def cmd_sensitivity(args: argparse.Namespace) -> int:
    """FMPQ sensitivity ζ_n(b) of every layer, cached by model hash, data and settings."""
    from licq.defaults import default_calibration_dir
    from licq.models import resolve_lambda
    from licq.search import SensitivityResult, SensitivitySettings, cache_key, compute_sensitivity
    from licq.search.sensitivity import model_hash

    _set_threads(args.threads)
    rank = _init_distributed()
    arch, point = _single_model(args)
    quality = point.quality
    if args.metric != "mse":  # ζ is the increase of R + λ·MSE
        raise ValueError("licq sensitivity measures the MSE RD loss: --metric ms-ssim is not "
                         "supported")
    lmbda = resolve_lambda(args.lmbda, quality, args.metric)
    calib = args.calib_dir or default_calibration_dir()
    if args.rdo_iters is not None and args.ptq != "rdo":
        raise ValueError("--rdo-iters needs --ptq rdo")
    settings = SensitivitySettings(
        bits=tuple(args.bits), a_bits=None if args.weight_only else args.a_bits, lmbda=lmbda,
        calib_dir=str(calib), num_crops=args.calib_crops, patch_size=args.calib_size,
        batch_size=args.batch_size, seed=args.calib_seed, ptq=args.ptq,
        **({"rdo_iters": args.rdo_iters} if args.rdo_iters is not None else {}))
    key = cache_key(model_hash(point.model), settings)
    cache = Path(args.cache_dir) / f"{arch}-{key}.json"
    if cache.is_file() and not args.no_cache:
        result = SensitivityResult.from_json(cache)
        _log(f"sensitivity: cached {cache}")
    else:
        result = compute_sensitivity(point.model, settings, progress=not args.no_progress)
        result.settings["arch"] = arch
        result.settings["quality"] = quality
        if rank == 0:
            result.to_json(cache)
            _log(f"sensitivity: {result.evaluations} trials in {result.seconds:.1f}s "
                 f"({result.path} path); cached {cache}")
    if rank != 0:
        return 0
    if args.output:
        result.to_json(args.output)
        _log(f"wrote {args.output}")
    print(f"{'layer':28s}" + "".join(f"{b:>9d}b" for b in result.bits))
    for n in result.layers:
        print(f"{n:28s}" + "".join(f"{100 * result.zeta[n][str(b)]:+9.2f}%" for b in result.bits))
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    """Allocate bits for a target ratio from a sensitivity file; write a bit-config JSON."""

    from licq.search import SearchError, SensitivityResult, allocate_bits

    sens = SensitivityResult.from_json(args.sensitivity)
    _, point = _single_model(args)
    try:
        alloc = allocate_bits(point.model, sens, args.target_ratio, args.method,
                              constraints=_constraints(args), basis=args.basis, tol=args.tol)
    except SearchError as e:
        if e.best is None or not args.accept_best:
            raise
        _log(f"licq search: {e}; writing the best found (--accept-best)")
        alloc = e.best
    alloc.config.to_json(args.output)
    summary = alloc.summary()
    print(json.dumps({k: v for k, v in summary.items() if k != "bits"}, indent=1))
    _log(f"wrote {args.output}: {args.basis} ratio {alloc.ratio:.3f}x (model {alloc.model_ratio:.3f}x,"
         f" quantized layers {alloc.quantized_layers_ratio:.3f}x), predicted Σζ "
         f"{alloc.predicted:+.4f}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("ptq", help="post-training quantization + real-bitstream evaluation")
    _add_eval_args(s)
    _add_bits_args(s, "per-layer bit config JSON (one, or one per model)")
    _add_calib_args(s)
    _add_equalize_arg(s)
    _add_ptq_method_args(s)
    s.add_argument("--lambda", type=float, dest="lmbda",
                   help="RD loss λ of --equalize auto / --method rdo (default: λ of the quality)")
    s.set_defaults(func=cmd_ptq)

    s = sub.add_parser("sensitivity", help="FMPQ per-layer sensitivity ζ_n(b) on training crops")
    _add_model_args(s)
    s.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4, 5, 6, 7, 8])
    s.add_argument("--a-bits", type=int, default=8)
    s.add_argument("--weight-only", action="store_true")
    s.add_argument("--lambda", type=float, dest="lmbda", help="default: λ of the quality")
    _add_calib_args(s, crops=16)
    s.add_argument("--batch-size", type=int, default=8, help="crops per forward pass")
    s.add_argument("--ptq", default="range", choices=["range", "rdo"],
                   help="what a trial layer loses: rounded to nearest (range), or after learning "
                        "its rounding and input step (rdo, as `licq ptq --method rdo`)")
    s.add_argument("--rdo-iters", type=int, help="rdo: reconstruction steps per trial (100)")
    s.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "licq" / "sensitivity"))
    s.add_argument("--no-cache", action="store_true")
    s.add_argument("-o", "--output", type=Path, help="also write the ζ table here")
    s.add_argument("--threads", type=int)
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=cmd_sensitivity)

    s = sub.add_parser("search", help="bit allocation for a target ratio (adaptive/exhaustive/dp/"
                                      "dp-monotone)")
    _add_model_args(s)
    s.add_argument("--sensitivity", type=Path, required=True, help="from `licq sensitivity -o`")
    s.add_argument("--target-ratio", type=float, required=True)
    s.add_argument("--method", default="adaptive",
                   choices=["adaptive", "exhaustive", "dp", "dp-monotone"],
                   help="dp-monotone: the DP on ζ made non-negative and non-increasing in the "
                        "bits (robust to noisy, negative ζ)")
    s.add_argument("--basis", default="weights", choices=["weights", "model"],
                   help="what the ratio measures (default: every parameter)")
    s.add_argument("--tol", type=float, default=0.01)
    s.add_argument("--fix", nargs="+", metavar="NAME=BITS", help="fixed bits, e.g. 're:^h_=8'")
    s.add_argument("--keep-float", nargs="+", metavar="NAME", help="layers kept float")
    s.add_argument("--layer-a-bits", nargs="+", metavar="NAME=BITS",
                   help="activation bits of named layers (default: the sensitivity's a-bits)")
    s.add_argument("--min-bits", type=int)
    s.add_argument("--max-bits", type=int)
    s.add_argument("--accept-best", action="store_true",
                   help="write the closest allocation when the target cannot be met")
    s.add_argument("-o", "--output", type=Path, required=True, help="bit-config JSON")
    s.set_defaults(func=cmd_search)
