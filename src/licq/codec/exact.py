"""Exactly reproducible evaluation of a quantized codec's decoder side.

A learned codec decodes correctly only if the decoder recomputes, bit for bit, what the encoder
fed its entropy coder: for a hyperprior model, the hyper-synthesis output ``h_s(ẑ)`` and from it
each latent's CDF index (and mean). In float arithmetic one ulp of difference (another thread
count, batch, vector width, device) moves an index across a scale-table boundary and the rANS
decoder returns garbage. Ballé et al. 2019 ("Integer networks for data compression with
latent-variable models") fix this with integer arithmetic; a quantized model already has integer
weights and integer activation codes, so licq evaluates its layers that way.

:class:`ExactSequential` runs an ``nn.Sequential`` of quantized layers so that every value it
produces is the same on every machine:

* layer input → integer codes ``q = clamp(round(x / s) + z)``: one IEEE division and a rounding,
  on values that are themselves reproducible (ẑ, or the previous layer's exact output);
* the convolution runs on the integer codes in float64, where every product and partial sum is an
  integer below 2**53 and therefore exact in any summation order, algorithm or thread split;
  the result is rounded to the nearest integer, which also removes the tiny error of transform
  algorithms (Winograd, FFT) a library might pick;
* requantization is one float64 multiply by the per-channel constant ``s_x · s_w`` followed by
  one float64 add of the bias: single, correctly rounded IEEE operations (no fused multiply-add,
  no reductions), identical on CPUs and GPUs;
* inputs quantized per channel (DPA's learned activation scales) have no common ``s_x``: each
  input channel c is convolved on its own (exact integers), multiplied by ``s_x[c] · s_w`` and
  the channels added one after another in channel order, again single IEEE operations in a
  fixed order (C convolutions instead of one: slower, equally reproducible);
* ReLU / LeakyReLU are elementwise; (I)GDN squares the integer codes, convolves them with the
  integer γ codes exactly, scales, adds β and takes a correctly rounded float64 ``sqrt`` (or
  divides by it).

The output is rounded to float32 (one correctly rounded conversion) for CompressAI's index and
mean computations, which are elementwise from there on. So the encoder and decoder of a quantized
model compute the same CDF indexes and means wherever they run; the reconstruction (``g_s``, run
the same way at decode time) is bit-identical too.

Only quantized layers with an activation quantizer can run exactly (a float input has no
integer codes); anything else raises :class:`ExactPathError`. CompressAI's residual blocks
(cheng2020, ELIC) add their branches in float64, one IEEE addition each; attention blocks gate
with a sigmoid read from a table computed once in decimal arithmetic (:func:`sigmoid_table`),
at inputs rounded to a 2**-10 grid, instead of the platform's ``exp``. Autoregressive models
(mbt2018, cheng2020) also run their context model and entropy-parameter network exactly, inside
licq's raster-order loops (:mod:`licq.codec.ar`). ELIC's latent codec (channel groups,
checkerboard context) has no exact path: such models code only with ``exact=False``.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F
from compressai.layers import GDN
from torch import Tensor

from licq.errors import LicqError
from licq.quant.modules import QGDN, QConv2d, QConvTranspose2d
from licq.quant.primitives import channel_view, dequantize, quantize_int

_EXACT_LIMIT = 2.0**52  # largest |integer| a float64 sum may reach and stay exact (with margin)


class ExactPathError(LicqError):
    """A model (or layer) that the exact, reproducible path cannot run."""


def _per_channel(v: Tensor, n: int) -> Tensor:
    v = v.detach().double().reshape(-1)
    return v.expand(n).clone() if v.numel() == 1 else v


class _ExactInput:
    """Integer codes of a layer's input: its activation quantizer, per tensor, or per channel
    (DPA; then ``scale`` and ``zero_point`` hold one value per input channel)."""

    def __init__(self, name: str, layer: nn.Module) -> None:
        fq = getattr(layer, "input_quant", None)
        if fq is None:
            raise ExactPathError(
                f"layer {name} has no activation quantizer: the exact path needs integer inputs "
                "(quantize activations, e.g. --a-bits 8)")
        if fq.axis not in (None, 1):
            raise ExactPathError(f"layer {name}: activation quantizer on axis {fq.axis}")
        scale, zp = fq.current_qparams()
        self.per_channel = fq.axis is not None
        shape = (-1,) if self.per_channel else ()
        self.scale = scale.detach().double().reshape(shape)
        self.zero_point = zp.detach().double().reshape(shape)
        self.qmin, self.qmax = fq.qmin, fq.qmax
        self.bits = fq.bits

    def codes(self, x: Tensor) -> Tensor:
        """``q − z`` as float64 integers."""
        axis = 1 if self.per_channel else None
        zp = self.zero_point.to(x.device)
        q = quantize_int(x.double(), self.scale.to(x.device), zp, self.qmin, self.qmax, axis)
        return q - channel_view(zp, q, axis)

    def values(self, q: Tensor) -> Tensor:
        """The dequantized input ``(q − z)·s`` (one IEEE multiply per element)."""
        return q * channel_view(self.scale.to(q.device), q, 1 if self.per_channel else None)

    @property
    def max_abs(self) -> float:
        return float(torch.maximum((self.qmin - self.zero_point).abs(),
                                   (self.qmax - self.zero_point).abs()).max())


def _channel_by_channel(channels: int, mult: Tensor, conv_of: Callable[[int], Tensor]) -> Tensor:
    """``Σ_c round(conv_of(c)) · mult[c]`` for per-channel inputs: each input channel's exact
    integer convolution, requantized by its own factor row, the channels added in order."""
    y = None
    for c in range(channels):
        t = torch.round(conv_of(c)) * mult[c].reshape(1, -1, 1, 1)
        y = t if y is None else y + t
    return y


def _weight_codes(layer: nn.Module) -> tuple[Tensor, Tensor]:
    """(integer weight codes − zero point, per-output-channel scale), float64."""
    fq = layer.weight_quant
    scale, zp = fq.current_qparams()
    w = layer.effective_weight().detach()
    q = quantize_int(w, scale, zp, fq.qmin, fq.qmax, fq.axis) - channel_view(zp, w, fq.axis)
    return q.double(), scale.detach().double().reshape(-1)


class _ExactConv(nn.Module):
    def __init__(self, name: str, layer: nn.Module) -> None:
        super().__init__()
        self.inp = _ExactInput(name, layer)
        self.transposed = isinstance(layer, QConvTranspose2d)
        codes, s_w = _weight_codes(layer)
        out_ch = layer.out_channels
        s_w = _per_channel(s_w, out_ch)
        fan_in = codes.abs().flatten(1).sum(1).max() if not self.transposed else \
            codes.abs().transpose(0, 1).flatten(1).sum(1).max()
        if float(fan_in) * self.inp.max_abs > _EXACT_LIMIT:
            raise ExactPathError(f"layer {name}: integer sums could exceed 2**52")
        self.register_buffer("w", codes)
        # exact: two float32 factors. Per-channel inputs: (C_in, C_out), one per input channel
        # (each input channel's integer sum is then requantized on its own, in a fixed order)
        self.register_buffer("mult", self.inp.scale.reshape(-1, 1) * s_w if self.inp.per_channel
                             else self.inp.scale * s_w)
        if self.inp.per_channel and layer.groups != 1:
            raise ExactPathError(f"layer {name}: per-channel inputs of a grouped convolution")
        bias = layer.bias
        self.register_buffer("bias", bias.detach().double() if bias is not None else None)
        self.stride, self.padding, self.dilation = layer.stride, layer.padding, layer.dilation
        self.groups = layer.groups
        self.output_padding = getattr(layer, "output_padding", 0)

    def _conv(self, q: Tensor, w: Tensor, padding) -> Tensor:
        if self.transposed:
            return F.conv_transpose2d(q, w, None, self.stride, padding, self.output_padding,
                                      self.groups, self.dilation)
        return F.conv2d(q, w, None, self.stride, padding, self.dilation, self.groups)

    def _run(self, q: Tensor, padding) -> Tensor:
        if not self.inp.per_channel:
            y = torch.round(self._conv(q, self.w, padding)) * self.mult.reshape(1, -1, 1, 1)
        else:
            y = _channel_by_channel(q.shape[1], self.mult, lambda c: self._conv(
                q[:, c:c + 1], self.w[c:c + 1] if self.transposed else self.w[:, c:c + 1], padding))
        if self.bias is not None:
            y = y + self.bias.reshape(1, -1, 1, 1)
        return y

    def forward_unpadded(self, x: Tensor) -> Tensor:
        """The convolution without padding (the context model on a k×k crop)."""
        return self._run(self.inp.codes(x), 0)

    def forward(self, x: Tensor) -> Tensor:
        return self._run(self.inp.codes(x), self.padding)


class _ExactGDN(nn.Module):
    def __init__(self, name: str, layer: QGDN) -> None:
        super().__init__()
        self.inp = _ExactInput(name, layer)
        c = layer.beta.numel()
        codes, s_g = _weight_codes(layer)
        self.register_buffer("gamma", codes.reshape(c, c, 1, 1))
        s_g = _per_channel(s_g, c)
        power = 1 if layer.abs_variant else 2
        if float(codes.abs().sum(1).max()) * self.inp.max_abs**power > _EXACT_LIMIT:
            raise ExactPathError(f"layer {name}: integer sums could exceed 2**52")
        # norm = s_x^p · s_γ[c] · Σ γ_codes · |x_codes|^p + β̂; per-channel inputs: one factor
        # s_x[j]^p · s_γ[c] per input channel j, (C, C) indexed [j, c]
        self.register_buffer("mult", (self.inp.scale.reshape(-1, 1)**power) * s_g
                             if self.inp.per_channel else (self.inp.scale**power) * s_g)
        bq = layer.beta_quant
        b_scale, b_zp = bq.current_qparams()
        b_codes = quantize_int(layer.effective_beta().detach(), b_scale, b_zp, bq.qmin, bq.qmax, None)
        self.register_buffer("beta", dequantize(b_codes.double(), b_scale.double(),
                                                b_zp.double(), None))
        self.abs_variant = layer.abs_variant
        self.inverse = layer.inverse

    def forward(self, x: Tensor) -> Tensor:
        q = self.inp.codes(x)
        t = q.abs() if self.abs_variant else q * q
        if not self.inp.per_channel:
            norm = torch.round(F.conv2d(t, self.gamma)) * self.mult.reshape(1, -1, 1, 1)
        else:
            norm = _channel_by_channel(t.shape[1], self.mult, lambda j: F.conv2d(
                t[:, j:j + 1], self.gamma[:, j:j + 1]))
        norm = norm + self.beta.reshape(1, -1, 1, 1)
        xr = self.inp.values(q)
        if not self.abs_variant:
            norm = torch.sqrt(norm)
        return xr * norm if self.inverse else xr / norm


class _ExactShuffle(nn.Module):
    def __init__(self, layer: nn.PixelShuffle) -> None:
        super().__init__()
        self.r = layer.upscale_factor

    def forward(self, x: Tensor) -> Tensor:
        return F.pixel_shuffle(x, self.r)  # a permutation: exact


class _ExactAct(nn.Module):
    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.slope = float(layer.negative_slope) if isinstance(layer, nn.LeakyReLU) else 0.0

    def forward(self, x: Tensor) -> Tensor:
        if self.slope == 0.0:
            return torch.clamp_min(x, 0.0)
        return torch.where(x > 0, x, x * self.slope)


#: sigmoid table of the exact attention gates: inputs rounded to multiples of 2**-SIGMOID_BITS
#: in [-SIGMOID_RANGE, SIGMOID_RANGE] (beyond it the gate is within 7e-6 of 0 or 1)
SIGMOID_BITS, SIGMOID_RANGE = 10, 12
_sigmoid_table: Tensor | None = None


def sigmoid_table() -> Tensor:
    """σ(k / 2**SIGMOID_BITS) for every grid point k, float64, each correctly rounded: computed
    with Python's ``decimal`` at 30 digits (not the platform's ``exp``), so every machine holds
    the same table."""
    global _sigmoid_table
    if _sigmoid_table is None:
        import decimal

        ctx = decimal.Context(prec=30)
        n = SIGMOID_RANGE << SIGMOID_BITS
        step = ctx.divide(decimal.Decimal(1), decimal.Decimal(1 << SIGMOID_BITS))
        values = [float(ctx.divide(1, ctx.add(1, ctx.exp(ctx.multiply(-k, step)))))
                  for k in range(-n, n + 1)]
        _sigmoid_table = torch.tensor(values, dtype=torch.float64)
    return _sigmoid_table


class _ExactSigmoid(nn.Module):
    """σ(x) read from :func:`sigmoid_table` at x rounded to its grid (error ≤ 2**-(BITS+3))."""

    def forward(self, x: Tensor) -> Tensor:
        table = sigmoid_table().to(x.device)
        n = SIGMOID_RANGE << SIGMOID_BITS
        k = torch.round(torch.clamp(x * float(1 << SIGMOID_BITS), -n, n)).long() + n
        return table[k]


class _ExactResidual(nn.Module):
    """``post(main(x) + skip(x))``: CompressAI's residual blocks (the sum and the activation are
    single IEEE operations)."""

    def __init__(self, main: list[nn.Module], skip: nn.Module | None,
                 post: nn.Module | None = None) -> None:
        super().__init__()
        self.main = _Steps(main)
        self.skip = skip
        self.post = post

    def forward(self, x: Tensor) -> Tensor:
        y = self.main(x) + (self.skip(x) if self.skip is not None else x)
        return self.post(y) if self.post is not None else y


class _ExactAttention(nn.Module):
    """CompressAI's ``AttentionBlock``: ``a(x) · σ(b(x)) + x`` with the tabulated σ."""

    def __init__(self, a: nn.Module, b: nn.Module) -> None:
        super().__init__()
        self.a, self.b, self.sigmoid = a, b, _ExactSigmoid()

    def forward(self, x: Tensor) -> Tensor:
        return self.a(x) * self.sigmoid(self.b(x)) + x


