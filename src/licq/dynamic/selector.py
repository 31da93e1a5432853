"""DynaQuant's dynamic bit-width selection (DBWS): a per-image choice of each layer's bit-width.

    sides = make_dynamic(model, candidates=(4, 6, 8))   # after quantize_ at W8A8
    calibrate(model) ...; prepare_qat(model, QATSpec(params="dpa", rounding="dgm"))
    train with loss R + λ·D + γ·L_bits (licq qat --preset dynaquant)

Per side (encoder ``g_a``, decoder ``g_s``) a :class:`BitSelector` reads the activation after the
side's first module (kept at 8 bit), pools it to 5×5, and an MLP (dropout 0.2) gives one logit
vector over the candidate bit-widths per dynamically quantized layer of that side. Training uses
Gumbel-softmax soft samples at temperature ``tau`` (per image); inference takes the argmax. Each
dynamic layer holds one weight quantizer and one input quantizer per candidate (bits apply to both,
W = A), prepared once; a hard choice runs only the chosen one. The hyper-transforms stay at their
static (8-bit) configuration.

The decoder's selector only sees what the decoder has — ``g_s``'s first module applied to the
decoded latent ŷ — so no side information is needed: the encoder's ŷ and the decoder's ŷ are the
same integers, and the decoder-side choice affects only the reconstruction, never the parsing of
the bitstream (the entropy parameters come from the static 8-bit ``h_s``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from licq.api import quantized_layers
from licq.quant.fake_quant import FakeQuantize
from licq.quant.modules import QuantLayer

SIDES = ("g_a", "g_s")


class BitSelector(nn.Module):
    """Pool to ``pool``×``pool`` → flatten → Linear → ReLU → Dropout → Linear → (N, L, K) logits."""

    def __init__(self, channels: int, num_layers: int, num_candidates: int, hidden: int = 16,
                 pool: int = 5, dropout: float = 0.2) -> None:
        super().__init__()
        self.num_layers, self.num_candidates = num_layers, num_candidates
        self.pool = nn.AdaptiveAvgPool2d(pool)
        self.mlp = nn.Sequential(
            nn.Flatten(), nn.Linear(channels * pool * pool, hidden), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(hidden, num_layers * num_candidates))
        nn.init.zeros_(self.mlp[-1].weight)  # start from uniform choices
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, feat: Tensor) -> Tensor:
        pooled = adaptive_avg_pool_mm(feat, self.pool.output_size)
        return self.mlp(pooled).view(-1, self.num_layers, self.num_candidates)


def _bin_matrix(n: int, k: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(k, n) averaging matrix of AdaptiveAvgPool's bins [⌊i·n/k⌋, ⌈(i+1)·n/k⌉)."""
    m = torch.zeros(k, n, dtype=dtype, device=device)
    for i in range(k):
        start, end = (i * n) // k, -((-(i + 1) * n) // k)
        m[i, start:end] = 1.0 / (end - start)
    return m


_BIN_CACHE: dict[tuple, Tensor] = {}


def adaptive_avg_pool_mm(x: Tensor, size: int | tuple[int, int]) -> Tensor:
    """``F.adaptive_avg_pool2d(x, size)`` as two matrix products with the bin-averaging matrices:
    the same bins and values (up to float summation order), and faster on one CPU thread for
    the selector's large-input, 5×5-output case."""
    kh, kw = (size, size) if isinstance(size, int) else size
    n, c, h, w = x.shape

    def mat(length: int, k: int) -> Tensor:
        key = (length, k, x.dtype, x.device)
        if key not in _BIN_CACHE:
            _BIN_CACHE[key] = _bin_matrix(length, k, x.dtype, x.device)
        return _BIN_CACHE[key]

    # rows first: (kh, H) @ (N·C, H, W) reads the input once in W-contiguous rows (about 1.5×
    # faster on one thread than reducing W first for a 64×256×384 input)
    t = mat(h, kh) @ x.reshape(n * c, h, w)  # (N·C, kh, W)
    t = t @ mat(w, kw).t()  # (N·C, kh, kw)
    return t.reshape(n, c, kh, kw)


