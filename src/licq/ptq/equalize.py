"""Activation-range equalization: a function-preserving rescaling of the float codec before
quantization, so that per-tensor 8-bit activations waste fewer levels on a few wide channels.

For a pair ``producer → consumer`` in one of the model's ``nn.Sequential`` transforms, where the
producer's output channel c feeds the consumer's input channel c through an element-wise map that
commutes with a positive per-channel scale, channel c is divided by ``s_c`` at the producer and
its weights multiplied by ``s_c`` at the consumer. The float model computes the same function
(up to rounding); the quantized model sees activations ``x_c / s_c`` (per-tensor quantized) and
weights ``W[:, c] · s_c`` (per output channel), which is how it is deployed: nothing downstream of
licq (packed files, ONNX, the ``.licq`` codec) needs to know.

Pairs handled (the consumer is a non-grouped ``Conv2d`` / ``ConvTranspose2d``):

* ``GDN/IGDN → conv``: the (I)GDN's output channel c is scaled by 1/s_c through its own
  parameters, since ``y_c / s_c = x_c · sqrt(β_c/s_c² + Σ_j γ_cj/s_c² · x_j²)`` (IGDN; GDN: the
  reciprocal form, β_c·s_c², γ_cj·s_c²): the effective β and γ rows are rescaled.
* ``conv → ReLU/LeakyReLU → conv``: the producer's output channel (weight and bias) is divided by
  s_c; positive scales commute with both activations.

The scale follows SmoothQuant (Xiao et al., 2023): ``s_c = a_c^α / w_c^(1−α)``, with a_c the
largest |input| of channel c over calibration crops (training images) and w_c the largest |weight|
of the consumer's input channel c. α = 0 looks at the weights only (every column the same range); α = 1
gives every channel the same activation range (as per-channel activation quantization would),
moving the spread into the weights. Scales are normalised to geometric mean 1 over the channels
that carry data (a ReLU may zero some always; those take the smallest scale).

Not handled (left as they are): inputs that are coded latents (ŷ, ẑ: g_s's and h_s's first
layer; y into h_a), since their scale is the entropy coder's; GDN1 (|x| form); inputs of (I)GDN
layers themselves (their γ would take the square of the scale into both axes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from compressai.layers import GDN, GDN1
from torch import Tensor

from licq.data import CropSampler

_ACTS = (nn.ReLU, nn.LeakyReLU)
_CONVS = (nn.Conv2d, nn.ConvTranspose2d)


@dataclass
class EqualizationReport:
    """What :func:`equalize_` changed: per consumer layer, the spread of its input-channel ranges
    (max/median of a_c over the channels that are not always 0) before and after."""

    alpha: float
    spread_before: dict[str, float] = field(default_factory=dict)
    spread_after: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"alpha": self.alpha,
                "layers": {n: {"spread_before": round(self.spread_before[n], 4),
                               "spread_after": round(self.spread_after[n], 4)}
                           for n in self.spread_before}}


def _in_axis(conv: nn.Module) -> int:
    """Weight axis of a conv's input channels (ConvTranspose2d keeps them first)."""
    return 0 if isinstance(conv, nn.ConvTranspose2d) else 1


def _out_axis(conv: nn.Module) -> int:
    return 1 if isinstance(conv, nn.ConvTranspose2d) else 0


def _shape(axis: int, ndim: int) -> list[int]:
    s = [1] * ndim
    s[axis] = -1
    return s


def equalization_pairs(model: nn.Module) -> list[tuple[str, nn.Module, str, nn.Module]]:
    """``(producer name, producer, consumer name, consumer)`` for every pair this module can
    rescale, in the model's ``nn.Sequential`` children (g_a, g_s, h_a, h_s, …)."""
    pairs = []
    for seq_name, seq in model.named_modules():
        if not isinstance(seq, nn.Sequential):
            continue
        mods = list(seq.children())
        names = [f"{seq_name}.{i}" if seq_name else str(i) for i in range(len(mods))]
        for i in range(1, len(mods)):
            cons = mods[i]
            if not isinstance(cons, _CONVS) or cons.groups != 1:
                continue
            prev = mods[i - 1]
            if isinstance(prev, GDN) and not isinstance(prev, GDN1):
                pairs.append((names[i - 1], prev, names[i], cons))
            elif (isinstance(prev, _ACTS) and i >= 2 and isinstance(mods[i - 2], _CONVS)
                  and mods[i - 2].groups == 1):
                pairs.append((names[i - 2], mods[i - 2], names[i], cons))
    return pairs


@torch.no_grad()
def _set_nonneg(param: nn.Parameter, reparam: nn.Module, value: Tensor) -> None:
    param.copy_(reparam.init(value))


@torch.no_grad()
def _scale_producer(prod: nn.Module, inv: Tensor) -> None:
    """Multiply the producer's output channel c by ``inv[c]`` (= 1/s_c)."""
    if isinstance(prod, GDN):
        beta = prod.beta_reparam(prod.beta)
        gamma = prod.gamma_reparam(prod.gamma)  # (out, in): row c normalises channel c
        # IGDN: y·inv = x·sqrt(inv²β + inv²Σγx²); GDN: y·inv = x / sqrt(β/inv² + Σγx²/inv²)
        f = inv**2 if prod.inverse else inv**-2
        _set_nonneg(prod.beta, prod.beta_reparam, beta * f)
        _set_nonneg(prod.gamma, prod.gamma_reparam, gamma * f[:, None])
        return
    ax = _out_axis(prod)
    prod.weight.mul_(inv.reshape(_shape(ax, prod.weight.ndim)))
    if prod.bias is not None:
        prod.bias.mul_(inv)