def _chain(name: str, parent: nn.Module, attrs: tuple[str, ...]) -> list[nn.Module]:
    return [s for a in attrs for s in _exact_steps(f"{name}.{a}", getattr(parent, a))]


def _one(name: str, layer: nn.Module) -> nn.Module | None:
    steps = _exact_steps(name, layer)
    return None if not steps else steps[0] if len(steps) == 1 else _Steps(steps)


class _Steps(nn.Module):
    """Exact steps run one after another."""

    def __init__(self, steps: list[nn.Module]) -> None:
        super().__init__()
        self.steps = nn.ModuleList(steps)

    def forward(self, x: Tensor) -> Tensor:
        for step in self.steps:
            x = step(x)
        return x


def _block(name: str, layer: nn.Module) -> nn.Module | None:
    """The exact version of a CompressAI block (residual, attention), or None if ``layer`` is
    not one. Each mirrors the block's ``forward`` (compressai 1.2)."""
    kind = type(layer).__name__
    if kind == "ResidualBlock":  # conv1 → lrelu → conv2 → lrelu, + x (or skip(x))
        main = _chain(name, layer, ("conv1", "leaky_relu", "conv2", "leaky_relu"))
        return _ExactResidual(main, _one(f"{name}.skip", layer.skip) if layer.skip is not None else None)
    if kind == "ResidualBlockWithStride":  # conv1 → lrelu → conv2 → gdn, + x (or skip(x))
        main = _chain(name, layer, ("conv1", "leaky_relu", "conv2", "gdn"))
        return _ExactResidual(main, _one(f"{name}.skip", layer.skip) if layer.skip is not None else None)
    if kind == "ResidualBlockUpsample":  # subpel → lrelu → conv → igdn, + upsample(x)
        main = _chain(name, layer, ("subpel_conv", "leaky_relu", "conv", "igdn"))
        return _ExactResidual(main, _one(f"{name}.upsample", layer.upsample))
    if kind == "ResidualBottleneckBlock":  # conv1 → relu → conv2 → relu → conv3, + skip(x)
        main = _chain(name, layer, ("conv1", "relu1", "conv2", "relu2", "conv3"))
        return _ExactResidual(main, _one(f"{name}.skip", layer.skip))
    if kind == "ResidualUnit":  # relu(conv(x) + x), AttentionBlock's unit
        return _ExactResidual(_exact_steps(f"{name}.conv", layer.conv), None,
                              _ExactAct(layer.relu))
    if kind == "AttentionBlock":
        return _ExactAttention(_one(f"{name}.conv_a", layer.conv_a),
                               _one(f"{name}.conv_b", layer.conv_b))
    return None


