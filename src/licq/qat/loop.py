"""The training loop shared by ``licq train`` (FP32) and QAT.

CompressAI's recipe: Adam on the model parameters, a separate Adam on the entropy bottleneck's
quantiles for the auxiliary loss, gradient-norm clipping, random crops. Checkpoints are written
atomically and hold everything needed to continue exactly: model, both optimizers, step, elapsed
time, the crop sampler's generator and the global torch RNG (the entropy bottleneck's noise).

Data-parallel: when ``torch.distributed`` is initialised (``torchrun``), the model is wrapped in
DistributedDataParallel and every rank takes its slice of the *global* batch the shared-seed crop
sampler draws (``batch_size`` is the global batch). Averaged gradients of equal slices are the
gradient of the global batch, so N ranks train what one process with the global batch trains
(exactly so with ``latent_rounding="ste"``; with noise, "mixed" included, each rank draws
its own noise).
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
import os
import pickle
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.torch_version import TorchVersion
from tqdm.auto import tqdm

from licq._provenance import atomic_write_bytes
from licq.data import CropSampler
from licq.errors import CheckpointError, LicqError
from licq.qat.loss import RateDistortionLoss


class TrainingDiverged(LicqError):
    """A loss became NaN or infinite."""


# How the entropy models treat the latents while training:
#   "noise": CompressAI's additive uniform noise, for the rate and for the synthesis alike;
#   "ste":   rounded as at inference (round(y − μ) + μ), straight-through gradient; deterministic;
#   "mixed": the rate from the noisy latent, the synthesis (and a context model) fed the rounded
#            one, straight-through (Minnen & Singh 2020): no train/inference mismatch in g_s.
LATENT_ROUNDINGS = ("noise", "ste", "mixed")


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run (defaults: the recipe of licq's baselines)."""

    lmbda: float = 0.0067  # RD trade-off λ (CompressAI's q3)
    metric: str = "mse"  # "mse" or "ms-ssim"
    lr: float = 1e-4  # Adam learning rate of the network
    aux_lr: float = 1e-3  # Adam learning rate of the entropy-bottleneck quantiles
    batch_size: int = 8
    patch_size: int = 128  # random square crops
    steps: int | None = None  # stop after this many steps ...
    max_seconds: float | None = None  # ... or this much training wall time, whichever first
    clip_max_norm: float = 1.0  # gradient-norm clipping (0 disables)
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 500  # steps between checkpoints (and one at the end)
    loss: str = "rd"  # "rd": R + λ·D; "distortion": λ·D only (the ablation of the rate term)
    # latents while training (see LATENT_ROUNDINGS): "noise" (CompressAI), "ste" or "mixed"
    latent_rounding: str = "noise"
    # learning rates over the run: "constant", or "cosine" (every group of the main optimizer,
    # quantizer parameters included, keeps its own lr until step lr_decay_start, then decays
    # along a half cosine to lr_final × that lr at `steps`; the auxiliary optimizer keeps its lr).
    # lr_decay_start > 0 gives a constant phase then a decay phase, so a constant-lr run can be
    # resumed and annealed.
    lr_schedule: str = "constant"
    lr_final: float = 0.01
    lr_decay_start: int = 0

    def lr_factor(self, step: int) -> float:
        """Multiplier of every base learning rate at 0-based ``step``."""
        if self.lr_schedule == "constant" or step < self.lr_decay_start:
            return 1.0
        t = min(1.0, (step - self.lr_decay_start) / (self.steps - self.lr_decay_start))
        return self.lr_final + (1 - self.lr_final) * 0.5 * (1 + math.cos(math.pi * t))

    def __post_init__(self) -> None:
        if self.steps is None and self.max_seconds is None:
            raise ValueError("give steps or max_seconds (or both)")
        if self.steps is not None and self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if self.batch_size < 1 or self.patch_size < 16:
            raise ValueError("batch_size must be >= 1 and patch_size >= 16")
        if self.lr <= 0 or self.aux_lr <= 0:
            raise ValueError("learning rates must be positive")
        if self.loss not in ("rd", "distortion"):
            raise ValueError(f"loss must be 'rd' or 'distortion', got {self.loss!r}")
        if self.latent_rounding not in LATENT_ROUNDINGS:
            raise ValueError(f"latent_rounding must be one of {LATENT_ROUNDINGS}, "
                             f"got {self.latent_rounding!r}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        if self.lr_schedule == "cosine" and not self.steps:
            raise ValueError("a cosine learning-rate schedule needs steps (it decays over them)")
        if self.lr_schedule == "cosine" and not 0 <= self.lr_decay_start < self.steps:
            raise ValueError(f"lr_decay_start must be in [0, steps), got {self.lr_decay_start}")
        if not 0 <= self.lr_final <= 1:
            raise ValueError(f"lr_final must be in [0, 1], got {self.lr_final}")


def split_parameters(
    model: nn.Module, exclude: set[int] | None = None,
) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(network parameters, auxiliary quantile parameters), CompressAI's split; parameters whose
    ``id`` is in ``exclude`` (QAT quantizer parameters, optimised in their own groups) are left out.
    """
    main, aux = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad or (exclude and id(p) in exclude):
            continue
        (aux if name.endswith(".quantiles") else main).append(p)
    return main, aux


def settle_quantiles(model: nn.Module, steps: int = 10000, lr: float = 1e-3) -> tuple[float, float]:
    """Fit the entropy bottlenecks' quantiles alone: ``steps`` Adam steps on ``model.aux_loss()``.

    The auxiliary loss depends on no data, only on the factorized prior's own CDF, so this is the
    tail of CompressAI's auxiliary optimisation run to convergence, for short training runs whose
    aux loss is still far from its minimum (their ``update()`` would then use ill-fitted
    quantiles: a wrong coding range and medians for z). Returns the aux loss (before, after).
    """
    _, aux = split_parameters(model)
    if not aux:
        raise ValueError("the model has no entropy-bottleneck quantiles")
    opt = torch.optim.Adam(aux, lr=lr)
    with torch.enable_grad():
        before = float(model.aux_loss().detach())
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = model.aux_loss()
            loss.backward()
            opt.step()
        return before, float(model.aux_loss().detach())


def _ste_quantize(module: nn.Module, inputs: torch.Tensor, mode: str, means=None):
    """An entropy model's ``quantize`` with training noise replaced by rounding + STE."""
    if mode != "noise" or getattr(module, "_licq_noisy", False):
        return type(module).quantize(module, inputs, mode, means)
    rounded = type(module).quantize(module, inputs, "dequantize", means)
    return inputs + (rounded - inputs).detach()


def _mixed_forward(module: nn.Module, *args, **kwargs):
    """An entropy model's ``forward`` in ``"mixed"`` mode: likelihoods of the noisy latent (the
    rate proxy CompressAI trains with), outputs rounded as at inference (straight-through)."""
    if not kwargs.get("training", module.training):
        return type(module).forward(module, *args, **kwargs)
    module._licq_noisy = True  # the forward's own quantize call adds noise
    try:
        noisy, likelihoods = type(module).forward(module, *args, **kwargs)
    finally:
        del module._licq_noisy
    with torch.no_grad():
        rounded, _ = type(module).forward(module, *args, **{**kwargs, "training": False})
    return noisy + (rounded - noisy).detach(), likelihoods


@contextmanager
def latent_rounding(model: nn.Module, mode: str) -> Iterator[None]:
    """Inside the block the model's entropy models treat their latents as ``mode`` says while
    training (LATENT_ROUNDINGS); ``"noise"`` changes nothing."""
    from compressai.entropy_models import EntropyModel

    if mode not in LATENT_ROUNDINGS:
        raise ValueError(f"latent_rounding must be one of {LATENT_ROUNDINGS}, got {mode!r}")
    patched = [m for m in model.modules() if isinstance(m, EntropyModel)] if mode != "noise" else []
    for m in patched:
        m.quantize = functools.partial(_ste_quantize, m)
        if mode == "mixed":
            m.forward = functools.partial(_mixed_forward, m)
    try:
        yield
    finally:
        for m in patched:
            del m.quantize
            if mode == "mixed":
                del m.forward


def _dist_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@dataclass
class TrainState:
    step: int = 0
    elapsed: float = 0.0  # training wall time so far, across resumes
    last: dict[str, float] = dataclasses.field(default_factory=dict)


class Trainer:
    """Runs the RD training loop on ``model`` with crops from ``sampler``.

    Args:
        model: a CompressAI model (float, or prepared for QAT).
        sampler: crop source; its generator is part of the checkpoint.
        config: :class:`TrainConfig`.
        out_dir: where ``checkpoint.pth.tar`` is written.
        meta: JSON-able metadata stored in every checkpoint (architecture, sizes, ...).
        extra_param_groups: additional optimizer parameter groups (QAT quantizer parameters).
        device: where the model and the batches live ("cpu", "cuda", "cuda:1", ...); the model is
            moved there. The crop sampler stays on the CPU, so its sequence does not depend on it.
        extra_loss: ``f(model) -> scalar`` added to the loss after each forward (e.g. γ·L_bits).
        on_step: ``f(step)`` called before each step (e.g. a temperature schedule).
    """

    CHECKPOINT = "checkpoint.pth.tar"

    def __init__(
        self,
        model: nn.Module,
        sampler: CropSampler,
        config: TrainConfig,
        out_dir: str | os.PathLike,
        meta: dict[str, Any] | None = None,
        extra_param_groups: list[dict] | None = None,
        device: str | torch.device = "cpu",
        extra_loss: Callable[[nn.Module], torch.Tensor] | None = None,
        on_step: Callable[[int], None] | None = None,
    ) -> None:
        self.extra_loss = extra_loss
        self.on_step = on_step
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.sampler = sampler
        self.config = config
        self.out_dir = Path(out_dir)
        self.meta = dict(meta or {})
        self.criterion = RateDistortionLoss(config.lmbda, config.metric,
                                            rate_weight=1.0 if config.loss == "rd" else 0.0)
        extra = [g for g in (extra_param_groups or []) if g["params"]]
        excluded = {id(p) for g in extra for p in g["params"]}
        main, aux = split_parameters(model, excluded)
        groups = [{"params": main, "lr": config.lr}] + extra
        self.optimizer = torch.optim.Adam(groups)
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.aux_optimizer = torch.optim.Adam(aux, lr=config.aux_lr) if aux else None
        self.state = TrainState()
        self.rank, self.world = _dist_world()
        if config.batch_size % self.world:
            raise ValueError(f"batch size {config.batch_size} does not split over {self.world} ranks")
        self.forward_model: nn.Module = self.model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            # the quantiles only get the aux loss's gradient, the same on every rank
            DDP._set_params_and_buffers_to_ignore_for_model(
                self.model, [n for n, _ in self.model.named_parameters() if n.endswith(".quantiles")])
            self.forward_model = DDP(
                self.model, device_ids=[self.device] if self.device.type == "cuda" else None,
                broadcast_buffers=False)
        torch.manual_seed(config.seed)

    # -- checkpoints -------------------------------------------------------------------------
    def checkpoint_path(self) -> Path:
        return self.out_dir / self.CHECKPOINT

    def save_checkpoint(self) -> Path:
        """Write the checkpoint (rank 0 only under data-parallel training)."""
        if self.rank != 0:
            return self.checkpoint_path()
        ckpt = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "aux_optimizer": self.aux_optimizer.state_dict() if self.aux_optimizer else None,
            "step": self.state.step,
            "elapsed": self.state.elapsed,
            "sampler_rng": self.sampler.state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": (torch.cuda.get_rng_state(self.device)
                         if self.device.type == "cuda" else None),
            "config": dataclasses.asdict(self.config),
            "meta": self.meta,
        }
        buf = io.BytesIO()
        torch.save(ckpt, buf)
        atomic_write_bytes(self.checkpoint_path(), buf.getvalue())
        return self.checkpoint_path()

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Restore everything :meth:`save_checkpoint` wrote, so training continues exactly."""
        try:
            # checkpoints written before provenance stored torch's version as a plain str hold a
            # TorchVersion (a str subclass) in their meta: allowed, nothing else is
            with torch.serialization.safe_globals([TorchVersion]):
                ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"cannot read training checkpoint {path}: {first}") from None
        if not isinstance(ckpt, dict) or "optimizer" not in ckpt or "step" not in ckpt:
            raise CheckpointError(f"{path} is not a licq training checkpoint (no optimizer state)")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.aux_optimizer is not None and ckpt.get("aux_optimizer") is not None:
            self.aux_optimizer.load_state_dict(ckpt["aux_optimizer"])
        self.state.step = int(ckpt["step"])
        self.state.elapsed = float(ckpt["elapsed"])
        self.sampler.set_state(ckpt["sampler_rng"])
        torch.set_rng_state(ckpt["torch_rng"])
        if self.device.type == "cuda" and ckpt.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(ckpt["cuda_rng"], self.device)

    # -- training ----------------------------------------------------------------------------
    def _done(self) -> bool:
        c = self.config
        return (c.steps is not None and self.state.step >= c.steps) or (
            c.max_seconds is not None and self.state.elapsed >= c.max_seconds
        )

    def train_step(self) -> dict[str, float]:
        c = self.config
        self.model.train()
        x = self.sampler.batch(c.batch_size)  # the global batch; each rank takes its slice
        b = c.batch_size // self.world
        x = x[self.rank * b:(self.rank + 1) * b].to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        out = self.criterion(self.forward_model(x), x)
        if self.extra_loss is not None:
            out["extra_loss"] = self.extra_loss(self.model)
            out["loss"] = out["loss"] + out["extra_loss"]
        out["loss"].backward()
        if c.clip_max_norm > 0:
            params = self.optimizer.param_groups[0]["params"]
            torch.nn.utils.clip_grad_norm_(params, c.clip_max_norm)
        factor = c.lr_factor(self.state.step)
        for g, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            g["lr"] = base * factor
        self.optimizer.step()
        values = torch.stack([v.detach().float() for v in out.values()])
        if self.world > 1:  # report the global batch's figures
            dist.all_reduce(values)
            values /= self.world
        stats = dict(zip(out.keys(), values.tolist(), strict=True))
        if self.aux_optimizer is not None:
            self.aux_optimizer.zero_grad(set_to_none=True)
            aux_loss = self.model.aux_loss()
            aux_loss.backward()
            self.aux_optimizer.step()
            stats["aux_loss"] = float(aux_loss.detach())
        stats["psnr"] = -10 * torch.log10(torch.tensor(max(stats["mse_loss"], 1e-12))).item()
        bad = [k for k, v in stats.items() if not math.isfinite(v)]
        if bad:
            raise TrainingDiverged(
                f"step {self.state.step + 1}: non-finite {', '.join(bad)}; lower the learning "
                f"rates or resume from the last checkpoint ({self.checkpoint_path()})")
        return stats

    def fit(self, log: Callable[[str], None] | None = None, progress: bool = True) -> TrainState:
        """Train until ``steps`` or ``max_seconds``; checkpoint periodically and at the end."""
        c = self.config
        total = c.steps if c.steps is not None else None
        if self.rank != 0:
            progress, log = False, None
        bar = tqdm(total=total, initial=self.state.step, desc="train", unit="step",
                   disable=not progress, dynamic_ncols=True)
        try:
            with latent_rounding(self.model, c.latent_rounding):
                self._loop(bar, log)
        finally:
            bar.close()
        self.save_checkpoint()
        return self.state

    def _loop(self, bar: tqdm, log: Callable[[str], None] | None) -> None:
        c = self.config
        while not self._done():
            if self.on_step is not None:
                self.on_step(self.state.step)
            t0 = time.perf_counter()
            stats = self.train_step()
            dt = time.perf_counter() - t0
            if self.world > 1:  # every rank must agree on when max_seconds is reached
                t = torch.tensor([dt], device=self.device)
                dist.all_reduce(t, op=dist.ReduceOp.MAX)
                dt = float(t)
            self.state.elapsed += dt
            self.state.step += 1
            self.state.last = stats
            bar.update(1)
            if self.state.step % c.log_every == 0:
                bar.set_postfix(loss=f"{stats['loss']:.4f}", bpp=f"{stats['bpp_loss']:.4f}",
                                psnr=f"{stats['psnr']:.2f}")
                if log is not None:
                    lr = ("" if c.lr_schedule == "constant"
                          else f" lr={self.optimizer.param_groups[0]['lr']:.3g}")  # the step's
                    log(f"step={self.state.step} elapsed={self.state.elapsed:.0f}s "
                        + " ".join(f"{k}={v:.4f}" for k, v in stats.items()) + lr)
            if self.state.step % c.checkpoint_every == 0:
                self.save_checkpoint()
