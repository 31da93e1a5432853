"""``licq export``: packed low-bit model files (and QDQ ONNX)."""

from __future__ import annotations

import argparse
from pathlib import Path

from licq.cli._common import (
    _add_bits_args,
    _add_calib_args,
    _add_equalize_arg,
    _add_model_args,
    _add_ptq_method_args,
    _apply_layer_a_bits,
    _layer_a_bits,
    _log,
    _point_lambda,
    _ptq_config,
    _reconstruction_config,
    _set_threads,
    _single_model,
)


def _default_calib():
    from licq.defaults import default_calibration_dir

    return default_calibration_dir()


def cmd_export(args: argparse.Namespace) -> int:
    """A quantized codec (PTQ of a bit config, or a finished QAT run) as a packed model file."""
    from licq._provenance import provenance
    from licq.export import export_packed, load_quantized
    from licq.models import get_adapter
    from licq.models.loading import infer_args
    from licq.ptq import post_training_quantize
    from licq.qat.engine import load_qat_result
    from licq.search.sensitivity import model_hash

    _set_threads(args.threads)
    arch, point = _single_model(args)
    fp32_hash = model_hash(point.model)
    sizes = infer_args(get_adapter(arch), point.model.state_dict())
    if args.qat_run:
        if args.layer_a_bits or args.equalize is not None or args.method != "range":
            raise ValueError("--layer-a-bits / --equalize / --method apply to a PTQ config; a "
                             "QAT run keeps its own")
        run = load_qat_result(point.model, args.qat_run)
        config, size, source = run.config, run.size, f"QAT run {args.qat_run}"
    else:
        configs, setting = _ptq_config(args, [point.quality])
        if len(configs) != 1:
            raise ValueError("give one bit config")
        config = _apply_layer_a_bits(_layer_a_bits(args), configs, [point])[0]
        r = post_training_quantize(point.model, config, args.calib_dir or _default_calib(),
                                   num_crops=args.calib_crops, patch_size=args.calib_size,
                                   seed=args.calib_seed, progress=not args.no_progress,
                                   equalize=args.equalize, lmbda=_point_lambda(args, point),
                                   method=args.method, reconstruction=_reconstruction_config(args),
                                   metric=args.metric)
        size, source = r.size, f"PTQ {setting}" + ("" if args.method == "range" else
                                                    f" --method {args.method}")
    model = point.model.eval()
    nbytes = export_packed(model, args.output, arch=arch, sizes=sizes, config=config,
                           quality=point.quality, fp32_sha256=fp32_hash,
                           extra={"source": source, "provenance": provenance()})
    load_quantized(args.output)  # it must load back
    if args.onnx:
        from licq.export.onnx import export_onnx

        paths = export_onnx(model, args.onnx)
        _log(f"ONNX (QDQ): {', '.join(str(p) for p in paths.values())}")
    fp32_file = point.info.get("checkpoint")
    fp32_bytes = Path(fp32_file).stat().st_size if fp32_file and Path(fp32_file).is_file() else None
    print(f"wrote {args.output}: {nbytes:,} bytes; size accounting {size.model_bytes:,.0f} bytes "
          f"({100 * (nbytes / size.model_bytes - 1):+.2f}%); FP32 state {size.fp32_bytes:,.0f} bytes"
          + (f", FP32 file {fp32_bytes:,} bytes ({fp32_bytes / nbytes:.2f}x)" if fp32_bytes else ""))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("export", help="packed low-bit model file (.safetensors)")
    _add_model_args(s)
    s.add_argument("-o", "--output", type=Path, required=True, help="packed .safetensors file")
    s.add_argument("--qat-run", type=Path, help="a finished `licq qat` quality folder (runs/x/q3)")
    s.add_argument("--onnx", type=Path, help="also write g_a/h_a/g_s/h_s as QDQ ONNX into this folder")
    _add_bits_args(s, "per-layer bit config JSON (PTQ)")
    _add_calib_args(s)
    _add_equalize_arg(s)
    _add_ptq_method_args(s)
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=cmd_export)