def _exact_steps(name: str, layer: nn.Module) -> list[nn.Module]:
    """``layer`` as exact steps; :class:`ExactPathError` for a layer the path cannot run."""
    if isinstance(layer, QConv2d | QConvTranspose2d):
        if type(layer).__name__ == "QMaskedConv2d":
            raise ExactPathError(f"layer {name}: masked convolutions are not supported")
        return [_ExactConv(name, layer)]
    if isinstance(layer, QGDN):
        return [_ExactGDN(name, layer)]
    if isinstance(layer, nn.ReLU | nn.LeakyReLU):
        return [_ExactAct(layer)]
    if isinstance(layer, nn.PixelShuffle):
        return [_ExactShuffle(layer)]
    if isinstance(layer, nn.Identity):
        return []
    if isinstance(layer, nn.Sequential):  # e.g. CompressAI's subpel_conv3x3
        return [s for child, sub in layer.named_children()
                for s in _exact_steps(f"{name}.{child}", sub)]
    block = _block(name, layer)
    if block is not None:
        return [block]
    raise ExactPathError(
        f"layer {name} ({type(layer).__name__}) cannot run on the exact path"
        + (": it is not quantized" if isinstance(layer, nn.Conv2d | nn.ConvTranspose2d | GDN)
           else ""))


