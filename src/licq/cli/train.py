"""``licq train``: FP32 RD training, resumable."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from licq.cli._common import (
    _add_latent_rounding_arg,
    _add_lr_schedule_args,
    _log,
    _set_threads,
)


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from licq._provenance import provenance
    from licq.data import CropSampler
    from licq.errors import CheckpointError
    from licq.models import get_adapter, read_state_dict, resolve_lambda, warm_start
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
    lmbda = resolve_lambda(args.lmbda, args.quality, args.metric)
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


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("train", help="FP32 RD training (CompressAI recipe), resumable")
    s.add_argument("-a", "--arch", required=True)
    s.add_argument("-N", type=int, dest="N")
    s.add_argument("-M", type=int, dest="M")
    s.add_argument("-q", "--quality", type=int, help="sets λ to CompressAI's λ for it")
    s.add_argument("--lambda", type=float, dest="lmbda")
    s.add_argument("--metric", default="mse", choices=["mse", "ms-ssim"])
    s.add_argument("-d", "--dataset", type=Path, required=True, help="image folder (recursive)")
    s.add_argument("-o", "--output", "--out", dest="out", type=Path, required=True,
                   help="output folder")
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