class DynamicLayer(nn.Module):
    """A quantized layer with one weight and one input quantizer per candidate bit-width.

    ``probs`` (N, K) — set by the side's selector before each forward — mixes the candidates per
    sample (soft, training) or picks one (one-hot, inference: only that candidate runs).
    """

    def __init__(self, layer: QuantLayer, candidates: Sequence[int]) -> None:
        super().__init__()
        self.candidates = tuple(candidates)
        cfg = layer.qconfig
        axis = layer.weight_quant.axis
        channels = layer.weight_quant.scale.numel() if axis is not None else None
        unsigned = layer.weight_quant.unsigned
        self.cand_w = nn.ModuleList(
            FakeQuantize(b, cfg.symmetric, axis, channels, cfg.observer, unsigned=unsigned)
            for b in self.candidates)
        self.cand_a = nn.ModuleList(
            FakeQuantize(b, False, None, None, cfg.a_observer) for b in self.candidates)
        del layer._modules["weight_quant"]
        if "input_quant" in layer._modules:
            del layer._modules["input_quant"]
        self.layer = layer
        with torch.no_grad():
            for fq in self.cand_w:
                fq.calibrate_static(layer.effective_weight())
        self.probs: Tensor | None = None

    def _run(self, x: Tensor, k: int) -> Tensor:
        mods = self.layer._modules
        mods["weight_quant"], mods["input_quant"] = self.cand_w[k], self.cand_a[k]
        try:
            return self.layer(x)
        finally:
            del mods["weight_quant"], mods["input_quant"]

    def forward(self, x: Tensor) -> Tensor:
        if self.probs is None:
            raise RuntimeError("dynamic layer run without a selection (call it through its side)")
        p = self.probs
        if any(q.observing for q in self.cand_a):  # calibration: every candidate sees the input
            outs = [self._run(x, k) for k in range(len(self.candidates))]
            return sum(o * p[:, k].view(-1, *([1] * (x.dim() - 1))) for k, o in enumerate(outs))
        hard = bool(((p == 0) | (p == 1)).all())
        if hard:
            choice = p.argmax(dim=1)
            if bool((choice == choice[0]).all()):  # one choice for the whole batch
                return self._run(x, int(choice[0]))
        out = None
        for k in range(len(self.candidates)):
            w = p[:, k]
            if hard and not bool((w > 0).any()):
                continue
            y = self._run(x, k) * w.view(-1, *([1] * (x.dim() - 1)))
            out = y if out is None else out + y
        return out


class DynamicSide(nn.Module):
    """``g_a`` or ``g_s`` with a selector after its first module."""

    def __init__(self, seq: nn.Sequential, selector: BitSelector, layers: list[str]) -> None:
        super().__init__()
        self.seq = seq
        self.selector = selector
        self.layer_names = layers
        self.tau = 1.0
        self.hard_training = False  # straight-through Gumbel (hard forward) while training
        self.last_logits: Tensor | None = None
        self.last_probs: Tensor | None = None
        self.selector_seconds = 0.0  # accumulated wall time of the selector

    def dynamic_layers(self) -> list[DynamicLayer]:
        return [self.seq.get_submodule(n) for n in self.layer_names]

    def forward(self, x: Tensor) -> Tensor:
        h = self.seq[0](x)
        t0 = time.perf_counter()
        logits = self.selector(h)
        if self.training:
            probs = F.gumbel_softmax(logits, tau=self.tau, hard=self.hard_training, dim=-1)
        else:
            probs = F.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)
        self.selector_seconds += time.perf_counter() - t0
        self.last_logits, self.last_probs = logits, probs
        for i, layer in enumerate(self.dynamic_layers()):
            layer.probs = probs[:, i]
        for m in list(self.seq)[1:]:
            h = m(h)
        return h


