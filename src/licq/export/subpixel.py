"""Rewrite a strided ConvTranspose2d as Conv2d + PixelShuffle (the sub-pixel form).

A transposed convolution with stride s computes s×s interleaved output phases; phase (a, b) is
an ordinary convolution of the input with the taps ``w[:, :, s·d + a + p, s·e + b + p]``. Stacking
the s² phase kernels as output channels of one Conv2d and interleaving them with
``PixelShuffle(s)`` gives the same function, though not bit-exactly in floating point (the sums
run in another order, so a few 8-bit output values can move by one level), and the Conv2d has int8
kernels where ``conv_transpose2d`` has none with per-channel weights. It is not meant as an FP32
speed-up (a quick check here showed none). Used when the
output size is exactly s × the input size (CompressAI's
``deconv``: k=5, s=2, p=2, output_padding=1); stride-1 transposed convolutions become a plain
convolution with the flipped kernel.

Quantized layers keep their integer codes: every phase channel of output channel ``o`` gets the
scale and zero point of ``o``, and the input quantizer is shared, so weights quantize to exactly the
codes of the transposed layer.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from licq.quant.modules import QConv2d, QConvTranspose2d


def _phase_taps(k: int, s: int, p: int) -> tuple[int, int]:
    """Range (d_min, d_max) of input offsets d = i − i' that any phase uses."""
    lo = min(-((a + p) // s) for a in range(s))  # ceil((−a−p)/s)
    hi = max((k - 1 - a - p) // s for a in range(s))
    return lo, hi


def supported(mod: nn.ConvTranspose2d) -> bool:
    if mod.groups != 1 or mod.dilation != (1, 1) or mod.padding_mode != "zeros":
        return False
    (kh, kw), (sh, sw), (ph, pw) = mod.kernel_size, mod.stride, mod.padding
    oph, opw = mod.output_padding
    return sh == sw and kh == kw and ph == pw and oph == opw and kh + oph - 2 * ph - sh == 0


class SubPixelConv(nn.Module):
    """``pad → conv (C_out·s² channels) → PixelShuffle(s)``: equal to the transposed conv."""

    def __init__(self, conv: nn.Conv2d, stride: int, pad: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.conv = conv
        self.stride = stride
        self.pad = pad
        #: ONNX export only: the consumer's input quantizer, applied before the pixel shuffle
        #: as well (idempotent) so that ONNX Runtime sees Conv → QuantizeLinear and fuses them
        self.out_quant = None

    def forward(self, x: Tensor) -> Tensor:
        if any(self.pad):
            x = F.pad(x, self.pad)
        y = self.conv(x)
        if self.out_quant is not None:
            y = self.out_quant(y)
        return F.pixel_shuffle(y, self.stride) if self.stride > 1 else y


def _subpixel_weight(w: Tensor, k: int, s: int, p: int) -> tuple[Tensor, int, int]:
    """(C_out·s², C_in, K, K) conv weight of the transposed weight ``w`` (C_in, C_out, k, k)."""
    lo, hi = _phase_taps(k, s, p)
    kc = hi - lo + 1
    c_in, c_out = w.shape[:2]
    out = w.new_zeros(c_out, s, s, c_in, kc, kc)
    for a in range(s):
        for b in range(s):
            for u in range(kc):
                m = s * (hi - u) + a + p
                if not 0 <= m < k:
                    continue
                for v in range(kc):
                    n = s * (hi - v) + b + p
                    if 0 <= n < k:
                        out[:, a, b, :, u, v] = w[:, :, m, n].t()
    return out.reshape(c_out * s * s, c_in, kc, kc), lo, hi


@torch.no_grad()
def to_subpixel(mod: nn.ConvTranspose2d) -> SubPixelConv:
    """The sub-pixel equivalent of ``mod`` (float or :class:`QConvTranspose2d`)."""
    if not supported(mod):
        raise ValueError(f"no exact sub-pixel form for {mod}")
    k, s, p = mod.kernel_size[0], mod.stride[0], mod.padding[0]
    weight, lo, hi = _subpixel_weight(mod.weight.detach(), k, s, p)
    kc = weight.shape[-1]
    bias = mod.bias.detach().repeat_interleave(s * s) if mod.bias is not None else None
    conv = nn.Conv2d(weight.shape[1], weight.shape[0], kc, bias=bias is not None)
    conv.weight.copy_(weight)
    if bias is not None:
        conv.bias.copy_(bias)
    pad = (hi, kc - 1 - hi, hi, kc - 1 - hi)  # left/right, top/bottom
    if isinstance(mod, QConvTranspose2d):
        conv = QConv2d.from_float(conv, mod.qconfig)
        wq = mod.weight_quant
        rep = 1 if wq.axis is None else s * s
        conv.weight_quant.scale = wq.scale.repeat_interleave(rep) if rep > 1 else wq.scale.clone()
        conv.weight_quant.zero_point = (wq.zero_point.repeat_interleave(rep) if rep > 1
                                        else wq.zero_point.clone())
        if mod.input_quant is not None:  # the same input tensor: the same quantizer (a DPA
            # one per channel, which a state-dict copy into the new per-tensor one refused)
            conv.input_quant = copy.deepcopy(mod.input_quant)
        conv.to(mod.weight.device)
    return SubPixelConv(conv, s, pad).train(mod.training)


def rewrite_transposed_convs(model: nn.Module) -> list[str]:
    """Replace every supported ConvTranspose2d of ``model`` in place; the names replaced."""
    done = []
    for name, mod in list(model.named_modules()):
        if isinstance(mod, nn.ConvTranspose2d) and supported(mod):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, to_subpixel(mod))
            done.append(name)
    return done


# --- strided convolutions on few input channels: the space-to-depth form ---------------------


class SpaceToDepthConv(nn.Module):
    """``pad → PixelUnshuffle(s) → conv (C_in·s² channels, stride 1, no padding)``: equal to a
    stride-s convolution (float: up to summation order; int8 kernels: bit-identical, since the
    integer sums are exact in any order) on inputs whose height and width are multiples of s."""

    def __init__(self, conv: nn.Conv2d, stride: int, pad: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.conv = conv
        self.stride = stride
        self.pad = pad

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pixel_unshuffle(F.pad(x, self.pad), self.stride))


def space_to_depth_supported(mod: nn.Module) -> bool:
    if (type(mod) not in (nn.Conv2d, QConv2d) or mod.groups != 1 or mod.dilation != (1, 1)
            or isinstance(mod.padding, str)):  # "same" / "valid"
        return False
    (kh, kw), (sh, sw), (ph, pw) = mod.kernel_size, mod.stride, mod.padding
    return sh == sw > 1 and kh == kw and ph == pw and mod.padding_mode == "zeros"


@torch.no_grad()
def to_space_to_depth(mod: nn.Conv2d) -> SpaceToDepthConv:
    """The space-to-depth equivalent of a strided ``mod`` (float or :class:`QConv2d`).

    Tap (u, v) = (s·du + a, s·dv + b) of input channel c moves to channel c·s² + a·s + b (the
    order of ``pixel_unshuffle``), offset (du, dv) of a K×K kernel, K = ⌈k/s⌉; the taps past k
    are zero. Quantized layers keep their codes: the output channels, and so the per-channel
    weight scales, are unchanged, a zero weight has code 0 (or the zero point), and the shared
    input quantizer maps the zero padding to its zero point as the original padding did.
    """
    if not space_to_depth_supported(mod):
        raise ValueError(f"no space-to-depth form for {mod}")
    k, s, p = mod.kernel_size[0], mod.stride[0], mod.padding[0]
    kc = -(-k // s)
    w = mod.weight.detach()
    c_out, c_in = w.shape[:2]
    out = w.new_zeros(c_out, c_in, s, s, kc, kc)
    for a in range(s):
        for b in range(s):
            for du in range(kc):
                for dv in range(kc):
                    u, v = s * du + a, s * dv + b
                    if u < k and v < k:
                        out[:, :, a, b, du, dv] = w[:, :, u, v]
    conv = nn.Conv2d(c_in * s * s, c_out, kc, bias=mod.bias is not None)
    conv.weight.copy_(out.reshape(c_out, c_in * s * s, kc, kc))
    if mod.bias is not None:
        conv.bias.copy_(mod.bias.detach())
    if isinstance(mod, QConv2d):
        conv = QConv2d.from_float(conv, mod.qconfig)
        conv.weight_quant.load_state_dict(mod.weight_quant.state_dict())
        if mod.input_quant is not None:  # it now quantizes the unshuffled input: input channel
            # c became channels c·s² … c·s² + s² − 1, so a per-channel (DPA) one repeats its
            # parameters s² times (a per-tensor one is unchanged)
            iq = conv.input_quant = copy.deepcopy(mod.input_quant)
            if iq.axis is not None:
                iq.scale = iq.scale.repeat_interleave(s * s)
                iq.zero_point = iq.zero_point.repeat_interleave(s * s)
        conv.to(mod.weight.device)
    # for inputs whose size n is a multiple of s: the original's last window starts at
    # s·(out−1) = n + 2p − k − r, r = (2p − k) mod s, and the K·s rows of the new window must
    # exist, so pad p on the top/left and p + extra on the bottom/right (a multiple of s in all;
    # other sizes make pixel_unshuffle fail rather than give a wrong answer)
    extra = kc * s - k - (2 * p - k) % s
    return SpaceToDepthConv(conv, s, (p, p + extra, p, p + extra)).train(mod.training)


def rewrite_strided_input_convs(model: nn.Module, max_in_channels: int = 4) -> list[str]:
    """Replace, in place, every strided quantized convolution of ``model`` with at most
    ``max_in_channels`` inputs (the RGB input layer) by its space-to-depth form; the names.

    Why: ONNX Runtime's int8 convolution is slow on 3 input channels (im2col rows of 75 taps);
    the same layer as a 3×3 convolution on 12 channels ran 2.3× faster
    (``benchmarks/int8_kernels.py``). Float layers are left alone (ONNX Runtime's float
    kernels were slower in that form)."""
    done = []
    for name, mod in list(model.named_modules()):
        if (isinstance(mod, QConv2d) and space_to_depth_supported(mod)
                and mod.in_channels <= max_in_channels):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, to_space_to_depth(mod))
            done.append(name)
    return done
