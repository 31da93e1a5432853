"""``licq qat``: quantization-aware training on the RD loss (FMPQ, DynaQuant), then evaluation."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from licq.cli._common import (
    _add_bits_args,
    _add_calib_args,
    _add_equalize_arg,
    _add_eval_args,
    _add_latent_rounding_arg,
    _add_lr_schedule_args,
    _add_reconstruction_args,
    _apply_layer_a_bits,
    _bit_configs_for,
    _evaluate_and_write,
    _init_distributed,
    _layer_a_bits,
    _log,
    _ptq_config,
    _rd_points,
    _reconstruction_config,
    _set_threads,
)


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
    from licq.models import get_adapter, resolve_lambda
    from licq.qat import TrainConfig
    from licq.qat.engine import FINAL, PRESETS, train_or_load

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
        lmbda = resolve_lambda(args.lmbda, p.quality, args.metric)
        out = run_dir / f"q{p.quality}"
        if (out / FINAL).is_file() and not args.retrain:
            _log(f"q{p.quality}: finished run in {out}, loading it (--retrain to train again)")
        train = TrainConfig(lmbda=lmbda, metric=args.metric, lr=args.lr, aux_lr=args.aux_lr,
                            batch_size=args.batch_size, patch_size=args.patch_size,
                            steps=args.steps, max_seconds=args.max_seconds,
                            clip_max_norm=args.clip_max_norm, seed=args.seed,
                            log_every=args.log_every, checkpoint_every=args.checkpoint_every,
                            loss=loss, latent_rounding=args.latent_rounding,
                            lr_schedule=args.lr_schedule, lr_final=args.lr_final,
                            lr_decay_start=args.lr_decay_start)
        run = train_or_load(
            p.model, cfg, settings, train, out_dir=out, retrain=args.retrain,
            write_log=rank == 0, train_dir=args.train_dir, calib_dir=args.calib_dir,
            adapter=adapter, device=device, progress=not args.no_progress,
            meta={"arch": arch, "quality": p.quality, "preset": args.preset, "provenance": prov})
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
    from licq.quant.size import size_summary

    sizes = [r.size for r in runs]
    extra = {
        "setting": setting, "preset": args.preset, "qat": settings.as_dict(), "loss": loss,
        "latent_rounding": args.latent_rounding,
        **size_summary(sizes),
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
        from licq.dynamic import dynamic_summary

        summary = dynamic_summary(results)
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


def register(sub: argparse._SubParsersAction) -> None:
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