class ExactSequential(_Steps):
    """An ``nn.Sequential`` of quantized layers (convolutions, (I)GDN, activations, sub-pixel
    shuffles, CompressAI's residual and attention blocks) run in exactly reproducible arithmetic
    (float64 integers and single IEEE operations); returns float32."""

    def __init__(self, seq: nn.Sequential, name: str = "") -> None:
        super().__init__(_exact_steps(name, seq) if name else [
            s for child, sub in seq.named_children() for s in _exact_steps(child, sub)])

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.double()).float()


class ExactAR:
    """The context model and entropy-parameter network of an autoregressive model, exact."""

    def __init__(self, model: nn.Module) -> None:
        cp = model.context_prediction
        if type(cp).__name__ != "QMaskedConv2d":
            raise ExactPathError("context_prediction is not quantized")
        self.conv = _ExactConv("context_prediction", cp)
        self.params = ExactSequential(model.entropy_parameters, "entropy_parameters")

    def to(self, device: torch.device) -> ExactAR:
        self.conv.to(device)
        self.params.to(device)
        return self

    def context(self, crop: Tensor) -> Tensor:
        return self.conv.forward_unpadded(crop).float()

    def entropy_parameters(self, x: Tensor) -> Tensor:
        return self.params(x)


#: the Sequential attributes that decide the entropy decoder's state (run exactly at encode and
#: decode; autoregressive models add their context model) and the synthesis (exact at decode).
ENTROPY_PATH = ("h_s",)
SYNTHESIS = ("g_s",)


