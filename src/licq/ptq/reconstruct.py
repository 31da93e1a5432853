"""RD-optimised reconstruction PTQ: learned rounding and activation steps, block by block.

After range calibration (:func:`licq.ptq.calibrate`), each *block* of the quantized codec (a conv
with its GDN / activation, a residual or attention block, the context model, …) is fitted to the
float codec, in data-flow order, on calibration crops of training images:

* **AdaRound** (Nagel et al., 2020): every weight of a conv / transposed conv / masked conv /
  linear layer rounds down or up by a learned choice ``h(V) ∈ [0, 1]`` (rectified sigmoid),
  driven to 0/1 by an annealed regulariser ``λ·Σ(1 − |2h − 1|^β)``, β 20 → 2; afterwards the
  choice is hard and the layer's float weight is replaced by its dequantized codes, so the model
  is a plain quantized model (same scales, same codes for every consumer: packed export, ONNX,
  the exact ``.licq`` path). GDN γ/β keep round-to-nearest.
* **Activation steps** of the block's per-tensor input quantizers are learned with them
  (LSQ-style straight-through gradient on a log-scale; the zero point stays). Quantizers of
  decoded latents (ŷ, ẑ: an integer step) are left as calibrated: their grid is the bitstream's.
* **BRECQ order and objective** (Li et al., 2021): a block's input comes from the already
  reconstructed quantized blocks before it, its target is the float codec's block output; the
  squared error is weighted per element by the squared gradient of the float codec's RD loss
  ``R + λ·D`` with respect to that output (the diagonal Fisher term of BRECQ, here the RD loss:
  errors in g_a's output count by what they cost in rate and distortion, g_s's by distortion).
* **Bias correction** (Nagel et al., 2019): each conv's per-channel mean output error on the
  calibration crops is added to its bias.
* **End-to-end RD stage** (as RDO-PTQ, Shi et al., 2022, arXiv 2211.02854): all activation steps
  together on the whole model's RD loss.

Bias correction and the end-to-end stage are kept only where they lower the RD loss on held-out
training crops (never the evaluation set), and the whole reconstruction only where it ends below
the calibrated model's held-out RD loss (else the calibrated model is restored: smaller block
errors do not always make a smaller RD loss); the result records what was kept. No weight is
trained: weights only round up or down.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
from torch import Tensor
from tqdm.auto import tqdm

from licq.qat.loss import RateDistortionLoss, mean_rd_loss
from licq.quant.fake_quant import FakeQuantize
from licq.quant.modules import QGDN, QuantLayer
from licq.quant.primitives import channel_view, dequantize, fake_quantize, quantize_int

#: AdaRound's rectified-sigmoid stretch (ζ, γ)
_ZETA, _GAMMA = 1.1, -0.1

#: layer types that join the block of the conv before them
_TRAILING = (QGDN, nn.ReLU, nn.LeakyReLU, nn.PixelShuffle, nn.Identity, nn.GELU, nn.Sigmoid)


@dataclass(frozen=True)
class ReconstructionConfig:
    """Hyper-parameters of :func:`reconstruct_`.

    Attributes:
        iters: optimisation steps per block.
        batch_size: calibration crops per step.
        lr: Adam learning rate of the rounding variables V.
        act_lr: Adam learning rate of the activation log-scales (0: keep calibrated steps).
        reg_weight: λ of the rounding regulariser (relative to the normalised block error).
        warmup: fraction of ``iters`` before the regulariser starts.
        beta: (start, end) of the regulariser's annealed exponent.
        fisher: weight the block error by the squared RD-loss gradient (else plain MSE).
        bias_correction: try per-channel bias correction after each block's rounding.
        e2e_iters: steps of the end-to-end RD stage over all activation steps (0: none).
        e2e_lr: Adam learning rate of that stage.
        fallback: restore the calibrated (round-to-nearest) model when the reconstruction, with
            whichever stages it kept, does not lower the held-out RD loss below the calibrated
            one (lower block errors need not mean a lower RD loss).
        seed: seed of the sampling of crops and of the RD gradient's noise.
    """

    iters: int = 300
    batch_size: int = 4
    lr: float = 3e-2
    act_lr: float = 1e-3
    reg_weight: float = 1.0
    warmup: float = 0.2
    beta: tuple[float, float] = (20.0, 2.0)
    fisher: bool = True
    bias_correction: bool = True
    e2e_iters: int = 100
    e2e_lr: float = 1e-3
    fallback: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.iters < 1:
            raise ValueError(f"iters must be ≥ 1, got {self.iters}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {self.batch_size}")
        if self.lr <= 0 or self.act_lr < 0 or self.e2e_lr <= 0:
            raise ValueError("learning rates must be positive (act_lr may be 0)")
        if self.reg_weight < 0:
            raise ValueError(f"reg_weight must be ≥ 0, got {self.reg_weight}")
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError(f"warmup must be in [0, 1), got {self.warmup}")
        if len(self.beta) != 2 or min(self.beta) <= 0:
            raise ValueError(f"beta must be (start, end) > 0, got {self.beta}")
        if self.e2e_iters < 0:
            raise ValueError(f"e2e_iters must be ≥ 0, got {self.e2e_iters}")

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass
class ReconstructionReport:
    """What :func:`reconstruct_` did: per block its error before/after, kept stages, whether
    the reconstruction was kept at all (``kept``; else the calibrated model was restored), time."""

    blocks: list[dict] = field(default_factory=list)
    heldout_rd_loss: dict[str, float] = field(default_factory=dict)
    bias_correction_kept: bool = False
    e2e_kept: bool = False
    kept: bool = True
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


# -- quantizers used while reconstructing ------------------------------------------------------
class AdaRoundWeight(nn.Module):
    """Fake-quantizes a weight with learned rounding; stands in for a layer's ``weight_quant``.

    ``w/s = floor(w/s) + frac``; the code is ``floor(w/s) + h(V)``, ``h`` a rectified sigmoid
    initialised at ``frac`` (so the soft weight starts at the float weight inside the range).
    """

    def __init__(self, fq: FakeQuantize, weight: Tensor, mask: Tensor | None = None) -> None:
        super().__init__()
        self.fq = fq
        w = weight.detach()
        s = channel_view(fq.scale, w, fq.axis)
        self.register_buffer("floor", torch.floor(w / s))
        frac = (w / s - self.floor).clamp(0.01, 0.99)
        self.V = nn.Parameter(-torch.log((_ZETA - _GAMMA) / (frac - _GAMMA) - 1))
        self.register_buffer("mask", mask)

    def h(self) -> Tensor:
        return torch.clamp(torch.sigmoid(self.V) * (_ZETA - _GAMMA) + _GAMMA, 0.0, 1.0)

    def codes(self, hard: bool) -> Tensor:
        up = (self.V >= 0).float() if hard else self.h()  # h(V) ≥ 0.5 ⇔ V ≥ 0
        z = channel_view(self.fq.zero_point, self.floor, self.fq.axis)
        q = torch.clamp(self.floor + up + z, self.fq.qmin, self.fq.qmax) - z
        return q if self.mask is None else q * self.mask

    def dequantized(self, hard: bool) -> Tensor:
        return self.codes(hard) * channel_view(self.fq.scale, self.floor, self.fq.axis)

    def forward(self, w: Tensor) -> Tensor:  # w: the effective weight, unused (V holds it)
        return self.dequantized(hard=False)

    def regulariser(self, beta: float) -> Tensor:
        h = self.h() if self.mask is None else self.h()[self.mask.bool().expand_as(self.V)]
        return (1 - (2 * h - 1).abs().pow(beta)).sum()

    def undecided(self) -> float:
        """Fraction of rounding variables not yet at 0 or 1."""
        h = self.h()
        return float(((h > 1e-3) & (h < 1 - 1e-3)).float().mean())


class LearnedStep(nn.Module):
    """A per-tensor input quantizer whose step is learned (log-scale, straight-through
    rounding); stands in for a layer's ``input_quant``; the zero point stays."""

    def __init__(self, fq: FakeQuantize) -> None:
        super().__init__()
        self.fq = fq
        self.log_scale = nn.Parameter(torch.log(fq.scale.detach().clone()))

    def forward(self, x: Tensor) -> Tensor:
        fq = self.fq
        return fake_quantize(x, torch.exp(self.log_scale), fq.zero_point, fq.qmin, fq.qmax, None)

    @torch.no_grad()
    def commit(self) -> None:
        self.fq.scale.copy_(torch.exp(self.log_scale))