def make_dynamic(
    model: nn.Module, candidates: Sequence[int] = (4, 6, 8), hidden: int = 16,
) -> dict[str, DynamicSide]:
    """Turn the quantized layers of ``g_a`` and ``g_s`` after each side's first module into
    :class:`DynamicLayer` s (GDN/IGDN stay static) and give each side a selector. In place."""
    if not quantized_layers(model):
        raise ValueError("quantize the model first (licq.quantize_), e.g. at W8A8")
    sides = {}
    for side in SIDES:
        seq = getattr(model, side, None)
        if not isinstance(seq, nn.Sequential) or len(seq) < 2:
            raise ValueError(f"{type(model).__name__}.{side} is not a Sequential of >= 2 modules")
        names = []
        for name, mod in list(seq.named_modules()):
            if not name or name.split(".")[0] == "0" or not isinstance(mod, QuantLayer):
                continue
            if hasattr(mod, "beta_quant"):  # GDN/IGDN: static
                continue
            if getattr(mod, "input_quant", None) is None:
                raise ValueError(f"{side}.{name}: dynamic layers need quantized inputs (a_bits)")
            parent, _, child = name.rpartition(".")
            (seq.get_submodule(parent) if parent else seq)._modules[child] = DynamicLayer(
                mod, candidates)
            names.append(name)
        if not names:
            raise ValueError(f"{side} has no quantized layer after its first module")
        with torch.no_grad():
            channels = _first_output_channels(seq[0])
        sel = BitSelector(channels, len(names), len(candidates), hidden)
        dyn = DynamicSide(seq, sel, names)
        setattr(model, side, dyn)
        sides[side] = dyn
    return sides


def quantize_selectors(model: nn.Module, bits: int = 8) -> None:
    """Weights of both selectors' linear layers to ``bits`` (per output channel, min-max,
    weight-only; in place). Done once after training: the selectors train in float (the last
    layer starts at zero, no range to calibrate), and their weights are read for every image: at
    32 bits even the 16-unit selectors of the ScaleHyperprior (2 × 25.7k weights, 7 % of its
    transforms') would add about a quarter to the bits the ~8-bit transforms read."""
    from licq.api import LayerQConfig
    from licq.quant.modules import QLinear

    cfg = LayerQConfig(w_bits=bits, a_bits=None)
    for side in dynamic_sides(model).values():
        mlp = side.selector.mlp
        for i, mod in enumerate(mlp):
            if type(mod) is nn.Linear:
                mlp[i] = QLinear.from_float(mod, cfg)


def _first_output_channels(first: nn.Module) -> int:
    convs = [m for m in first.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    last = convs[-1] if not hasattr(first, "conv2") else first.conv2
    return last.out_channels


def dynamic_sides(model: nn.Module) -> dict[str, DynamicSide]:
    return {s: getattr(model, s) for s in SIDES if isinstance(getattr(model, s, None), DynamicSide)}


def bits_loss(model: nn.Module) -> Tensor:
    """L_bits = mean over dynamic layers (both sides) of Σ_k p_k·b_k, averaged over the batch."""
    terms = []
    for side in dynamic_sides(model).values():
        if side.last_probs is None:
            raise RuntimeError("run the model before computing L_bits")
        b = torch.tensor(side.dynamic_layers()[0].candidates, dtype=side.last_probs.dtype,
                         device=side.last_probs.device)
        terms.append((side.last_probs * b).sum(-1))  # (N, L)
    return torch.cat(terms, dim=1).mean()


def set_temperature(model: nn.Module, tau: float) -> None:
    for side in dynamic_sides(model).values():
        side.tau = tau


def temperature(step: int, total: int, tau0: float = 5.0, tau_min: float = 0.5) -> float:
    """Exponential annealing from ``tau0`` at step 0 to ``tau_min`` at step ``total``."""
    if total <= 0:
        return tau_min
    frac = min(max(step / total, 0.0), 1.0)
    return float(tau0 * (tau_min / tau0) ** frac)


def selections(model: nn.Module) -> dict[str, list[list[int]]]:
    """The last forward's chosen bits per side: ``{side: [[bits per layer] per image]}``."""
    out = {}
    for name, side in dynamic_sides(model).items():
        if side.last_probs is None:
            continue
        cands = side.dynamic_layers()[0].candidates
        idx = side.last_probs.argmax(-1).tolist()
        out[name] = [[cands[k] for k in row] for row in idx]
    return out


def dynamic_summary(results: dict) -> dict:
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