def _entropy_path(model: nn.Module) -> tuple[str, ...]:
    """The attributes of ``model``'s entropy path: ``h_s`` for hyperprior models, none for a
    factorized prior (its CDFs are fixed tables); ExactPathError for latent codecs licq's exact
    path does not cover (ELIC's channel and checkerboard contexts)."""
    if hasattr(model, "latent_codec"):
        raise ExactPathError(f"{type(model).__name__}'s latent codec (channel groups, "
                             "checkerboard context) has no exact arithmetic path in licq")
    if not hasattr(model, "gaussian_conditional"):
        return ()
    for attr in ENTROPY_PATH:
        if not isinstance(getattr(model, attr, None), nn.Sequential):
            raise ExactPathError(f"{type(model).__name__} has no Sequential {attr}")
    return ENTROPY_PATH


def check_exact(model: nn.Module, synthesis: bool = False) -> None:
    """Raise :class:`ExactPathError` unless ``model``'s entropy path (and with ``synthesis`` its
    synthesis ``g_s``) can run exactly; the message names the first layer that cannot."""
    for attr in _entropy_path(model):
        ExactSequential(getattr(model, attr), attr)
    if synthesis:
        seq = getattr(model, "g_s", None)
        if not isinstance(seq, nn.Sequential):
            raise ExactPathError(f"{type(model).__name__} has no Sequential g_s")
        ExactSequential(seq, "g_s")
    if hasattr(model, "context_prediction"):
        if getattr(model, "_compress_ar", None) is None or not isinstance(
                getattr(model._compress_ar, "__func__", None), types.FunctionType) or \
                model._compress_ar.__func__.__module__ != "licq.codec.ar":
            raise ExactPathError(f"{type(model).__name__}'s autoregressive loops are not licq's "
                                 "(quantize the model with licq first)")
        ExactAR(model)