def _learnable_input(layer: QuantLayer) -> bool:
    fq = layer.input_quant
    return (isinstance(fq, FakeQuantize) and fq.axis is None and not fq.integer_step
            and fq.log_scale is None)


# -- blocks --------------------------------------------------------------------------------------
@dataclass
class Block:
    """Consecutive modules run one after the other (one module, or a slice of a Sequential)."""

    names: list[str]
    modules: list[nn.Module]

    @property
    def name(self) -> str:
        return self.names[0] if len(self.names) == 1 else f"{self.names[0]}..{self.names[-1]}"

    def __call__(self, x: Tensor) -> Tensor:
        for m in self.modules:
            x = m(x)
        return x

    def layers(self) -> list[tuple[str, QuantLayer]]:
        out = []
        for n, m in zip(self.names, self.modules, strict=True):
            out += [(f"{n}.{k}" if k else n, q) for k, q in m.named_modules()
                    if isinstance(q, QuantLayer)]
        return out


def _has_quant(m: nn.Module) -> bool:
    return any(isinstance(q, QuantLayer) for q in m.modules())


def _partition(prefix: str, mod: nn.Module) -> list[tuple[list[str], list[nn.Module]]]:
    """Blocks of ``mod`` (named ``prefix``): a quantized layer alone, a Sequential cut before
    each child that holds quantized convs (trailing GDN / activations / pixel shuffles join the
    block before them), any other module holding quantized layers searched inside."""
    if isinstance(mod, QuantLayer):
        return [([prefix], [mod])]
    if isinstance(mod, nn.Sequential):
        out: list[tuple[list[str], list[nn.Module]]] = []
        for k, child in mod.named_children():
            name = f"{prefix}.{k}" if prefix else k
            if out and (isinstance(child, _TRAILING) or not _has_quant(child)):
                out[-1][0].append(name)
                out[-1][1].append(child)
            elif _has_quant(child):
                out.append(([name], [child]))
        return out
    out = []
    for k, child in mod.named_children():
        if _has_quant(child):
            out += _partition(f"{prefix}.{k}" if prefix else k, child)
    return out


