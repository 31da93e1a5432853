"""Helpers shared by the command modules: option groups, model loading, evaluation."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

EXIT_USER_ERROR = 2


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _init_distributed() -> int:
    """Join the process group when started by torchrun (gloo on CPU, NCCL on GPU); the rank."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank()


def _set_threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def _rd_points(args: argparse.Namespace) -> tuple[str, list, str]:
    """Build the models named on the command line: (arch, [RDPoint], description)."""
    from licq._provenance import sha256_file
    from licq.defaults import DEFAULT_ARCH, default_checkpoints
    from licq.eval import RDPoint
    from licq.models import load_model

    if args.checkpoint:
        packed = [_packed_meta(c) for c in args.checkpoint]
        if all(packed):  # licq packed quantized models: architecture and quality inside
            arch = packed[0]["arch"]
            qualities = args.quality or [m["quality"] for m in packed]
        else:
            arch = args.arch or DEFAULT_ARCH
            qualities = args.quality or [None] * len(args.checkpoint)
        if len(qualities) != len(args.checkpoint):
            raise ValueError("give one -q per -m checkpoint, or none")
        pts = [RDPoint(_load_any(arch, c, m is not None), q,
                       {"checkpoint": str(c), "checkpoint_sha256": sha256_file(c)})
               for c, q, m in zip(args.checkpoint, qualities, packed, strict=True)]
        return arch, pts, "packed quantized models" if all(packed) else "checkpoints"
    if args.pretrained:
        if not args.arch or not args.quality:
            raise ValueError("--pretrained needs -a ARCH and -q QUALITY [QUALITY ...]")
        pts = [RDPoint(load_model(args.arch, q, pretrained=True, metric=args.metric), q,
                       {"pretrained": f"compressai zoo {args.arch} {args.metric} q{q}"})
               for q in args.quality]
        return args.arch, pts, "compressai pretrained"
    if args.arch and args.arch != DEFAULT_ARCH:
        raise ValueError(f"-a {args.arch}: give checkpoints with -m or use --pretrained")
    ckpts = default_checkpoints()
    qualities = args.quality or sorted(ckpts)
    unknown = [q for q in qualities if q not in ckpts]
    if unknown:
        raise ValueError(f"the embedded default has qualities {sorted(ckpts)}, not {unknown}")
    pts = [RDPoint(load_model(DEFAULT_ARCH, checkpoint=ckpts[q]), q,
                   {"checkpoint": f"licq:assets/models/{ckpts[q].name}",
                    "checkpoint_sha256": sha256_file(ckpts[q])})
           for q in qualities]
    return DEFAULT_ARCH, pts, "embedded default (licq FP32 baseline)"


def _packed_meta(path: Path) -> dict | None:
    """The metadata of a licq packed model file, or None for any other checkpoint."""
    if Path(path).suffix != ".safetensors" or not Path(path).is_file():
        return None
    from licq.export import PackedModelError, read_packed_metadata

    try:
        return read_packed_metadata(path)
    except PackedModelError as e:
        if "not a licq packed model" in str(e):
            return None
        raise


def _load_any(arch: str, path: Path, packed: bool):
    from licq.models import load_model

    if packed:
        from licq.export import load_quantized

        return load_quantized(path)[0]
    return load_model(arch, checkpoint=path)


def _evaluate_and_write(
    args: argparse.Namespace, arch: str, points: list, source: str, name: str,
    extra: dict | None = None,
) -> dict:
    """Evaluate RD points on the dataset (or the bundled images); print, write, plot."""
    from licq.data import list_images
    from licq.defaults import sample_images
    from licq.eval import evaluate_rd, format_table, plot_rd, write_results
    from licq.models import get_adapter

    images = list_images(args.dataset) if args.dataset else sample_images()
    if args.limit:
        images = images[: args.limit]
    if getattr(args, "backend", "torch") == "int8":
        from licq.api import quantized_layers
        from licq.export.onnx import int8_backend

        for p in points:
            if not quantized_layers(p.model):
                _log(f"q{p.quality}: no quantized layers; ONNX Runtime runs it in float")
            p.model = int8_backend(p.model, threads=args.threads)
        source += ", ONNX Runtime int8 backend"
    dataset = str(args.dataset) if args.dataset else "licq:assets/images"
    results = evaluate_rd(
        points, images, name=name, arch=arch,
        description=f"Inference (ans), real bitstreams, CPU, {args.threads or 'default'} "
                    f"thread(s); {source}; {len(images)} images from {dataset}",
        pad_multiple=get_adapter(arch).pad_multiple, estimate=args.estimate,
        progress=not args.no_progress, extra={"dataset": dataset, **(extra or {})},
    )
    print(format_table(results))
    if args.output:
        write_results(results, args.output)
        _log(f"wrote {args.output}")
    if args.plot:
        plot_rd([results], args.plot, title=name)
        _log(f"wrote {args.plot}")
    return results


