"""Per-image compute cost of a codec's transforms: MACs, BitOps and weight bits read.

    with CostMeter(model) as meter:
        model.compress(x)
    meter.bitops, meter.weight_bits, meter.macs

Forward hooks on every convolution, transposed convolution and linear layer count, for each call,
its multiply-accumulates (conv: output elements × C_in/groups × k_h × k_w; transposed conv: input
elements × C_out/groups × k_h × k_w; masked convolutions count their full kernel), the weight bits
it reads (elements × weight bits) and its BitOps (MACs × weight bits × input bits). Quantized layers
count the bits of the quantizers in use at that call (for a dynamic layer: the candidate chosen for
that image); float layers count 32 × 32.

Autoregressive models (mbt2018, cheng2020) apply their context convolution once per latent
position in ``compress`` / ``decompress`` as a functional convolution on a crop, which no hook
sees: licq's coding loops (:mod:`licq.codec.ar`, installed on every quantized model) report each
of those calls to the meter (:meth:`CostMeter.record`, full masked kernel, 1 × 1 output).
CompressAI's own loops, which an unquantized model runs, are not metered there.
"""

from __future__ import annotations

from collections import defaultdict

import torch.nn as nn
from torch import Tensor

FLOAT_BITS = 32
METER_ATTR = "_licq_cost_meter"


def layer_macs(layer: nn.Module, x: Tensor, y: Tensor) -> int:
    """Multiply-accumulates of one call, per image."""
    w = layer.weight
    if isinstance(layer, nn.ConvTranspose2d):
        return x[0].numel() * w.shape[1] * w.shape[2] * w.shape[3]
    if isinstance(layer, nn.Conv2d):
        return y[0].numel() * w.shape[1] * w.shape[2] * w.shape[3]
    return y[0].numel() * w.shape[1]


def _bits(layer: nn.Module) -> tuple[int, int]:
    wq = layer._modules.get("weight_quant")
    iq = layer._modules.get("input_quant")
    return (wq.bits if wq is not None else FLOAT_BITS), (iq.bits if iq is not None else FLOAT_BITS)


class CostMeter:
    """Counts MACs / BitOps / weight bits of the calls made inside the ``with`` block."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.handles: list = []
        self.reset()

    def reset(self) -> None:
        self.macs = 0
        self.bitops = 0
        self.weight_bits = 0
        self.weight_elements = 0
        self.per_layer: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def __enter__(self) -> CostMeter:
        for name, mod in self.model.named_modules():
            if isinstance(mod, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
                self.handles.append(mod.register_forward_hook(self._hook(name)))
        self.model.__dict__[METER_ATTR] = self  # for the calls hooks do not see (see record)
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []
        self.model.__dict__.pop(METER_ATTR, None)

    def record(self, name: str, layer: nn.Module, x: Tensor, y: Tensor) -> None:
        """Count one call of ``layer`` made outside its ``forward`` (input ``x``, output ``y``)."""
        macs = layer_macs(layer, x, y)
        wb, ab = _bits(layer)
        self.macs += macs
        self.bitops += macs * wb * ab
        self.weight_bits += layer.weight.numel() * wb
        self.weight_elements += layer.weight.numel()
        entry = self.per_layer[name]
        entry["macs"] += macs
        entry["w_bits"] = wb
        entry["a_bits"] = ab

    def _hook(self, name: str):
        def hook(mod: nn.Module, inputs: tuple, output: Tensor) -> None:
            self.record(name, mod, inputs[0], output)
        return hook


def active_meter(model: nn.Module) -> CostMeter | None:
    """The :class:`CostMeter` counting ``model``'s calls now, if any."""
    return model.__dict__.get(METER_ATTR)