def reconstruction_blocks(model: nn.Module) -> list[Block]:
    """The blocks of a quantized model, in the model's module order."""
    return [Block(n, m) for n, m in _partition("", model)]


class _Stop(Exception):
    """Ends a forward pass once the block being recorded has its input."""


class _Tap:
    """Records a block's inputs and outputs (one entry per call) during model forwards;
    ``stop`` ends each forward at the block's input (the rest of the model is not needed)."""

    def __init__(self, block: Block, grads: bool = False, stop: bool = False) -> None:
        self.inputs: list[Tensor] = []
        self.outputs: list[Tensor] = []
        self.grads: dict[int, Tensor] = {}
        self._handles = [
            block.modules[0].register_forward_pre_hook(self._pre),
            block.modules[-1].register_forward_hook(self._post),
        ]
        self._grads = grads
        self._stop = stop

    def _pre(self, _m: nn.Module, args: tuple) -> None:
        self.inputs.append(args[0].detach())
        if self._stop:
            raise _Stop

    def _post(self, _m: nn.Module, _args: tuple, out: Tensor) -> None:
        self.outputs.append(out.detach())
        if self._grads and out.requires_grad:
            i = len(self.outputs) - 1
            out.register_hook(lambda g, i=i: self.grads.__setitem__(i, g.detach()))

    def remove(self) -> None:
        for h in self._handles:
            h.remove()

    def error_weights(self) -> list[Tensor]:
        """Per-element weights of the block's output error: the squared RD-loss gradients
        recorded (BRECQ's diagonal Fisher), normalised to mean 1; all ones where the loss did
        not reach the block (or no gradient was recorded)."""
        grads = [self.grads.get(j) for j in range(len(self.outputs))]
        if not grads or any(g is None for g in grads):
            return [torch.ones_like(y) for y in self.outputs]
        mean_sq = sum(float((g**2).sum()) for g in grads) / sum(g.numel() for g in grads)
        return [g**2 / max(mean_sq, 1e-30) for g in grads]