def _ptq_config(args: argparse.Namespace, qualities: list[int | None]):
    from licq.api import LayerQConfig, QuantConfig

    if args.bit_config:
        return _bit_configs_for(args.bit_config, qualities), "bit-config"
    if args.w_bits is None:
        raise ValueError("give --w-bits (with --a-bits or --weight-only) or --bit-config FILE")
    a_bits = None if args.weight_only else args.a_bits
    layer = LayerQConfig(args.w_bits, a_bits, observer=args.observer, a_observer=args.a_observer)
    setting = f"w{args.w_bits}a{a_bits}" if a_bits else f"w{args.w_bits}-wonly"
    return [QuantConfig(default=layer, gdn_bits=args.gdn_bits)], setting


def _layer_a_bits(args: argparse.Namespace) -> dict[str, int]:
    return _name_bits(args.layer_a_bits, "--layer-a-bits")


def _apply_layer_a_bits(over: dict[str, int], configs: list, points: list) -> list:
    """``--layer-a-bits`` (parsed): each model's config with those layers' activation bits
    replaced."""
    from licq.api import quantizable_layer_names

    if not over:
        return configs
    return [c.with_a_bits(over, quantizable_layer_names(p.model))
            for c, p in zip(configs, points, strict=True)]


def _reconstruction_config(args: argparse.Namespace, method: str | None = None):
    """The ReconstructionConfig of the ``--rdo-*`` flags (defaults where not given); they need
    ``method`` (default ``--method``) to reconstruct."""
    from licq.ptq.reconstruct import ReconstructionConfig

    method = method or getattr(args, "method", "range")
    given: dict = {k: getattr(args, f"rdo_{k}") for k in ("iters", "e2e_iters", "batch_size", "seed")
                   if getattr(args, f"rdo_{k}", None) is not None}
    for flag in ("no_fisher", "no_bias_correction", "no_fallback"):
        if getattr(args, f"rdo_{flag}", False):
            given[flag.removeprefix("no_")] = False
    if given and method not in ("rdo", "rdo-ptq"):
        raise ValueError("--rdo-* options need --method rdo (ptq) or --init rdo-ptq (qat)")
    return ReconstructionConfig(**given)


def _bit_configs_for(paths: list[Path], qualities: list[int | None]) -> list:
    """One QuantConfig per model from bit-config JSON files or licq results files (the
    ``licq.points[].bit_config`` of e.g. an FMPQ result, matched by quality)."""
    from licq.api import QuantConfig

    configs = []
    for path in paths:
        data = json.loads(Path(path).read_text())
        if "licq" in data and "points" in data["licq"]:
            by_q = {pt.get("quality"): pt.get("bit_config") for pt in data["licq"]["points"]}
            for q in qualities:
                if by_q.get(q) is None:
                    raise ValueError(f"{path}: no bit_config for quality {q}")
                configs.append(QuantConfig.from_dict(by_q[q]))
            return configs
        configs.append(QuantConfig.from_dict(data))
    return configs


def _single_model(args: argparse.Namespace):
    arch, points, _ = _rd_points(args)
    if len(points) != 1:
        raise ValueError("give exactly one model (one -m checkpoint, or one -q)")
    return arch, points[0]


def _name_bits(items: list[str] | None, flag: str) -> dict[str, int]:
    """``["g_a.0=10", "re:^g_s=10"]`` -> ``{"g_a.0": 10, "re:^g_s": 10}`` (NAME=BITS arguments)."""
    out = {}
    for item in items or []:
        name, _, bits = item.rpartition("=")
        if not name or not bits.isdigit():
            raise ValueError(f"{flag} expects NAME=BITS or re:REGEX=BITS, got {item!r}")
        out[name] = int(bits)
    return out


def _add_model_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("-a", "--arch", help="zoo name (default: the embedded default model)")
    s.add_argument("-q", "--quality", type=int, nargs="+", help="quality level(s)")
    s.add_argument("-m", "--checkpoint", "--model", dest="checkpoint", type=Path, nargs="+",
                   help="checkpoint or packed model file(s)")
    s.add_argument("--pretrained", action="store_true", help="CompressAI's released weights")
    s.add_argument("--metric", default="mse", choices=["mse", "ms-ssim"])


def _add_lr_schedule_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("--lr-schedule", default="constant", choices=["constant", "cosine"],
                   help="cosine: every learning rate but the aux one decays over --steps")
    s.add_argument("--lr-final", type=float, default=0.01,
                   help="cosine: the last step's lr as a fraction of the first (default 0.01)")
    s.add_argument("--lr-decay-start", type=int, default=0, metavar="STEP",
                   help="cosine: constant lr until STEP, then the decay (e.g. to anneal a resumed "
                        "constant-lr run)")