def _gdn_scale_limits(gdn: GDN, margin: float = 4.0) -> tuple[Tensor, Tensor]:
    """The s_c for which the rescaled β_c (IGDN: β/s², GDN: β·s²) stays ``margin`` times above
    the smallest β the reparametrisation can hold, so that the float function is preserved."""
    beta = gdn.beta_reparam(gdn.beta).detach()
    floor = margin * max(gdn.beta_reparam.minimum, 1e-12)
    room = (beta / floor).clamp_min(1.0).sqrt()
    if gdn.inverse:
        return torch.zeros_like(room), room
    return 1.0 / room, torch.full_like(room, float("inf"))


@torch.no_grad()
def equalize_(
    model: nn.Module, batches: list[Tensor], alpha: float = 0.5, *, max_scale: float = 64.0,
) -> EqualizationReport:
    """Rescale every pair of :func:`equalization_pairs` in place (see the module docstring).

    ``batches`` are calibration images (training crops, never the evaluation set); one float
    forward pass over them measures the channel ranges. ``max_scale`` bounds s_c/s̄ both ways."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    pairs = equalization_pairs(model)
    amax: dict[str, Tensor] = {}
    hooks = []
    for _, _, cname, cons in pairs:
        def hook(mod: nn.Module, inp: tuple[Tensor, ...], _out: Tensor, name: str = cname) -> None:
            a = inp[0].detach().abs().amax(dim=(0, 2, 3)).float()
            amax[name] = a if name not in amax else torch.maximum(amax[name], a)
        hooks.append(cons.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        for x in batches:
            model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    report = EqualizationReport(alpha)
    for _pname, prod, cname, cons in pairs:
        if cname not in amax:
            raise RuntimeError(f"equalization never saw layer {cname!r}'s input")
        a = amax[cname]
        # dead channels (always 0 after a ReLU) take the smallest s: their weights shrink, and
        # they are left out of the normalisation, which they would otherwise drag towards 0
        alive = a > 1e-6 * a.max()
        a = a.clamp_min(1e-8)
        ax = _in_axis(cons)
        w = cons.weight.detach().abs().movedim(ax, 0).flatten(1).amax(dim=1).clamp_min(1e-8)
        s = a.pow(alpha) / w.pow(1.0 - alpha)
        if alive.any():  # geometric mean 1 over the live channels: no overall drift
            s = s / s[alive].log().mean().exp()
        s = s.clamp(1.0 / max_scale, max_scale)
        if isinstance(prod, GDN):  # keep every rescaled β above its reparametrisation's floor
            s = s.clamp(*_gdn_scale_limits(prod))
        _scale_producer(prod, 1.0 / s)
        cons.weight.mul_(s.to(cons.weight.dtype).reshape(_shape(ax, cons.weight.ndim)))
        live = a[alive] if alive.any() else a  # the spread of the channels that carry data
        report.spread_before[cname] = float(live.max() / live.median())
        a2 = live / s[alive] if alive.any() else a / s
        report.spread_after[cname] = float(a2.max() / a2.median())
    return report


#: crops per forward pass while measuring ranges and held-out RD losses (calibration's default)
_BATCH = 8
#: the α grid ``equalize="auto"`` tries (and no equalization at all)
AUTO_ALPHAS = (0.25, 0.5, 0.75, 1.0)


@torch.no_grad()
def equalize_for_config(
    model: nn.Module, config, equalize: float | str | None, calib_dir: str | os.PathLike,
    *, lmbda: float, metric: str = "mse", num_crops: int = 32, patch_size: int = 256, seed: int = 0,
    heldout_crops: int = 16, alphas: tuple[float, ...] = AUTO_ALPHAS,
) -> dict | None:
    """Equalize ``model`` in place before it is quantized with ``config``; what was done, for
    the results file (``None``: nothing asked).

    ``equalize`` is an α, or ``"auto"``: each α of ``alphas`` and no equalization are tried by
    quantizing a copy with ``config``, calibrating it on the calibration crops and measuring
    its RD loss (λ = ``lmbda``, distortion ``metric``) on ``heldout_crops`` other crops of
    ``calib_dir`` (seed + 1: training images, never the evaluation set); the lowest wins, so
    "auto" never does worse than leaving the model alone on those crops."""
    if equalize is None:
        return None
    calib = CropSampler(calib_dir, patch_size=patch_size, seed=seed,
                        flip=False).batches(num_crops, _BATCH)
    if equalize != "auto":
        alpha = float(equalize)
        report = equalize_(model, calib, alpha)
        return {"requested": alpha, **report.to_json()}
    import copy

    from licq.ptq.calibrate import quantize_and_calibrate
    from licq.qat.loss import RateDistortionLoss, mean_rd_loss

    heldout = CropSampler(calib_dir, patch_size=patch_size, seed=seed + 1,
                          flip=False).batches(heldout_crops, _BATCH)
    crit = RateDistortionLoss(lmbda, metric)
    was_training = model.training

    def rd_loss(alpha: float | None) -> float:
        m = copy.deepcopy(model).eval()
        if alpha is not None:
            equalize_(m, calib, alpha)
        quantize_and_calibrate(m, config, calib)
        return mean_rd_loss(m, heldout, crit)

    tried = {a: rd_loss(a) for a in (None, *alphas)}
    best = min(tried, key=lambda a: tried[a])
    model.train(was_training)
    info: dict = {"requested": "auto", "heldout_rd_loss": {
        ("none" if a is None else str(a)): round(v, 6) for a, v in tried.items()}}
    if best is None:
        return {**info, "alpha": None, "layers": {}}
    return {**info, **equalize_(model, calib, best).to_json()}