def _call_order(model: nn.Module, blocks: list[Block], x: Tensor) -> list[Block]:
    """``blocks`` sorted by when a forward pass first calls them (data-flow order); blocks it
    never calls are dropped."""
    first: dict[int, int] = {}
    handles = []
    for i, b in enumerate(blocks):
        def hook(_m: nn.Module, _a: tuple, i: int = i) -> None:
            first.setdefault(i, len(first))
        handles.append(b.modules[0].register_forward_pre_hook(hook))
    with torch.no_grad():
        model.eval()(x)
    for h in handles:
        h.remove()
    return [blocks[i] for i in sorted(first, key=first.get)]


# -- the procedure -------------------------------------------------------------------------------
def capture(model: nn.Module, blocks: list[Block], batches: list[Tensor], *, train: bool,
             rd_loss: Callable | None = None, seed: int = 0, stop: bool = False) -> list[_Tap]:
    """Run ``model`` over ``batches`` recording ``blocks`` (named as in ``model``): their inputs
    and outputs; with ``rd_loss`` also the RD-loss gradient of their outputs (a noisy training
    forward seeded by ``seed``); ``stop`` (one block called once per forward) ends each forward
    at the block's input."""
    mods = dict(model.named_modules())
    taps = [_Tap(Block(b.names, [mods[n] for n in b.names]), grads=rd_loss is not None, stop=stop)
            for b in blocks]
    model.train(train)
    try:
        for x in batches:
            if rd_loss is None:
                with torch.no_grad():
                    try:
                        model(x)
                    except _Stop:
                        pass
                continue
            torch.manual_seed(seed)
            out = model(x.clone().requires_grad_(True))  # the model's own parameters are frozen
            rd_loss(out, x).backward()
            model.zero_grad(set_to_none=True)
    finally:
        for t in taps:
            t.remove()
        model.eval()
    return taps


def _group_by_shape(xs: list[Tensor], ys: list[Tensor], ws: list[Tensor]) -> list[tuple]:
    """The recorded calls as ``(x, y, w)`` groups, calls of the same shapes concatenated along
    the batch dim."""
    groups: dict[tuple, list[int]] = {}
    for i, x in enumerate(xs):
        groups.setdefault((tuple(x.shape[1:]), tuple(ys[i].shape[1:])), []).append(i)
    return [tuple(torch.cat([t[i] for i in ix]) for t in (xs, ys, ws)) for ix in groups.values()]


def _beta(it: int, cfg: ReconstructionConfig) -> float | None:
    start = int(cfg.warmup * cfg.iters)
    if it < start:
        return None
    t = (it - start) / max(1, cfg.iters - start)
    return cfg.beta[1] + (cfg.beta[0] - cfg.beta[1]) * (1 - t)  # linear from start to end


def _block_error(block: Block, data: list[tuple]) -> float:
    """Weighted squared error of ``block`` on ``data`` ((x, y, w) groups), summed / elements."""
    num = den = 0.0
    with torch.no_grad():
        for x, y, w in data:
            num += float((w * (block(x) - y) ** 2).sum())
            den += y.numel()
    return num / max(den, 1)


def _swap(layer: QuantLayer, attr: str, new: nn.Module | None) -> None:
    layer._modules[attr] = new