def _exact_synthesis(model: nn.Module) -> nn.Module | None:
    seq = getattr(model, "g_s", None)
    if not isinstance(seq, nn.Sequential):
        return None
    try:
        return ExactSequential(seq, "g_s")
    except ExactPathError:
        return None


@contextmanager
def exact_paths(model: nn.Module, synthesis: bool = True) -> Iterator[nn.Module]:
    """Swap ``h_s`` (and the context model of autoregressive models) for exact versions while
    inside; with ``synthesis`` also ``g_s`` where its layers allow (otherwise it stays float:
    :func:`check_exact` with ``synthesis=True`` tells beforehand, and ``compress_image`` refuses
    such models unless ``exact=False``).

    The exact modules are built once per model and cached on it (``model._licq_exact``).
    """
    cache = getattr(model, "_licq_exact", None)
    if cache is None:
        check_exact(model)
        device = next(model.parameters()).device
        cache = {attr: ExactSequential(getattr(model, attr), attr).to(device)
                 for attr in _entropy_path(model)}
        g_s = _exact_synthesis(model)
        if g_s is not None:
            cache["g_s"] = g_s.to(device)
        if hasattr(model, "context_prediction"):
            cache["ar"] = ExactAR(model).to(device)
        object.__setattr__(model, "_licq_exact", cache)
    attrs = [a for a in ENTROPY_PATH + (SYNTHESIS if synthesis else ()) if a in cache]
    saved = {a: model._modules[a] for a in attrs}
    try:
        for a in attrs:
            model._modules[a] = cache[a]
        if "ar" in cache:
            object.__setattr__(model, "_licq_ar_exact", cache["ar"])
        yield model
    finally:
        for a, m in saved.items():
            model._modules[a] = m
        if "ar" in cache:
            object.__delattr__(model, "_licq_ar_exact")
