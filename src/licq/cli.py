"""``licq`` command line: one command, subcommands, CompressAI's ``-a/-q/-m`` flags.

Logs and progress go to stderr, results to files (and tables to stdout). A user mistake ends with
one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
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


# -- licq models ---------------------------------------------------------------------------------
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


# -- licq eval -----------------------------------------------------------------------------------
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


def cmd_eval(args: argparse.Namespace) -> int:
    _set_threads(args.threads)
    arch, points, source = _rd_points(args)
    _evaluate_and_write(args, arch, points, source, args.name or f"{arch}-licq")
    return 0


# -- licq ptq ------------------------------------------------------------------------------------
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

    prov = provenance()
    extra = {
        "setting": setting,
        "model_bytes": [s.model_bytes for s in sizes],
        "fp32_bytes": [s.fp32_bytes for s in sizes],
        "ratio": sum(s.ratio for s in sizes) / len(sizes),
        "weight_ratio": sum(s.weight_ratio for s in sizes) / len(sizes),
        "quantized_layers_ratio": sum(s.quantized_layers_ratio for s in sizes) / len(sizes),
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


def _reconstruction_config(args: argparse.Namespace, method: str | None = None):
    """The ReconstructionConfig of the ``--rdo-*`` flags (defaults where not given); they need
    ``method`` (default ``--method``) to reconstruct."""
    from licq.ptq.reconstruct import ReconstructionConfig

    method = method or getattr(args, "method", "range")
    given: dict = {k: getattr(args, f"rdo_{k}") for k in ("iters", "e2e_iters", "batch_size", "seed")
                   if getattr(args, f"rdo_{k}", None) is not None}
    for flag in ("no_fisher", "no_bias_correction"):
        if getattr(args, f"rdo_{flag}", False):
            given[flag.removeprefix("no_")] = False
    if given and method not in ("rdo", "rdo-ptq"):
        raise ValueError("--rdo-* options need --method rdo (ptq) or --init rdo-ptq (qat)")
    return ReconstructionConfig(**given)


# -- licq qat ------------------------------------------------------------------------------------
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


def _qat_settings(args: argparse.Namespace):
    from dataclasses import replace

    from licq.qat.engine import PRESETS, QATSettings
    from licq.qat.quantizers import QATSpec

    base = PRESETS[args.preset].settings if args.preset else QATSettings()
    spec = base.spec
    overrides = {k: v for k, v in {"rounding": args.rounding, "dgm_beta": args.dgm_beta,
                                   "clip": args.clip, "leaky_slope": args.leaky_slope,
                                   "params": args.qparams}.items() if v is not None}
    spec = replace(spec, **overrides) if overrides else spec
    assert isinstance(spec, QATSpec)
    dyn = {k: v for k, v in {"bits_weight": args.bits_weight, "tau0": args.tau0,
                             "tau_min": args.tau_min, "selector_hidden": args.selector_hidden,
                             "selector_bits": args.selector_bits}.items() if v is not None}
    if dyn.get("selector_bits") == 0:
        dyn["selector_bits"] = None
    if args.candidates:
        dyn["dynamic_candidates"] = tuple(args.candidates)
    return replace(base, spec=spec, scale_lr=args.scale_lr, zero_point_lr=args.zp_lr,
                   calib_crops=args.calib_crops, calib_size=args.calib_size,
                   calib_seed=args.calib_seed, equalize=args.equalize, init=args.init,
                   reconstruction=_reconstruction_config(args, args.init), **dyn)


def cmd_qat(args: argparse.Namespace) -> int:
    """QAT of each quality point on the RD loss, then real-bitstream evaluation."""
    from licq._provenance import provenance
    from licq.models import get_adapter, lambda_for
    from licq.qat import TrainConfig
    from licq.qat.engine import FINAL, PRESETS, load_qat_result, qat_quantize

    _set_threads(args.threads)
    rank = _init_distributed()
    prov = provenance()
    arch, points, source = _rd_points(args)
    adapter = get_adapter(arch)
    if args.bit_config:
        configs = _bit_configs_for(args.bit_config, [p.quality for p in points])
        setting = args.setting or "bit-config"
    elif args.w_bits is None and (args.preset == "dynaquant" or args.candidates):
        from licq.api import QuantConfig

        configs = [QuantConfig.uniform(8, 8)]  # the static base of dynamic bit-widths
        setting = args.setting or "dq-" + "-".join(map(str, args.candidates or (4, 6, 8)))
    else:
        configs, setting = _ptq_config(args, [p.quality for p in points])
        setting = args.setting or setting
    if len(configs) == 1:
        configs = configs * len(points)
    if len(configs) != len(points):
        raise ValueError(f"{len(configs)} bit configs for {len(points)} models: give one or one each")
    configs = _apply_layer_a_bits(_layer_a_bits(args), configs, points)
    settings = _qat_settings(args)
    device = args.device
    if device == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    loss = args.loss or (PRESETS[args.preset].loss if args.preset else "rd")
    run_dir = Path(args.run_dir)
    runs = []
    for p, cfg in zip(points, configs, strict=True):
        lmbda = args.lmbda if args.lmbda is not None else (
            lambda_for(p.quality, args.metric) if p.quality else None)
        if lmbda is None:
            raise ValueError("give --lambda or -q QUALITY (the model's training λ)")
        out = run_dir / f"q{p.quality}"
        if (out / FINAL).is_file() and not args.retrain:
            _log(f"q{p.quality}: finished run in {out}, loading it (--retrain to train again)")
            run = load_qat_result(p.model, out)
        else:
            train = TrainConfig(lmbda=lmbda, metric=args.metric, lr=args.lr, aux_lr=args.aux_lr,
                                batch_size=args.batch_size, patch_size=args.patch_size,
                                steps=args.steps, max_seconds=args.max_seconds,
                                clip_max_norm=args.clip_max_norm, seed=args.seed,
                                log_every=args.log_every, checkpoint_every=args.checkpoint_every,
                                loss=loss, latent_rounding=args.latent_rounding,
                                lr_schedule=args.lr_schedule, lr_final=args.lr_final,
                                lr_decay_start=args.lr_decay_start)
            resume = (out / "checkpoint.pth.tar").is_file() and not args.retrain
            log_file = None
            if rank == 0:
                out.mkdir(parents=True, exist_ok=True)
                log_file = open(out / "train.log", "a")  # noqa: SIM115 - closed below

            def log(line: str, _f=log_file) -> None:
                if _f is not None:
                    _f.write(line + "\n")
                    _f.flush()

            try:
                run = qat_quantize(
                    p.model, cfg, settings, train, train_dir=args.train_dir, out_dir=out,
                    calib_dir=args.calib_dir, adapter=adapter, resume=resume, device=device,
                    progress=not args.no_progress, log=log,
                    meta={"arch": arch, "quality": p.quality, "preset": args.preset,
                          "provenance": prov})
            finally:
                if log_file is not None:
                    log_file.close()
        p.info.update({"bit_config": run.config.to_dict(), "size": run.size.as_dict(),
                       "qat_steps": run.steps, "qat_seconds": run.train_seconds,
                       "calibration_seconds": run.calibration_seconds, "run_dir": str(out),
                       # a run trained by an earlier command (--no-eval shares) keeps its own
                       "train_provenance": run.provenance})
        if run.equalization is not None:
            p.info["equalization"] = run.equalization
        runs.append(run)
        _log(f"q{p.quality}: QAT {run.steps} steps, {run.train_seconds:.0f}s; weight ratio "
             f"{run.size.weight_ratio:.3f}x, model ratio {run.size.ratio:.3f}x")
    if rank != 0 or args.no_eval:
        return 0
    sizes = [r.size for r in runs]
    extra = {
        "setting": setting, "preset": args.preset, "qat": settings.as_dict(), "loss": loss,
        "latent_rounding": args.latent_rounding,
        "model_bytes": [s.model_bytes for s in sizes],
        "ratio": sum(s.ratio for s in sizes) / len(sizes),
        "weight_ratio": sum(s.weight_ratio for s in sizes) / len(sizes),
        "quantized_layers_ratio": sum(s.quantized_layers_ratio for s in sizes) / len(sizes),
        "steps": [r.steps for r in runs], "train_seconds": [r.train_seconds for r in runs],
        "train": {"dir": str(args.train_dir), "lr": args.lr, "lr_schedule": args.lr_schedule,
                  "lr_final": args.lr_final, "lr_decay_start": args.lr_decay_start,
                  "batch_size": args.batch_size,
                  "patch_size": args.patch_size, "device": args.device,
                  "world_size": int(os.environ.get("WORLD_SIZE", "1"))},
        "command": prov["command"], "commit": prov["commit"],
    }
    name = args.name or f"{arch}-qat-{setting}"
    results = _evaluate_and_write(args, arch, points, f"{source}, QAT {setting}", name, extra)
    if settings.dynamic_candidates is not None:
        summary = _dynamic_summary(results)
        results["licq"].update(summary)
        _log(f"dynamic: mean bits {summary['mean_bits']:.3f}, weight ratio at the bits read "
             f"{summary['ratio_at_mean_bits']:.3f}x, selector share encode "
             f"{100 * summary['selector_share_encode']:.2f}% / decode "
             f"{100 * summary['selector_share_decode']:.2f}%")
        if args.output:
            from licq.eval import plot_bit_heatmap, write_results

            write_results(results, args.output)
            heat = Path(args.output).with_suffix(".bits.png")
            plot_bit_heatmap(results, heat, title=name)
            _log(f"wrote {args.output}, {heat}")
    return 0


def _dynamic_summary(results: dict) -> dict:
    """Means over images and qualities of a dynamic-bit-width run's per-image figures;
    ``ratio_at_mean_bits`` = 32 × weights read / weight bits read (encoder + decoder)."""
    rows = [r for p in results["licq"]["points"] for r in p["per_image"]]

    def mean(key: str) -> float:
        return sum(float(r[key]) for r in rows) / len(rows)

    read = mean("weight_bits_encode") + mean("weight_bits_decode")
    return {"mean_bits": mean("mean_bits"), "selector_share_encode": mean("selector_share_encode"),
            "selector_share_decode": mean("selector_share_decode"),
            "bitops_encode": mean("bitops_encode"), "bitops_decode": mean("bitops_decode"),
            "weight_bits_read": read, "ratio_at_mean_bits": 32.0 * mean("weights_read") / read}


# -- licq export ---------------------------------------------------------------------------------
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


def _default_calib():
    from licq.defaults import default_calibration_dir

    return default_calibration_dir()


# -- licq compress / decompress -------------------------------------------------------------------
def _codec_model(args: argparse.Namespace, quality: int | None = None):
    """(model, model id, path) from -m PACKED, or the embedded default packed model of -q."""
    from licq.codec.api import default_packed_models, model_id
    from licq.defaults import DEFAULT_ARCH
    from licq.export import load_quantized
    from licq.models import list_models

    name = str(args.model) if args.model else None
    if name and not Path(name).is_file() and name in list_models() and name != DEFAULT_ARCH:
        path = _zoo_packed(name, quality or args.quality or 3)
    elif name and name != DEFAULT_ARCH:
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"model not found: {path} (give a packed model file from "
                                    f"`licq export` or a zoo name: {', '.join(list_models())})")
    else:
        models = default_packed_models()
        q = quality or args.quality or 3
        if q not in models:
            raise ValueError(f"the embedded quantized default has qualities {sorted(models)}")
        path = models[q]
    model, _ = load_quantized(path)
    return model, model_id(path), path


def _zoo_packed(arch: str, quality: int) -> Path:
    """CompressAI's pretrained ``arch`` at ``quality``, PTQ'd to W8A8 on the bundled calibration
    crops and packed, cached under ``$LICQ_CACHE`` (default ``~/.cache/licq``). The file's hash is
    the model id written into .licq files: decode with the same packed file (-m that path)."""
    from licq.api import QuantConfig
    from licq.defaults import default_calibration_dir
    from licq.export import export_packed
    from licq.models import get_adapter, load_model
    from licq.models.loading import infer_args
    from licq.ptq import post_training_quantize

    cache = Path(os.environ.get("LICQ_CACHE", Path.home() / ".cache" / "licq")) / "packed"
    path = cache / f"{arch}-q{quality}-w8a8.safetensors"
    if path.is_file():
        return path
    from licq.errors import CheckpointError

    try:
        model = load_model(arch, quality, pretrained=True)
    except OSError as e:  # no network, or the download failed
        raise CheckpointError(f"cannot get CompressAI's pretrained {arch} q{quality}: {e}") from None
    config = QuantConfig.uniform(8, 8)
    post_training_quantize(model, config, default_calibration_dir(), num_crops=32, seed=0,
                           progress=False)
    cache.mkdir(parents=True, exist_ok=True)
    export_packed(model, path, arch=arch, sizes=infer_args(get_adapter(arch), model.state_dict()),
                  config=config, quality=quality)
    _log(f"packed W8A8 {arch} q{quality} (pretrained) -> {path}")
    return path


def _write_new(path: Path, data: bytes, force: bool) -> None:
    from licq._provenance import atomic_write_bytes

    if path.exists() and not force:
        raise FileExistsError(f"{path} exists (use --force to overwrite)")
    atomic_write_bytes(path, data)


def cmd_compress(args: argparse.Namespace) -> int:
    from licq.codec import compress_image
    from licq.codec.exact import ExactPathError
    from licq.data import read_image

    _set_threads(args.threads)
    model, mid, path = _codec_model(args)
    out = Path(args.output)
    if len(args.images) > 1 and not out.is_dir():
        raise ValueError("several images: -o must be an existing folder")
    for img in args.images:
        x = read_image(img)
        t0 = time.perf_counter()
        try:
            data = compress_image(model, mid, x, exact=not args.float_path, check=args.check)
        except ExactPathError as e:
            raise ExactPathError(f"{e}; use --float-path (decodes reliably only where float "
                                 "arithmetic matches this machine's)") from None
        dt = time.perf_counter() - t0
        dst = out / (Path(img).stem + ".licq") if out.is_dir() else out
        _write_new(dst, data, args.force)
        h, w = x.shape[-2:]
        _log(f"{img} -> {dst}: {len(data):,} bytes, {8 * len(data) / (h * w):.4f} bpp "
             f"(container included), {dt:.2f}s, model {path.name}")
    return 0


def cmd_decompress(args: argparse.Namespace) -> int:
    from licq.codec import CodecFormatError, decompress_bytes
    from licq.codec.api import default_packed_models, find_model, model_id
    from licq.codec.container import Container
    from licq.data import save_image
    from licq.export import load_quantized

    _set_threads(args.threads)
    src = Path(args.input)
    if not src.is_file():
        raise FileNotFoundError(f"not found: {src}")
    data = src.read_bytes()
    if args.model:
        model, mid, _ = _codec_model(args)
    else:
        c = Container.from_bytes(data)
        path = find_model(c.model_id, list(default_packed_models().values()))
        model, mid = load_quantized(path)[0], model_id(path)
    t0 = time.perf_counter()
    x_hat = decompress_bytes(model, mid, data)
    dt = time.perf_counter() - t0
    out = Path(args.output)
    if out.exists() and not args.force:
        raise FileExistsError(f"{out} exists (use --force to overwrite)")
    tmp = out.with_name(out.name + ".tmp" + out.suffix)
    try:
        save_image(x_hat, tmp)
        os.replace(tmp, out)
    except (OSError, ValueError) as e:
        tmp.unlink(missing_ok=True)
        raise CodecFormatError(f"cannot write {out}: {e}") from None
    _log(f"{src} -> {out}: {x_hat.shape[-1]}x{x_hat.shape[-2]}, {dt:.2f}s")
    return 0


# -- licq sensitivity / search ------------------------------------------------------------------
def _single_model(args: argparse.Namespace):
    arch, points, _ = _rd_points(args)
    if len(points) != 1:
        raise ValueError("give exactly one model (one -m checkpoint, or one -q)")
    return arch, points[0]


def cmd_sensitivity(args: argparse.Namespace) -> int:
    """FMPQ sensitivity ζ_n(b) of every layer, cached by model hash, data and settings."""
    from licq.defaults import default_calibration_dir
    from licq.models import lambda_for
    from licq.search import SensitivityResult, SensitivitySettings, cache_key, compute_sensitivity
    from licq.search.sensitivity import model_hash

    _set_threads(args.threads)
    rank = _init_distributed()
    arch, point = _single_model(args)
    quality = point.quality
    lmbda = args.lmbda if args.lmbda is not None else (lambda_for(quality) if quality else None)
    if lmbda is None:
        raise ValueError("give --lambda or -q QUALITY (the model's training λ)")
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


def _name_bits(items: list[str] | None, flag: str) -> dict[str, int]:
    """``["g_a.0=10", "re:^g_s=10"]`` -> ``{"g_a.0": 10, "re:^g_s": 10}`` (NAME=BITS arguments)."""
    out = {}
    for item in items or []:
        name, _, bits = item.rpartition("=")
        if not name or not bits.isdigit():
            raise ValueError(f"{flag} expects NAME=BITS or re:REGEX=BITS, got {item!r}")
        out[name] = int(bits)
    return out


def _constraints(args: argparse.Namespace):
    from licq.search import Constraints

    return Constraints(fixed=_name_bits(args.fix, "--fix"), min_bits=args.min_bits,
                       max_bits=args.max_bits,
                       a_bits=_layer_a_bits(args),
                       float_layers=tuple(args.keep_float or ()))


def cmd_search(args: argparse.Namespace) -> int:
    """Allocate bits for a target ratio from a sensitivity file; write a bit-config JSON."""
    import json

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


# -- licq bd-rate --------------------------------------------------------------------------------
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


# -- licq train ----------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from licq._provenance import provenance
    from licq.data import CropSampler
    from licq.errors import CheckpointError
    from licq.models import get_adapter, lambda_for, read_state_dict, warm_start
    from licq.qat import TrainConfig, Trainer

    _set_threads(args.threads)
    out_dir = Path(args.out)
    resume = None
    if args.resume is not None:
        resume = Path(args.resume) if args.resume != "auto" else out_dir / Trainer.CHECKPOINT
        if not resume.is_file():
            raise CheckpointError(f"nothing to resume: {resume} does not exist")
    adapter = get_adapter(args.arch)
    sizes = tuple(s for s in (args.N, args.M) if s is not None)
    if len(sizes) != len(adapter.size_args):
        raise ValueError(f"{args.arch} needs {' and '.join('--' + s for s in adapter.size_args)}")
    if args.patch_size % adapter.pad_multiple:
        raise ValueError(
            f"--patch-size must be a multiple of {adapter.pad_multiple} for {args.arch}"
        )
    lmbda = args.lmbda if args.lmbda is not None else (
        lambda_for(args.quality, args.metric) if args.quality else None)
    if lmbda is None:
        raise ValueError("give --lambda or -q QUALITY (CompressAI's λ for that quality)")
    config = TrainConfig(
        lmbda=lmbda, metric=args.metric, lr=args.lr, aux_lr=args.aux_lr,
        batch_size=args.batch_size, patch_size=args.patch_size, steps=args.steps,
        max_seconds=args.max_seconds, clip_max_norm=args.clip_max_norm, seed=args.seed,
        log_every=args.log_every, checkpoint_every=args.checkpoint_every,
        lr_schedule=args.lr_schedule, lr_final=args.lr_final, lr_decay_start=args.lr_decay_start,
        latent_rounding=args.latent_rounding,
    )
    torch.manual_seed(args.seed)
    prov = provenance()  # the code that trains is the code at the start
    model = adapter.build(*sizes)
    init_info = None
    if args.init:
        loaded = warm_start(model, read_state_dict(args.init))
        init_info = {"init": str(args.init), "init_keys_loaded": len(loaded),
                     "model_keys": len(model.state_dict())}
        _log(f"init: {len(loaded)}/{len(model.state_dict())} tensors from {args.init}")
    sampler = CropSampler(args.dataset, patch_size=args.patch_size, seed=args.seed)
    _log(f"data: {len(sampler)} images from {args.dataset}")
    meta = {"arch": args.arch, "sizes": list(sizes), "quality": args.quality, "init": init_info}
    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"--device {args.device}: no CUDA device is available here")
        torch.backends.cudnn.benchmark = True  # fixed crop size
    trainer = Trainer(model, sampler, config, out_dir, meta=meta, device=args.device)
    if resume is not None:
        trainer.load_checkpoint(resume)
        _log(f"resumed from {resume} at step {trainer.state.step} "
             f"({trainer.state.elapsed:.0f}s trained)")
    out_dir.mkdir(parents=True, exist_ok=True)
    log_file = open(out_dir / "train.log", "a")  # noqa: SIM115 - closed below

    def log(line: str) -> None:
        log_file.write(f"lambda={lmbda} {line}\n")
        log_file.flush()

    try:
        state = trainer.fit(log=log, progress=not args.no_progress)
    finally:
        log_file.close()
    model.eval().cpu()
    model.update(force=True)
    torch.save(model.state_dict(), out_dir / "model.pth.tar")
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(out_dir / "model.safetensors"),
              metadata={"arch": args.arch, "lambda": str(lmbda)})
    summary = {"arch": args.arch, "sizes": list(sizes), "quality": args.quality, "lambda": lmbda,
               "metric": args.metric, "steps": state.step, "train_seconds": state.elapsed,
               "config": vars(args) | {"resume": args.resume}, "init": init_info,
               "last": state.last, "provenance": prov}
    (out_dir / "train.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    _log(f"done: {state.step} steps, {state.elapsed:.0f}s; wrote {out_dir / 'model.pth.tar'}")
    return 0


# -- licq demo -----------------------------------------------------------------------------------
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
    common = dict(arch=None, quality=None, checkpoint=None, pretrained=False, metric="mse",
                  dataset=None, limit=None, estimate=False, threads=args.threads,
                  no_progress=args.no_progress, plot=None)
    cmd_eval(argparse.Namespace(**common, name="licq-default-fp32",
                                output=out / "default-fp32.json"))
    print()
    cmd_ptq(argparse.Namespace(
        **common, name="licq-default-ptq-w8a8", output=out / "default-ptq-w8a8.json",
        w_bits=8, a_bits=8, weight_only=False, bit_config=None, observer="minmax",
        a_observer="mse", gdn_bits=None, layer_a_bits=None, calib_dir=None, calib_crops=32,
        calib_size=256, calib_seed=0, equalize=None))
    fp32 = read_results(out / "default-fp32.json")
    ptq = read_results(out / "default-ptq-w8a8.json")
    plot_rd([fp32, ptq], out / "rd-default.png", title="embedded default, bundled images")
    print(f"\nW8A8 PTQ vs FP32 on the {len(fp32['licq']['images'])} bundled images: "
          f"BD-rate {bd_rate(fp32, ptq):+.2f}%, BD-PSNR {bd_psnr(fp32, ptq):+.3f} dB; "
          f"model {ptq['licq']['ratio']:.2f}x smaller (weights {ptq['licq']['weight_ratio']:.2f}x, "
          f"quantized layers {ptq['licq']['quantized_layers_ratio']:.2f}x)")
    _log(f"demo finished in {time.perf_counter() - t0:.1f}s; results and rd-default.png in {out}/")
    return 0


# -- parser --------------------------------------------------------------------------------------
def _add_model_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("-a", "--arch", help="zoo name (default: the embedded default model)")
    s.add_argument("-q", "--quality", type=int, nargs="+", help="quality level(s)")
    s.add_argument("-m", "--checkpoint", type=Path, nargs="+", help="checkpoint file(s)")
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
    from licq.models import lambda_for

    if getattr(args, "lmbda", None) is not None:
        return args.lmbda
    return lambda_for(point.quality, getattr(args, "metric", "mse")) if point.quality else None


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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="licq", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("models", help="list registered architectures and their layer groups")
    s.add_argument("--layers", action="store_true", help="list every quantizable layer")
    s.set_defaults(func=cmd_models)

    s = sub.add_parser("eval", help="real-bitstream RD evaluation (CompressAI results JSON)")
    _add_eval_args(s)
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser("ptq", help="post-training quantization + real-bitstream evaluation")
    _add_eval_args(s)
    _add_bits_args(s, "per-layer bit config JSON (one, or one per model)")
    _add_calib_args(s)
    _add_equalize_arg(s)
    _add_ptq_method_args(s)
    s.add_argument("--lambda", type=float, dest="lmbda",
                   help="RD loss λ of --equalize auto / --method rdo (default: λ of the quality)")
    s.set_defaults(func=cmd_ptq)

    s = sub.add_parser("qat", help="quantization-aware training on the RD loss + evaluation")
    _add_eval_args(s)
    s.add_argument("--train-dir", type=Path, required=True,
                   help="training images (recursive; never the evaluation set)")
    s.add_argument("--run-dir", type=Path, required=True,
                   help="checkpoints and final models, one sub-folder per quality (resumes)")
    s.add_argument("--setting", help="setting name in the results (default from the bits)")
    _add_bits_args(s, "bit config JSON(s) or a licq results JSON holding one per quality")
    s.add_argument("--preset", choices=["fmpq", "dynaquant-q", "dynaquant"])
    s.add_argument("--candidates", type=int, nargs="+",
                   help="dynamic bit-width candidates (dynaquant; default 4 6 8)")
    s.add_argument("--bits-weight", type=float, help="γ of the L_bits term (dynaquant; 0.01)")
    s.add_argument("--selector-hidden", type=int, help="hidden units of each selector MLP (16)")
    s.add_argument("--selector-bits", type=int,
                   help="selector weight bits after training, 0 = float (8)")
    s.add_argument("--tau0", type=float, help="Gumbel temperature at the start (5)")
    s.add_argument("--tau-min", type=float, help="Gumbel temperature at the end (0.5)")
    s.add_argument("--rounding", choices=["ste", "dgm"], help="rounding gradient (default ste)")
    s.add_argument("--dgm-beta", type=float, help="DGM sharpness β (default 2)")
    s.add_argument("--clip", choices=["hard", "leaky"], help="clipping gradient (default hard)")
    s.add_argument("--leaky-slope", type=float, help="leaky-clip slope outside the range (0.01)")
    s.add_argument("--qparams", choices=["fixed", "lsq", "dpa"],
                   help="quantization parameters: fixed, learnable scale, or DPA (default fixed)")
    s.add_argument("--scale-lr", type=float, default=1e-4, help="Adam lr of the log-scales")
    s.add_argument("--zp-lr", type=float, default=1e-3, help="Adam lr of the zero points")
    s.add_argument("--loss", choices=["rd", "distortion"], help="default rd (R + λ·D)")
    s.add_argument("--init", default="range", choices=["range", "rdo-ptq"],
                   help="start from the calibrated model (range) or from its RD-optimised "
                        "reconstruction (rdo-ptq: `licq ptq --method rdo`, on the calibration "
                        "crops)")
    _add_reconstruction_args(s)
    _add_latent_rounding_arg(s)
    s.add_argument("--lambda", type=float, dest="lmbda", help="default: λ of the quality")
    s.add_argument("--steps", type=int)
    s.add_argument("--max-seconds", type=float, help="training wall time per quality")
    s.add_argument("--lr", type=float, default=1e-5, help="Adam lr of the network weights")
    _add_lr_schedule_args(s)
    s.add_argument("--aux-lr", type=float, default=1e-3)
    s.add_argument("--batch-size", type=int, default=8, help="global batch (split over ranks)")
    s.add_argument("--patch-size", type=int, default=128)
    s.add_argument("--clip-max-norm", type=float, default=1.0)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--log-every", type=int, default=50)
    s.add_argument("--checkpoint-every", type=int, default=200)
    s.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N")
    s.add_argument("--retrain", action="store_true", help="ignore finished runs and checkpoints")
    s.add_argument("--no-eval", action="store_true", help="train only")
    _add_calib_args(s)
    _add_equalize_arg(s)
    s.set_defaults(func=cmd_qat)

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

    s = sub.add_parser("compress", help="image(s) -> .licq file(s) with a packed quantized model")
    s.add_argument("images", type=Path, nargs="+")
    s.add_argument("-o", "--output", type=Path, required=True, help=".licq file (or a folder)")
    s.add_argument("-m", "--model", help="packed model file (licq export) or a zoo name with -q "
                   "(pretrained, W8A8, cached); default: the embedded W8A8 ScaleHyperprior")
    s.add_argument("-q", "--quality", type=int, help="quality of the embedded default (3)")
    s.add_argument("--float-path", action="store_true",
                   help="skip licq's exact arithmetic path (models it cannot run, e.g. "
                        "weight-only quantized ones); such files decode reliably only where float "
                        "arithmetic matches the encoder's")
    s.add_argument("--check", action="store_true",
                   help="also decode here and store the CRC of that reconstruction (4 bytes, one "
                        "more decode); `licq decompress` then fails unless its image is identical")
    s.add_argument("--force", action="store_true", help="overwrite existing outputs")
    s.add_argument("--threads", type=int)
    s.set_defaults(func=cmd_compress)

    s = sub.add_parser("decompress", help=".licq file -> image (PNG)")
    s.add_argument("input", type=Path)
    s.add_argument("-o", "--output", type=Path, required=True)
    s.add_argument("-m", "--model", help="packed model file or zoo name with -q, as for "
                   "compress (default: found by model id among the embedded ones)")
    s.add_argument("-q", "--quality", type=int, help="quality, with -m ZOO_NAME")
    s.add_argument("--force", action="store_true", help="overwrite an existing image")
    s.add_argument("--threads", type=int)
    s.set_defaults(func=cmd_decompress)

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

    s = sub.add_parser("bd-rate", help="BD-rate / BD-PSNR of results files against an anchor")
    s.add_argument("anchor", type=Path)
    s.add_argument("test", type=Path, nargs="+")
    s.add_argument("--metric", default="psnr-rgb", choices=["psnr-rgb", "ms-ssim-rgb"])
    s.add_argument("--method", default="akima", choices=["akima", "pchip", "cubic"])
    s.add_argument("--plot", type=Path, help="RD plot PNG of all curves")
    s.add_argument("--json", action="store_true", help="also print the numbers as JSON")
    s.set_defaults(func=cmd_bd_rate)

    s = sub.add_parser("train", help="FP32 RD training (CompressAI recipe), resumable")
    s.add_argument("-a", "--arch", required=True)
    s.add_argument("-N", type=int, dest="N")
    s.add_argument("-M", type=int, dest="M")
    s.add_argument("-q", "--quality", type=int, help="sets λ to CompressAI's λ for it")
    s.add_argument("--lambda", type=float, dest="lmbda")
    s.add_argument("--metric", default="mse", choices=["mse", "ms-ssim"])
    s.add_argument("-d", "--dataset", type=Path, required=True, help="image folder (recursive)")
    s.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    s.add_argument("--steps", type=int)
    s.add_argument("--max-seconds", type=float, help="training wall-time budget")
    s.add_argument("--lr", type=float, default=1e-4)
    _add_lr_schedule_args(s)
    _add_latent_rounding_arg(s)
    s.add_argument("--aux-lr", type=float, default=1e-3)
    s.add_argument("--batch-size", type=int, default=8)
    s.add_argument("--patch-size", type=int, default=128)
    s.add_argument("--clip-max-norm", type=float, default=1.0)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--log-every", type=int, default=50)
    s.add_argument("--checkpoint-every", type=int, default=500)
    s.add_argument("--init", type=Path, help="start from the matching tensors of this checkpoint")
    s.add_argument("--resume", nargs="?", const="auto",
                   help="continue from a training checkpoint (default: OUT/checkpoint.pth.tar)")
    s.add_argument("--threads", type=int)
    s.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("demo", help="the main job on the embedded default model and images")
    s.add_argument("-o", "--out", default="out/demo")
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from licq.errors import LicqError

    try:
        return int(args.func(args) or 0)
    except (LicqError, ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"licq {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("licq: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