def reconstruct_block(block: Block, data: list[tuple[Tensor, Tensor, Tensor]],
                      cfg: ReconstructionConfig | None = None, gen: torch.Generator | None = None,
                      progress: bool = False) -> dict:
    """Learn the rounding of ``block``'s weights and its input steps, then make both hard.

    ``data`` holds ``(x, y, w)`` groups: quantized-model inputs, float-model target outputs and
    per-element error weights, batched along dim 0. Returns the block's weighted error before
    (round to nearest, calibrated steps) and after, and what was learned.
    """
    cfg = cfg or ReconstructionConfig()
    gen = gen if gen is not None else torch.Generator().manual_seed(cfg.seed)
    layers = block.layers()
    before = _block_error(block, data)  # round-to-nearest weights, calibrated steps
    ada: dict[str, AdaRoundWeight] = {}
    steps: dict[str, LearnedStep] = {}
    originals: list[tuple[QuantLayer, str, nn.Module]] = []
    for name, layer in layers:
        if not isinstance(layer, QGDN) and layer.weight_quant is not None:
            a = AdaRoundWeight(layer.weight_quant, layer.effective_weight(),
                               getattr(layer, "mask", None))
            originals.append((layer, "weight_quant", layer.weight_quant))
            _swap(layer, "weight_quant", a)
            ada[name] = a
        if cfg.act_lr > 0 and layer.input_quant is not None and _learnable_input(layer):
            s = LearnedStep(layer.input_quant)
            originals.append((layer, "input_quant", layer.input_quant))
            _swap(layer, "input_quant", s)
            steps[name] = s
    groups = [{"params": [a.V for a in ada.values()], "lr": cfg.lr}]
    if steps:
        groups.append({"params": [s.log_scale for s in steps.values()], "lr": cfg.act_lr})
    opt = torch.optim.Adam(groups)
    n_weights = max(1, sum(a.V.numel() for a in ada.values()))
    sizes = [x.shape[0] for x, _, _ in data]
    bar = tqdm(range(cfg.iters), desc=f"reconstruct {block.name}", unit="it", disable=not progress,
               leave=False)
    for it in bar:
        gi = int(torch.multinomial(torch.tensor(sizes, dtype=torch.float), 1, generator=gen))
        x, y, w = data[gi]
        idx = torch.randperm(x.shape[0], generator=gen)[: cfg.batch_size]
        rec = (w[idx] * (block(x[idx]) - y[idx]) ** 2).mean() / max(before, 1e-30)
        beta = _beta(it, cfg)
        reg = (cfg.reg_weight * sum(a.regulariser(beta) for a in ada.values()) / n_weights
               if beta is not None and ada else torch.zeros(()))
        loss = rec + reg
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if it % 20 == 0:
            bar.set_postfix(rec=f"{rec.item():.4f}", reg=f"{reg.item():.4f}")
    undecided = (sum(a.undecided() * a.V.numel() for a in ada.values()) / n_weights) if ada else 0.0
    # hard rounding: the float weight becomes its dequantized codes (same scales)
    with torch.no_grad():
        for name, layer in layers:
            if name in ada:
                layer.weight.copy_(ada[name].dequantized(hard=True))
            if name in steps:
                steps[name].commit()
    for layer, attr, orig in originals:
        _swap(layer, attr, orig)
    after = _block_error(block, data)
    return {"block": block.name, "layers": len(layers), "adaround_layers": len(ada),
            "learned_steps": len(steps), "error_before": before, "error_after": after,
            "undecided_at_end": undecided}


@torch.no_grad()
def _bias_correct(block: Block, fp_block: Block, data_fp: list[Tensor], data_q: list[Tensor]
                  ) -> list[str]:
    """Per-channel bias correction of the block's biased convs, one after the other: each
    conv's mean output error (the float block on float inputs vs the quantized block on
    quantized inputs) is added to its bias."""
    fp_layers = dict(_named_convs(fp_block))
    convs = [(n, m) for n, m in _named_convs(block) if m.bias is not None and n in fp_layers]
    if not convs:
        return []

    def channel_means(run: Block, mods: list[tuple[str, nn.Module]], data: list[Tensor]
                      ) -> dict[str, Tensor]:
        sums: dict[str, Tensor] = {}
        hooks = [m.register_forward_hook(
            lambda _m, _a, o, n=n: sums.__setitem__(n, sums.get(n, 0) + o.mean((2, 3)).sum(0)))
            for n, m in mods]
        try:
            for x in data:
                run(x)
        finally:
            for h in hooks:
                h.remove()
        images = sum(x.shape[0] for x in data)
        return {n: v / images for n, v in sums.items()}

    fp_means = channel_means(fp_block, [(n, fp_layers[n]) for n, _ in convs], data_fp)
    for name, conv in convs:
        q_means = channel_means(block, [(name, conv)], data_q)
        conv.bias.add_(fp_means[name] - q_means[name])
    return [n for n, _ in convs]


def _named_convs(block: Block) -> list[tuple[str, nn.Module]]:
    out = []
    for n, m in zip(block.names, block.modules, strict=True):
        out += [(f"{n}.{k}" if k else n, c) for k, c in m.named_modules()
                if isinstance(c, nn.Conv2d | nn.ConvTranspose2d)]
    return out


