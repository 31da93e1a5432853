"""Trainable fake quantization for QAT: rounding gradients, leaky clipping, learnable parameters.

The forward pass is always the deployable one: ``q = clamp(round(x/s) + z, qmin, qmax)``,
``x̂ = (q − z)·s`` with integer ``z``. QAT only changes what flows backward and which of ``s``, ``z``
are trained. Written as ``u = x/s; r = ROUND(u); q = CLIP(r + z); x̂ = (q − z)·s`` so autograd gives
the LSQ gradients for ``s`` (``round(u) − u·ROUND'(u)`` inside the range, ``qmin/qmax − z`` outside)
and ``−s`` for ``z`` on clipped values.

ROUND (``rounding``):
  - ``"ste"``: straight-through, ∂round(u)/∂u = 1.
  - ``"dgm"``: DynaQuant's distance-aware gradient. The paper writes the surrogate as
    g(x) = ½·tanh(β·(x − ⌊x⌋) − 0.5)/tanh(0.5) + ½. We read it as the soft-rounding function
    g(x) = ½·tanh(β·(f − ½))/tanh(β/2) + ½ with f = x − ⌊x⌋ — identical to the paper's formula at
    β = 1, and for every β a map of f ∈ [0, 1] onto [0, 1] whose slope peaks at the rounding
    boundary f = ½ (so β scales the sharpness, not where the peak sits). The backward pass uses
    ∂(⌊x⌋ + g(x))/∂x = (β/2)·(1 − tanh²(β·(f − ½)))/tanh(β/2): largest (β/2)/tanh(β/2) at the
    boundary, smallest at integers, averaging exactly 1 over a unit interval like the STE, and
    tending to the STE as β → 0.

CLIP (``clip``):
  - ``"hard"``: gradient 1 inside ``[qmin, qmax]``, 0 outside.
  - ``"leaky"``: FMPQ's leaky clip. The paper gives no formula; ours keeps the forward clamp
    exact (the codec stays deployable) and gives values outside the range the slope ``α``
    (``leaky_slope``, default 0.01) in the backward pass: ∂CLIP(v)/∂v = 1 inside, α outside.

Parameters (``params``):
  - ``"fixed"``: ``s``, ``z`` stay as calibrated (buffers).
  - ``"lsq"``: learnable scale (per output channel for weights, per tensor for activations),
    zero point fixed.
  - ``"dpa"``: DynaQuant's DPA: learnable scale *and* zero point, per channel for weights and for
    activations (input channels; a calibrated per-tensor activation range is copied to every
    channel to start).
  Scales are trained as ``log s`` (always positive; the update is relative to ``s``, which plays
  the role of LSQ's gradient scaling); zero points as floats used through ``clamp(round_ste(·))``,
  so the forward always sees an integer in ``[qmin, qmax]``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
from torch import Tensor

from licq.quant.fake_quant import FakeQuantize
from licq.quant.primitives import channel_view, round_ste

ROUNDINGS = ("ste", "dgm")
CLIPS = ("hard", "leaky")
PARAMS = ("fixed", "lsq", "dpa")


@dataclass(frozen=True)
class QATSpec:
    """How quantizers behave during QAT (see the module docstring for the exact forms)."""

    rounding: str = "ste"
    dgm_beta: float = 2.0
    clip: str = "hard"
    leaky_slope: float = 0.01
    params: str = "fixed"
    learn_weights: bool = True  # learnable parameters for weight quantizers (lsq/dpa)
    learn_activations: bool = True  # ... and for activation quantizers

    def __post_init__(self) -> None:
        if self.rounding not in ROUNDINGS:
            raise ValueError(f"rounding must be one of {ROUNDINGS}, got {self.rounding!r}")
        if self.clip not in CLIPS:
            raise ValueError(f"clip must be one of {CLIPS}, got {self.clip!r}")
        if self.params not in PARAMS:
            raise ValueError(f"params must be one of {PARAMS}, got {self.params!r}")
        if not self.dgm_beta > 0:
            raise ValueError(f"dgm_beta must be > 0, got {self.dgm_beta}")
        if not 0 <= self.leaky_slope < 1:
            raise ValueError(f"leaky_slope must be in [0, 1), got {self.leaky_slope}")

    def as_dict(self) -> dict:
        return asdict(self)


# -- gradient surrogates -------------------------------------------------------------------------
def dgm_gradient(u: Tensor, beta: float) -> Tensor:
    """∂(⌊u⌋ + g(u))/∂u of the DGM soft rounding (module docstring)."""
    f = u - torch.floor(u)
    t = torch.tanh(beta * (f - 0.5))
    return (0.5 * beta / math.tanh(0.5 * beta)) * (1.0 - t * t)


class _RoundDGM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u: Tensor, beta: float) -> Tensor:
        ctx.save_for_backward(u)
        ctx.beta = beta
        return torch.round(u)

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor, None]:
        (u,) = ctx.saved_tensors
        return g * dgm_gradient(u, ctx.beta), None


def round_dgm(u: Tensor, beta: float) -> Tensor:
    return _RoundDGM.apply(u, beta)


class _LeakyClamp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v: Tensor, lo: float, hi: float, slope: float) -> Tensor:
        ctx.save_for_backward(v)
        ctx.lo, ctx.hi, ctx.slope = lo, hi, slope
        return v.clamp(lo, hi)

    @staticmethod
    def backward(ctx, g: Tensor):
        (v,) = ctx.saved_tensors
        inside = (v >= ctx.lo) & (v <= ctx.hi)
        return g * torch.where(inside, 1.0, ctx.slope).to(g.dtype), None, None, None


def leaky_clamp(v: Tensor, lo: float, hi: float, slope: float) -> Tensor:
    """Exact clamp forward; gradient 1 inside ``[lo, hi]`` and ``slope`` outside."""
    return _LeakyClamp.apply(v, lo, hi, slope)


def qat_fake_quantize(
    x: Tensor, scale: Tensor, zero_point: Tensor, qmin: int, qmax: int, axis: int | None,
    spec: QATSpec,
) -> Tensor:
    """Fake quantization with the spec's rounding and clipping gradients (forward = deployable)."""
    s = channel_view(scale, x, axis)
    z = channel_view(zero_point, x, axis)
    u = x / s
    r = round_dgm(u, spec.dgm_beta) if spec.rounding == "dgm" else round_ste(u)
    v = r + z
    slope = spec.leaky_slope if spec.clip == "leaky" else 0.0
    q = leaky_clamp(v, float(qmin), float(qmax), slope)
    return (q - z) * s