def _add_latent_rounding_arg(s: argparse.ArgumentParser) -> None:
    # the choices of licq.qat.loop.LATENT_ROUNDINGS (not imported here: the CLI starts without torch)
    s.add_argument("--latent-rounding", default="noise", choices=["noise", "ste", "mixed"],
                   help="latents while training: noise (CompressAI), ste (rounded, straight-"
                        "through), mixed (rate from the noisy latent, synthesis fed the rounded one)")


def _add_calib_args(s: argparse.ArgumentParser, crops: int = 32) -> None:
    s.add_argument("--calib-dir", type=Path, help="calibration images (training set, never Kodak; "
                   "default: the bundled training crops)")
    s.add_argument("--calib-crops", type=int, default=crops)
    s.add_argument("--calib-size", type=int, default=256)
    s.add_argument("--calib-seed", type=int, default=0)


def _add_equalize_arg(s: argparse.ArgumentParser) -> None:
    s.add_argument("--equalize", type=_equalize_arg, metavar="ALPHA|auto",
                   help="rescale channels before quantizing so activation ranges are even "
                   "(SmoothQuant-style α in [0, 1]; auto: the α of 0.25/0.5/0.75/1 or none with "
                   "the lowest RD loss on held-out training crops)")


def _add_ptq_method_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("--method", default="range", choices=["range", "rdo"],
                   help="range: observers set the ranges (default); rdo: then learn each "
                        "weight's rounding and the activation steps block by block on the RD-"
                        "weighted reconstruction error, plus an end-to-end RD stage")
    _add_reconstruction_args(s)


def _add_reconstruction_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("--rdo-iters", type=int, help="rdo: steps per block (300)")
    s.add_argument("--rdo-e2e-iters", type=int, help="rdo: steps of the end-to-end stage (100)")
    s.add_argument("--rdo-batch-size", type=int, help="rdo: crops per step (4)")
    s.add_argument("--rdo-seed", type=int, help="rdo: seed of crop sampling and noise (0)")
    s.add_argument("--rdo-no-fisher", action="store_true",
                   help="rdo: plain MSE block error instead of the RD-gradient-weighted one")
    s.add_argument("--rdo-no-bias-correction", action="store_true", help="rdo: skip it")
    s.add_argument("--rdo-no-fallback", action="store_true",
                   help="rdo: keep the reconstruction even where it does not lower the held-out "
                        "RD loss below the calibrated model's")


def _equalize_arg(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        alpha = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1] or 'auto', got {text!r}"
                                         ) from None
    if not 0.0 <= alpha <= 1.0:
        raise argparse.ArgumentTypeError(f"α must be in [0, 1], got {alpha}")
    return alpha


def _point_lambda(args: argparse.Namespace, point) -> float | None:
    """The RD loss λ of a model point: --lambda where the command has it, else its quality's."""
    from licq.models import resolve_lambda

    if getattr(args, "lmbda", None) is None and not point.quality:
        return None
    return resolve_lambda(getattr(args, "lmbda", None), point.quality, getattr(args, "metric", "mse"))


def _add_bits_args(s: argparse.ArgumentParser, bit_config_help: str) -> None:
    s.add_argument("--w-bits", type=int, help="uniform weight bits (2-16)")
    s.add_argument("--a-bits", type=int, default=8, help="uniform input-activation bits")
    s.add_argument("--weight-only", action="store_true", help="do not quantize activations")
    s.add_argument("--bit-config", type=Path, nargs="+", help=bit_config_help)
    s.add_argument("--observer", default="minmax", choices=["minmax", "percentile", "mse"])
    s.add_argument("--a-observer", default="mse", choices=["minmax", "percentile", "mse"])
    s.add_argument("--gdn-bits", type=int, help="precision of GDN/IGDN γ, β (default: w-bits)")
    s.add_argument("--layer-a-bits", nargs="+", metavar="NAME=BITS",
                   help="input-activation bits of named layers, after the bit config, e.g. "
                        "'re:^g_s(\\.|$)=10' (layers that quantize their inputs)")


def _add_eval_args(s: argparse.ArgumentParser) -> None:
    _add_model_args(s)
    s.add_argument("-d", "--dataset", type=Path, help="image folder (default: bundled images)")
    s.add_argument("--limit", type=int, help="only the first N images")
    s.add_argument("-o", "--output", type=Path, help="results JSON")
    s.add_argument("--plot", type=Path, help="RD plot PNG")
    s.add_argument("--name", help="curve name in the results")
    s.add_argument("--estimate", action="store_true",
                   help="also report the likelihood estimate of bpp (bpp_estimate)")
    s.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    s.add_argument("--backend", choices=["torch", "int8"], default="torch",
                   help="int8: quantized g_a/h_a/g_s run as QDQ ONNX in ONNX Runtime (int8 "
                        "kernels where it fuses them); default: PyTorch (fake-quant)")
    s.add_argument("--no-progress", action="store_true")