def _e2e(model: nn.Module, batches: list[Tensor], rd_loss: Callable, cfg: ReconstructionConfig,
         gen: torch.Generator, progress: bool) -> int:
    """All learnable activation steps together on the whole model's RD loss (training
    forward: CompressAI's noisy latents)."""
    steps: list[tuple[QuantLayer, LearnedStep]] = []
    for m in model.modules():
        if isinstance(m, QuantLayer) and m.input_quant is not None and _learnable_input(m):
            s = LearnedStep(m.input_quant)
            _swap(m, "input_quant", s)
            steps.append((m, s))
    if not steps:
        return 0
    opt = torch.optim.Adam([s.log_scale for _, s in steps], lr=cfg.e2e_lr)
    model.train()
    try:
        x_all = torch.cat(batches, 0)
        bar = tqdm(range(cfg.e2e_iters), desc="reconstruct end-to-end RD", unit="it",
                   disable=not progress, leave=False)
        for _ in bar:
            idx = torch.randperm(x_all.shape[0], generator=gen)[: cfg.batch_size]
            x = x_all[idx]
            loss = rd_loss(model(x), x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            bar.set_postfix(rd=f"{loss.item():.4f}")
    finally:
        model.eval()
        for layer, s in steps:
            s.commit()
            _swap(layer, "input_quant", s.fq)
    return len(steps)


@contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Inside the block no parameter of ``modules`` requires a gradient (reconstruction trains
    none of them); afterwards those that did, do again."""
    trainable = [p for m in modules for p in m.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in trainable:
            p.requires_grad_(True)


def _snapshot(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def reconstruct_(
    model: nn.Module, float_model: nn.Module, calib: list[Tensor], heldout: list[Tensor],
    lmbda: float, config: ReconstructionConfig | None = None, metric: str = "mse",
    progress: bool = True,
) -> ReconstructionReport:
    """Reconstruct a quantized, calibrated ``model`` towards ``float_model`` in place.

    Args:
        model: the quantized codec (``quantize_`` + calibration done).
        float_model: the float codec it was quantized from (left unchanged).
        calib: batches of calibration crops (training images, never the evaluation set).
        heldout: other training crops, for the keep-or-drop decisions of bias correction and the
            end-to-end stage.
        lmbda: the RD loss's λ (the model's quality).
        config: hyper-parameters (:class:`ReconstructionConfig`).
    Returns:
        A :class:`ReconstructionReport`.
    """
    cfg = config or ReconstructionConfig()
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(cfg.seed)
    criterion = RateDistortionLoss(lmbda, metric)

    def rd_loss(out: dict, x: Tensor) -> Tensor:
        return criterion(out, x)["loss"]

    def heldout_loss(m: nn.Module) -> float:
        return mean_rd_loss(m, heldout, criterion)

    report = ReconstructionReport()
    float_model.eval()
    report.heldout_rd_loss["float"] = heldout_loss(float_model)
    report.heldout_rd_loss["calibrated"] = heldout_loss(model)
    blocks = _call_order(model, reconstruction_blocks(model), calib[0][:1])
    calibrated = _snapshot(model) if cfg.fallback else None
    with frozen(model, float_model):
        final = _reconstruct_all(model, float_model, blocks, calib, rd_loss, heldout_loss, cfg,
                                 gen, report, progress)
    if calibrated is not None and final >= report.heldout_rd_loss["calibrated"]:
        model.load_state_dict(calibrated)
        report.kept = False
        if progress:
            tqdm.write(f"reconstruction kept out: held-out RD loss {final:.4g} ≥ calibrated "
                       f"{report.heldout_rd_loss['calibrated']:.4g}; the calibrated model stays")
    report.seconds = time.perf_counter() - t0
    return report


def _reconstruct_all(model: nn.Module, float_model: nn.Module, blocks: list[Block],
                     calib: list[Tensor], rd_loss: Callable, heldout_loss: Callable,
                     cfg: ReconstructionConfig, gen: torch.Generator,
                     report: ReconstructionReport, progress: bool) -> float:
    """Reconstruct ``blocks`` in order, then the optional stages; returns the held-out RD loss
    of the state it leaves."""
    fp_mods = dict(float_model.named_modules())
    missing = [n for b in blocks for n in b.names if n not in fp_mods]
    if missing:
        raise ValueError(f"the float model has no module {missing[0]!r}: pass the model that "
                         "was quantized")
    pre_bias: dict[str, Tensor] = {}
    # the float codec's block inputs/outputs and RD-loss gradients, every block in one pass
    fp_taps = capture(float_model, blocks, calib, train=False)
    g_taps = (capture(float_model, blocks, calib, train=True, rd_loss=rd_loss, seed=cfg.seed)
              if cfg.fisher else [None] * len(blocks))
    for i, (block, fp_tap, g_tap) in enumerate(zip(blocks, fp_taps, g_taps, strict=True)):
        weights = (g_tap.error_weights() if g_tap is not None
                   else [torch.ones_like(y) for y in fp_tap.outputs])
        g_taps[i] = None  # free the gradients
        # inputs from the quantized model as reconstructed so far (BRECQ's sequential order)
        (q_tap,) = capture(model, [block], calib, train=False,
                            stop=len(fp_tap.inputs) == len(calib))
        if len(q_tap.inputs) != len(fp_tap.outputs):
            raise RuntimeError(f"block {block.name}: {len(q_tap.inputs)} quantized calls, "
                               f"{len(fp_tap.outputs)} float calls")
        data = _group_by_shape(q_tap.inputs, fp_tap.outputs, weights)
        if progress:
            tqdm.write(f"[{i + 1}/{len(blocks)}] {block.name}", end="")
        info = reconstruct_block(block, data, cfg, gen, progress)
        if cfg.bias_correction:
            for n, layer in block.layers():
                if getattr(layer, "bias", None) is not None:
                    pre_bias[n] = layer.bias.detach().clone()
            fp_block = Block(block.names, [fp_mods[n] for n in block.names])
            info["bias_corrected"] = _bias_correct(block, fp_block, fp_tap.inputs, q_tap.inputs)
            info["error_after_bias_correction"] = _block_error(block, data)
        report.blocks.append(info)
        if progress:
            tqdm.write(f": error {info['error_before']:.4g} → {info['error_after']:.4g}")
    report.heldout_rd_loss["reconstructed"] = heldout_loss(model)
    if cfg.bias_correction and pre_bias:
        with_bc = report.heldout_rd_loss["reconstructed"]
        mods = dict(model.named_modules())
        corrected = {n: mods[n].bias.detach().clone() for n in pre_bias}
        with torch.no_grad():
            for n, b in pre_bias.items():
                mods[n].bias.copy_(b)
        without = heldout_loss(model)
        report.heldout_rd_loss["without_bias_correction"] = without
        report.bias_correction_kept = with_bc < without
        if report.bias_correction_kept:
            with torch.no_grad():
                for n, b in corrected.items():
                    mods[n].bias.copy_(b)
    best = min(report.heldout_rd_loss["reconstructed"],
               report.heldout_rd_loss.get("without_bias_correction", math.inf))
    if cfg.e2e_iters:
        snap = _snapshot(model)
        if _e2e(model, calib, rd_loss, cfg, gen, progress):
            e2e = heldout_loss(model)
            report.heldout_rd_loss["end_to_end"] = e2e
            report.e2e_kept = e2e < best
            if report.e2e_kept:
                best = e2e
            else:
                model.load_state_dict(snap)
    return best


def block_errors(model: nn.Module, float_model: nn.Module, batches: list[Tensor]
                 ) -> dict[str, float]:
    """Each block's mean squared error on ``batches``: the quantized block on the quantized
    model's inputs against the float block on the float model's (what reconstruction lowers,
    unweighted)."""
    blocks = _call_order(model, reconstruction_blocks(model), batches[0][:1])
    fp_taps = capture(float_model, blocks, batches, train=False)
    q_taps = capture(model, blocks, batches, train=False)
    return {b.name: sum(float(((q - f) ** 2).sum()) for q, f in zip(qt.outputs, ft.outputs,
                                                                   strict=True))
            / sum(f.numel() for f in ft.outputs)
            for b, qt, ft in zip(blocks, q_taps, fp_taps, strict=True)}


def weights_on_grid(model: nn.Module) -> bool:
    """Whether every quantized (non-GDN) weight of ``model`` already lies on its quantization
    grid (what reconstruction leaves: no rounding decision remains)."""
    for m in model.modules():
        if isinstance(m, QuantLayer) and not isinstance(m, QGDN):
            fq = m.weight_quant
            w = m.effective_weight()
            q = quantize_int(w, fq.scale, fq.zero_point, fq.qmin, fq.qmax, fq.axis)
            deq = dequantize(q, fq.scale, fq.zero_point, fq.axis)
            if not torch.allclose(w, deq, rtol=0, atol=1e-6 * float(fq.scale.max())):
                return False
    return True