class QATFakeQuantize(FakeQuantize):
    """A :class:`FakeQuantize` in QAT mode: the same forward values, :func:`qat_fake_quantize`'s
    gradients and the learnable parameters (``log_scale``, ``zp``) where they exist.

    Not built directly: :func:`enable_qat` swaps an instance's class to this one (its state and
    ``state_dict`` stay as they are) and :func:`freeze_qat` swaps it back.
    """

    qat_spec: QATSpec

    def quantize(self, x: Tensor) -> Tensor:
        if self.integer_step and self.training:
            return self._train_latent(x)
        scale, zero_point = self.current_qparams()
        return qat_fake_quantize(x, scale, zero_point, self.qmin, self.qmax, self.axis,
                                 self.qat_spec)


# -- turning a model's quantizers into QAT quantizers ---------------------------------------------
def _to_per_channel(fq: FakeQuantize, channels: int) -> None:
    """A per-tensor activation quantizer becomes per-channel (axis 1) with the same start values."""
    fq.axis = 1
    fq.scale = fq.scale.reshape(()).expand(channels).clone()
    fq.zero_point = fq.zero_point.reshape(()).expand(channels).clone()


def _input_channels(layer: nn.Module) -> int:
    if isinstance(layer, nn.ConvTranspose2d):
        return layer.weight.shape[0]
    if isinstance(layer, nn.Conv2d):
        return layer.in_channels
    if isinstance(layer, nn.Linear):
        return layer.in_features
    return layer.beta.numel()  # GDN


def enable_qat(fq: FakeQuantize, spec: QATSpec, learn: bool) -> None:
    """Switch one quantizer to QAT; ``learn`` adds its learnable parameters (lsq/dpa).

    Quantizers of integer-valued inputs (the decoded latents ŷ, ẑ) keep their calibrated integer
    step: a learned, non-integer scale would put integers off the grid at inference.
    """
    fq.__class__ = QATFakeQuantize
    fq.qat_spec = spec
    if not learn or spec.params == "fixed" or fq.integer_step:
        return
    fq.log_scale = nn.Parameter(torch.log(fq.scale.detach().clone()))
    if spec.params == "dpa":
        fq.zp = nn.Parameter(fq.zero_point.detach().clone())


def prepare_qat(model: nn.Module, spec: QATSpec) -> dict[str, list[nn.Parameter]]:
    """Put every quantizer of a quantized ``model`` into QAT mode (in place).

    Returns the new learnable quantization parameters by kind: ``{"scale": [...], "zero_point":
    [...]}`` (empty lists for ``params="fixed"``), for their own optimizer groups.
    """
    from licq.api import quantizer_sites

    sites = quantizer_sites(model)
    if not sites:
        raise ValueError("the model has no quantized layers: quantize it (licq.quantize_) first")
    if not all(bool(q.calibrated) for _, _, q, _ in sites):
        raise ValueError("calibrate activations before QAT (licq.calibrate)")
    for _, layer, q, role in sites:
        if role == "input":
            if spec.params == "dpa" and spec.learn_activations and not q.integer_step:
                _to_per_channel(q, _input_channels(layer))
            enable_qat(q, spec, spec.learn_activations)
        else:
            enable_qat(q, spec, spec.learn_weights)
    return quantization_parameters(model)


def quantization_parameters(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    out: dict[str, list[nn.Parameter]] = {"scale": [], "zero_point": []}
    for m in model.modules():
        if isinstance(m, FakeQuantize):
            if m.log_scale is not None:
                out["scale"].append(m.log_scale)
            if m.zp is not None:
                out["zero_point"].append(m.zp)
    return out


@torch.no_grad()
def freeze_qat(model: nn.Module) -> None:
    """Write learned parameters into the quantizers' ``scale``/``zero_point`` buffers and leave
    QAT mode; the model then runs (and is saved) like a PTQ model."""
    for m in model.modules():
        if isinstance(m, QATFakeQuantize):
            s, z = m.current_qparams()
            m.scale = s.detach().clone()
            m.zero_point = z.detach().clone()
            m.log_scale = None
            m.zp = None
            del m.qat_spec
            m.__class__ = FakeQuantize
