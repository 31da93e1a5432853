"""Quantized versions of every layer type a learned image codec has.

Each quantized module *is* its float module (``QConv2d`` subclasses ``nn.Conv2d``), built with
``from_float`` so that parameters, buffers and ``state_dict`` names stay the same, with two child
quantizers: ``input_quant`` (the layer input, per-tensor asymmetric; absent in weight-only mode)
and ``weight_quant`` (per output channel). The forward order is always: quantize input → quantize
weight → float op.

Covered: Conv2d (and therefore the conv of CompressAI's sub-pixel ``conv + PixelShuffle``),
ConvTranspose2d (output channels are weight axis 1), CompressAI's MaskedConv2d and
CheckerboardMaskedConv2d (mask applied before quantizing, so masked taps stay exactly zero),
GDN/IGDN/GDN1 (the effective, reparametrised β and γ are quantized, unsigned), and Linear.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from compressai.layers import GDN, GDN1, MaskedConv2d
from torch import Tensor

from licq.config import LayerQConfig
from licq.quant.fake_quant import FakeQuantize


class QuantLayer:
    """Mixin: the two quantizers and the forward order shared by every quantized layer."""

    weight_quant: FakeQuantize
    input_quant: FakeQuantize | None
    #: weight axis of the output channels
    weight_axis: int = 0

    def _init_quantizers(self, cfg: LayerQConfig, channels: int, unsigned: bool = False) -> None:
        axis = self.weight_axis if cfg.granularity == "per_channel" else None
        self.weight_quant = FakeQuantize(cfg.w_bits, cfg.symmetric, axis, channels,
                                         cfg.observer, unsigned=unsigned)
        self.input_quant = (FakeQuantize(cfg.a_bits, False, None, None, cfg.a_observer)
                            if cfg.a_bits is not None else None)
        self.qconfig = cfg

    def quant_input(self, x: Tensor) -> Tensor:
        return self.input_quant(x) if self.input_quant is not None else x

    def effective_weight(self) -> Tensor:
        """The float weight that is quantized (masked for masked convs)."""
        return self.weight  # type: ignore[attr-defined]

    def quantized_weight(self) -> Tensor:
        return self.weight_quant(self.effective_weight())

    @torch.no_grad()
    def calibrate_weights(self) -> None:
        self.weight_quant.calibrate_static(self.effective_weight())


def _copy_state(dst: nn.Module, src: nn.Module) -> nn.Module:
    dst.load_state_dict(src.state_dict(), strict=True)
    p = next(src.parameters())
    return dst.to(device=p.device, dtype=p.dtype).train(src.training)


class QConv2d(nn.Conv2d, QuantLayer):
    weight_axis = 0

    @classmethod
    def from_float(cls, mod: nn.Conv2d, cfg: LayerQConfig) -> QConv2d:
        q = cls(mod.in_channels, mod.out_channels, mod.kernel_size, mod.stride, mod.padding,
                mod.dilation, mod.groups, mod.bias is not None, mod.padding_mode)
        _copy_state(q, mod)
        q._init_quantizers(cfg, mod.out_channels)
        q.calibrate_weights()
        return q

    def forward(self, x: Tensor) -> Tensor:
        x = self.quant_input(x)
        return self._conv_forward(x, self.quantized_weight(), self.bias)


class QMaskedConv2d(MaskedConv2d, QuantLayer):
    """Masked conv (PixelCNN / checkerboard): mask first, then quantize; the mask is a buffer."""

    weight_axis = 0

    @classmethod
    def from_float(cls, mod: MaskedConv2d, cfg: LayerQConfig) -> QMaskedConv2d:
        q = cls(mod.in_channels, mod.out_channels, mod.kernel_size, mod.stride, mod.padding,
                mod.dilation, mod.groups, mod.bias is not None, mod.padding_mode)
        _copy_state(q, mod)  # copies the mask too (checkerboard or A/B)
        q._init_quantizers(cfg, mod.out_channels)
        q.calibrate_weights()
        return q

    def effective_weight(self) -> Tensor:
        return self.weight * self.mask

    def forward(self, x: Tensor) -> Tensor:
        x = self.quant_input(x)
        return self._conv_forward(x, self.quantized_weight(), self.bias)


class QConvTranspose2d(nn.ConvTranspose2d, QuantLayer):
    """Transposed conv; weight is (in, out/groups, kH, kW), so output channels are axis 1."""

    weight_axis = 1

    @classmethod
    def from_float(cls, mod: nn.ConvTranspose2d, cfg: LayerQConfig) -> QConvTranspose2d:
        if mod.groups != 1:
            raise ValueError("grouped ConvTranspose2d is not supported by per-channel quantization")
        q = cls(mod.in_channels, mod.out_channels, mod.kernel_size, mod.stride, mod.padding,
                mod.output_padding, mod.groups, mod.bias is not None, mod.dilation,
                mod.padding_mode)
        _copy_state(q, mod)
        q._init_quantizers(cfg, mod.out_channels)
        q.calibrate_weights()
        return q

    def forward(self, x: Tensor, output_size: list[int] | None = None) -> Tensor:
        x = self.quant_input(x)
        output_padding = self._output_padding(x, output_size, self.stride, self.padding,
                                              self.kernel_size, 2, self.dilation)
        return F.conv_transpose2d(x, self.quantized_weight(), self.bias, self.stride,
                                  self.padding, output_padding, self.groups, self.dilation)


class QLinear(nn.Linear, QuantLayer):
    weight_axis = 0

    @classmethod
    def from_float(cls, mod: nn.Linear, cfg: LayerQConfig) -> QLinear:
        q = cls(mod.in_features, mod.out_features, mod.bias is not None)
        _copy_state(q, mod)
        q._init_quantizers(cfg, mod.out_features)
        q.calibrate_weights()
        return q

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self.quant_input(x), self.quantized_weight(), self.bias)


class QGDN(GDN, QuantLayer):
    """GDN / IGDN / GDN1 with the effective (reparametrised, non-negative) γ and β quantized.

    γ (C×C, row i normalises output channel i) is quantized per output channel, β per tensor,
    both unsigned. ``bits`` is the layer's ``w_bits`` unless the config overrides GDN precision.
    """

    weight_axis = 0

    @classmethod
    def from_float(cls, mod: GDN, cfg: LayerQConfig) -> QGDN:
        c = mod.beta.numel()
        q = cls(c, inverse=mod.inverse)
        q.beta_reparam = mod.beta_reparam  # same minimum / pedestal buffers
        q.gamma_reparam = mod.gamma_reparam
        _copy_state(q, mod)
        q.abs_variant = isinstance(mod, GDN1)
        q._init_quantizers(cfg, c, unsigned=True)
        q.beta_quant = FakeQuantize(cfg.w_bits, True, None, None, "minmax", unsigned=True)
        q.calibrate_weights()
        return q

    def effective_weight(self) -> Tensor:
        return self.gamma_reparam(self.gamma)

    def effective_beta(self) -> Tensor:
        return self.beta_reparam(self.beta)

    @torch.no_grad()
    def calibrate_weights(self) -> None:
        super().calibrate_weights()
        self.beta_quant.calibrate_static(self.effective_beta())

    def forward(self, x: Tensor) -> Tensor:
        x = self.quant_input(x)
        gamma = self.quantized_weight()
        gamma = gamma.reshape(*gamma.shape, 1, 1)  # from the weight, not x: a constant when exported
        beta = self.beta_quant(self.effective_beta())
        if self.abs_variant:
            norm = F.conv2d(torch.abs(x), gamma, beta)
            return x * (norm if self.inverse else 1.0 / norm)
        norm = F.conv2d(x**2, gamma, beta)  # exports as Pow: one DequantizeLinear (Mul(x, x): two)
        return x * (_SafeSqrt.apply(norm) if self.inverse else _SafeRsqrt.apply(norm))


_GRAD_EPS = 1e-12


class _SafeSqrt(torch.autograd.Function):
    """``sqrt`` whose backward stays finite at 0: quantized IGDN can meet a zero norm (a β and
    every weighted input quantized to 0); the forward is the plain, bit-exact ``torch.sqrt``."""

    @staticmethod
    def forward(ctx, v: Tensor) -> Tensor:
        out = torch.sqrt(v)
        ctx.save_for_backward(v)
        return out

    @staticmethod
    def backward(ctx, g: Tensor) -> Tensor:
        (v,) = ctx.saved_tensors
        return g * 0.5 * torch.rsqrt(v.clamp_min(_GRAD_EPS))


class _SafeRsqrt(torch.autograd.Function):
    """``rsqrt`` with the same finite backward at 0 (forward unchanged)."""

    @staticmethod
    def forward(ctx, v: Tensor) -> Tensor:
        ctx.save_for_backward(v)
        return torch.rsqrt(v)

    @staticmethod
    def backward(ctx, g: Tensor) -> Tensor:
        (v,) = ctx.saved_tensors
        return g * -0.5 * v.clamp_min(_GRAD_EPS).pow(-1.5)


#: float type -> quantized type; the most specific match wins (MaskedConv2d before Conv2d).
QUANTIZED_TYPES: dict[type[nn.Module], type[nn.Module]] = {
    MaskedConv2d: QMaskedConv2d,
    nn.ConvTranspose2d: QConvTranspose2d,
    nn.Conv2d: QConv2d,
    nn.Linear: QLinear,
    GDN: QGDN,
}


def quantized_type_for(mod: nn.Module) -> type[nn.Module] | None:
    for ftype, qtype in QUANTIZED_TYPES.items():
        if isinstance(mod, ftype):
            return qtype
    return None
