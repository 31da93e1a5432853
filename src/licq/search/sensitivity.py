"""FMPQ layer sensitivity: ζ_n(b) = (RD_q,n(b) − RD_FP) / RD_FP.

For every quantizable layer n and candidate weight bit-width b, only layer n is quantized (weights
at b bits, its input at ``a_bits``), and the RD loss ``R + λ·255²·MSE`` (bits estimated from the
likelihoods, as in training) is measured on seeded training crops, never on the evaluation set
(FMPQ, arXiv 2506.01221, sec. 3).

Work is reused: the float forward pass is computed once per calibration batch and cached stage by
stage; for the hyperprior family (``bmshj2018-hyperprior``, ``mbt2018-mean``) and the joint
autoregressive one (``mbt2018``, ``cheng2020-anchor``, ``cheng2020-attn``) a layer's trial reruns only
its own stage, from that layer's top-level block on, and what depends on it (a g_s layer reruns g_s
from its block on and keeps the rate; an h_a, h_s, context or entropy-parameter layer reruns the
rate only, since the eval-mode ŷ = round(y) of the autoregressive models does not depend on them).
Other architectures rerun the whole forward pass with the one layer swapped.

``ptq="rdo"`` measures what a reconstructed model loses instead of what rounding loses: each
trial layer (quantized alone, so its input is the float model's) first learns its weights'
rounding and its input step on the calibration crops (:func:`licq.ptq.reconstruct.
reconstruct_block`: the float layer's output as target, weighted by the RD loss's gradient there).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from compressai.models import (
    JointAutoregressiveHierarchicalPriors,
    MeanScaleHyperprior,
    ScaleHyperprior,
)
from torch import Tensor
from tqdm.auto import tqdm

from licq._provenance import provenance
from licq.api import LayerQConfig, QuantConfig, quantizable_layer_names, quantize_, quantized_layers
from licq.data import CropSampler
from licq.ptq.calibrate import CALIBRATION_REVISION, calibrate
from licq.qat.loss import RateDistortionLoss
from licq.quant.modules import quantized_type_for


@dataclass(frozen=True)
class SensitivitySettings:
    bits: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8)
    a_bits: int | None = 8
    lmbda: float = 0.0067
    calib_dir: str = ""
    num_crops: int = 16
    patch_size: int = 256
    batch_size: int = 8
    seed: int = 0
    observer: str = "minmax"
    a_observer: str = "mse"
    # "range": each trial layer rounds to nearest; "rdo": it is reconstructed first
    ptq: str = "range"
    rdo_iters: int = 100  # reconstruction steps per trial (ptq="rdo")

    def __post_init__(self) -> None:
        if self.ptq not in ("range", "rdo"):
            raise ValueError(f"ptq must be 'range' or 'rdo', got {self.ptq!r}")
        if self.rdo_iters < 1:
            raise ValueError(f"rdo_iters must be ≥ 1, got {self.rdo_iters}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SensitivitySettings:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**{**known, "bits": tuple(known.get("bits", cls.bits))})

    def layer_config(self, bits: int) -> LayerQConfig:
        return LayerQConfig(bits, self.a_bits, observer=self.observer, a_observer=self.a_observer)


@dataclass
class SensitivityResult:
    """ζ table and what produced it (JSON-serialisable)."""

    layers: list[str]
    bits: list[int]
    zeta: dict[str, dict[str, float]]  # layer -> str(bits) -> ζ
    rd_fp: float
    settings: dict[str, Any]
    model_hash: str
    seconds: float
    evaluations: int
    path: str = "generic"
    rd: dict[str, dict[str, float]] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)  # command, commit, date, machine

    def to_json(self, path: str | os.PathLike) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> SensitivityResult:
        try:
            return cls(**json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError, TypeError) as e:
            raise ValueError(f"{path}: not a licq sensitivity file ({e})") from None

    def table(self) -> dict[str, dict[int, float]]:
        return {n: {int(b): v for b, v in d.items()} for n, d in self.zeta.items()}


def model_hash(model: nn.Module) -> str:
    """sha256 over the state dict (names, shapes, bytes): identifies the weights."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(str(tuple(v.shape)).encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def cache_key(mhash: str, settings: SensitivitySettings) -> str:
    """Key of a cached ζ table: the weights, the settings and the calibration code's revision
    (a fix that changes calibration makes earlier tables stale)."""
    blob = json.dumps({"model": mhash, "calibration_revision": CALIBRATION_REVISION,
                       **asdict(settings)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


# -- staged forward for the hyperprior family ----------------------------------------------------
def _run_seq(seq: nn.Sequential, x: Tensor, start: int = 0, record: list | None = None) -> Tensor:
    for i in range(start, len(seq)):
        if record is not None:
            record.append(x)
        x = seq[i](x)
    return x


class _HyperpriorStages:
    """Cached float forward of ScaleHyperprior / MeanScaleHyperprior in eval mode."""

    def __init__(self, model: nn.Module, x: Tensor) -> None:
        self.m = model
        self.mean = isinstance(model, MeanScaleHyperprior)
        self.ga: list[Tensor] = []
        self.ha: list[Tensor] = []
        self.hs: list[Tensor] = []
        self.gs: list[Tensor] = []
        self.y = _run_seq(model.g_a, x, record=self.ga)
        self.z_lik, self.y_lik, self.y_hat = self._from_y(self.y, record=True)
        self.x_hat = _run_seq(model.g_s, self.y_hat, record=self.gs)

    def _hyper_in(self, y: Tensor) -> Tensor:
        return y if self.mean else torch.abs(y)

    def _y_path(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        if self.mean:
            scales, means = params.chunk(2, 1)
            y_hat, y_lik = self.m.gaussian_conditional(y, scales, means=means)
        else:
            y_hat, y_lik = self.m.gaussian_conditional(y, params)
        return y_hat, y_lik

    def _from_y(self, y: Tensor, record: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        z = _run_seq(self.m.h_a, self._hyper_in(y), record=self.ha if record else None)
        z_hat, z_lik = self.m.entropy_bottleneck(z)
        params = _run_seq(self.m.h_s, z_hat, record=self.hs if record else None)
        y_hat, y_lik = self._y_path(y, params)
        return z_lik, y_lik, y_hat

    def output_with(self, group: str, idx: int) -> dict:
        """Model output when layer ``group[idx]`` (already swapped in) changes."""
        m = self.m
        if group == "g_a":
            y = _run_seq(m.g_a, self.ga[idx], idx)
            z_lik, y_lik, y_hat = self._from_y(y)
            x_hat = m.g_s(y_hat)
        elif group == "g_s":
            z_lik, y_lik = self.z_lik, self.y_lik
            x_hat = _run_seq(m.g_s, self.gs[idx], idx)
        else:
            if group == "h_a":
                z = _run_seq(m.h_a, self.ha[idx], idx)
                z_hat, z_lik = m.entropy_bottleneck(z)
                params = m.h_s(z_hat)
            else:
                z_lik = self.z_lik
                params = _run_seq(m.h_s, self.hs[idx], idx)
            y_hat, y_lik = self._y_path(self.y, params)
            # without means ŷ = round(y) does not depend on the hyperprior: reuse x̂
            x_hat = m.g_s(y_hat) if self.mean else self.x_hat
        return {"x_hat": x_hat, "likelihoods": {"y": y_lik, "z": z_lik}}


class _JointARStages:
    """Cached float forward of the joint autoregressive models in eval mode
    (``JointAutoregressiveHierarchicalPriors.forward``: mbt2018, cheng2020-anchor/attn).

    Eval mode quantizes ŷ = round(y) without the predicted means, so ŷ, the context features
    and x̂ depend on g_a alone; h_a, h_s, the context model and the entropy-parameter network
    change only the rate of y (and h_a that of z)."""

    def __init__(self, model: nn.Module, x: Tensor) -> None:
        self.m = model
        self.rec: dict[str, list[Tensor]] = {g: [] for g in ("g_a", "h_a", "h_s", "g_s",
                                                             "entropy_parameters")}
        self.y = _run_seq(model.g_a, x, record=self.rec["g_a"])
        self.z_lik, self.params = self._hyper(self.y, record=True)
        self.y_hat = model.gaussian_conditional.quantize(self.y, "dequantize")
        self.ctx = model.context_prediction(self.y_hat)
        self.y_lik = self._rate(torch.cat((self.params, self.ctx), 1), record=True)
        self.x_hat = _run_seq(model.g_s, self.y_hat, record=self.rec["g_s"])

    def _hyper(self, inp: Tensor, idx: int = 0, record: bool = False) -> tuple[Tensor, Tensor]:
        """z's likelihoods and h_s's output, running h_a from block ``idx`` (input ``inp``)."""
        m = self.m
        z = _run_seq(m.h_a, inp, idx, record=self.rec["h_a"] if record else None)
        z_hat, z_lik = m.entropy_bottleneck(z)
        return z_lik, _run_seq(m.h_s, z_hat, record=self.rec["h_s"] if record else None)

    def _rate(self, inp: Tensor, idx: int = 0, y: Tensor | None = None,
              record: bool = False) -> Tensor:
        """y's likelihoods, running the entropy-parameter network from block ``idx``."""
        m = self.m
        gp = _run_seq(m.entropy_parameters, inp, idx,
                      record=self.rec["entropy_parameters"] if record else None)
        scales, means = gp.chunk(2, 1)
        return m.gaussian_conditional(self.y if y is None else y, scales, means=means)[1]

    def output_with(self, group: str, idx: int | None) -> dict:
        """Model output when a layer in block ``group[idx]`` (already swapped in) changes;
        ``idx`` is None for the context model (one layer)."""
        m, rec = self.m, self.rec
        z_lik, x_hat = self.z_lik, self.x_hat
        if group == "g_a":  # everything after the block changes
            y = _run_seq(m.g_a, rec["g_a"][idx], idx)
            z_lik, params = self._hyper(y)
            y_hat = m.gaussian_conditional.quantize(y, "dequantize")
            y_lik = self._rate(torch.cat((params, m.context_prediction(y_hat)), 1), y=y)
            x_hat = m.g_s(y_hat)
        elif group == "g_s":
            x_hat = _run_seq(m.g_s, rec["g_s"][idx], idx)
            y_lik = self.y_lik
        elif group == "h_a":
            z_lik, params = self._hyper(rec["h_a"][idx], idx)
            y_lik = self._rate(torch.cat((params, self.ctx), 1))
        elif group == "h_s":
            params = _run_seq(m.h_s, rec["h_s"][idx], idx)
            y_lik = self._rate(torch.cat((params, self.ctx), 1))
        elif group == "context_prediction":
            y_lik = self._rate(torch.cat((self.params, m.context_prediction(self.y_hat)), 1))
        elif group == "entropy_parameters":
            y_lik = self._rate(rec["entropy_parameters"][idx], idx)
        else:
            raise ValueError(f"no stage {group!r} in {type(m).__name__}")
        return {"x_hat": x_hat, "likelihoods": {"y": y_lik, "z": z_lik}}


def _stages_for(model: nn.Module, x: Tensor) -> _HyperpriorStages | _JointARStages:
    if type(model) in (ScaleHyperprior, MeanScaleHyperprior):
        return _HyperpriorStages(model, x)
    return _JointARStages(model, x)


def _staged(model: nn.Module) -> bool:
    if type(model) in (ScaleHyperprior, MeanScaleHyperprior):
        return True
    # the joint autoregressive family, as long as it keeps that class's forward pass
    return (isinstance(model, JointAutoregressiveHierarchicalPriors)
            and type(model).forward is JointAutoregressiveHierarchicalPriors.forward)


def _stage_of(name: str) -> tuple[str, int | None]:
    """``g_a.0.conv1`` -> (``g_a``, 0): the top-level stage and block a layer reruns from."""
    parts = name.split(".")
    return parts[0], int(parts[1]) if len(parts) > 1 else None


def _reconstruct_trials(model: nn.Module, trials: dict[tuple[str, int], nn.Module],
                        batches: list[Tensor], crit: RateDistortionLoss,
                        settings: SensitivitySettings, progress: bool) -> None:
    """Reconstruct every trial layer alone towards its float layer (``settings.ptq == "rdo"``),
    on the float model's inputs of that layer and the RD-gradient weights of its output."""
    from licq.ptq.reconstruct import (
        Block,
        ReconstructionConfig,
        capture,
        frozen,
        reconstruct_block,
    )

    names = sorted({n for n, _ in trials})
    modules = dict(model.named_modules())
    blocks = [Block([n], [modules[n]]) for n in names]
    with frozen(model):
        taps = capture(model, blocks, batches, train=False)
        grads = capture(model, blocks, batches, train=True,
                        rd_loss=lambda out, x: crit(out, x)["loss"], seed=settings.seed)
    cfg = ReconstructionConfig(iters=settings.rdo_iters, seed=settings.seed, e2e_iters=0)
    bar = tqdm(total=len(trials), desc="sensitivity: reconstruct", unit="trial",
               disable=not progress, dynamic_ncols=True)
    for n, tap, gtap in zip(names, taps, grads, strict=True):
        data = [(x, y, w) for x, y, w in zip(tap.inputs, tap.outputs, gtap.error_weights(),
                                             strict=True)]
        for b in settings.bits:
            reconstruct_block(Block([n], [trials[(n, b)]]), data, cfg,
                              torch.Generator().manual_seed(settings.seed))
            bar.update(1)
    bar.close()


# -- main entry ----------------------------------------------------------------------------------
@torch.no_grad()
def compute_sensitivity(
    model: nn.Module,
    settings: SensitivitySettings,
    *,
    layers: Sequence[str] | None = None,
    progress: bool = True,
) -> SensitivityResult:
    """ζ_n(b) for every layer n (default: all quantizable) and bit-width in ``settings.bits``.

    Data-parallel under ``torchrun``: when ``torch.distributed`` is initialised, every rank
    calibrates the input ranges on all batches (cheap, and identical on every rank), evaluates the
    trials on its own share of the batches (``batches[rank::world]``), and the RD sums are
    all-reduced, so every rank returns the single-process result.
    """
    dist = torch.distributed
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    t0 = time.perf_counter()
    model = copy.deepcopy(model).eval()
    names = list(layers) if layers is not None else quantizable_layer_names(model)
    modules = dict(model.named_modules())
    crit = RateDistortionLoss(settings.lmbda)
    batches = CropSampler(settings.calib_dir, patch_size=settings.patch_size, seed=settings.seed,
                          flip=False).batches(settings.num_crops, settings.batch_size)

    # Input ranges: each layer's input quantizer sees the float prefix, so one calibration of a
    # copy with every layer observing (weights at 16 bit, i.e. float) serves all trials.
    act_ranges: dict[str, tuple[Tensor, Tensor, bool]] = {}
    if settings.a_bits is not None:
        probe = copy.deepcopy(model)
        quantize_(probe, QuantConfig(default=None, layers={n: LayerQConfig(
            16, settings.a_bits, a_observer=settings.a_observer) for n in names}))
        with calibrate(probe):
            for x in batches:
                probe(x)
        for n, q in quantized_layers(probe).items():
            act_ranges[n] = (q.input_quant.scale.clone(), q.input_quant.zero_point.clone(),
                             q.input_quant.integer_step)
        del probe

    trials: dict[tuple[str, int], nn.Module] = {}
    for n in names:
        qtype = quantized_type_for(modules[n])
        if qtype is None:
            raise ValueError(f"layer {n!r} ({type(modules[n]).__name__}) has no quantized version")
        for b in settings.bits:
            q = qtype.from_float(modules[n], settings.layer_config(b))
            if settings.a_bits is not None:
                q.input_quant.scale.copy_(act_ranges[n][0])
                q.input_quant.zero_point.copy_(act_ranges[n][1])
                q.input_quant.calibrated.fill_(True)
                q.input_quant.integer_step = act_ranges[n][2]  # a decoded latent's grid
            trials[(n, b)] = q.eval()
    if settings.ptq == "rdo":
        with torch.enable_grad():
            _reconstruct_trials(model, trials, batches, crit, settings, progress and rank == 0)

    staged = _staged(model)
    rd_fp = 0.0
    rd_sum = {key: 0.0 for key in trials}
    total = sum(x.shape[0] for x in batches)
    mine = batches[rank::world]
    bar = tqdm(total=len(mine) * len(trials), desc="sensitivity", unit="trial",
               disable=not progress or rank != 0, dynamic_ncols=True)
    for x in mine:
        w = x.shape[0]
        if staged:
            stages = _stages_for(model, x)
            ref = {"x_hat": stages.x_hat, "likelihoods": {"y": stages.y_lik, "z": stages.z_lik}}
        else:
            ref = model(x)
        rd_fp += crit(ref, x)["loss"].item() * w
        for (n, b), qmod in trials.items():
            parent_name, _, child = n.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            original = getattr(parent, child)
            setattr(parent, child, qmod)
            try:
                if staged:
                    out = stages.output_with(*_stage_of(n))
                else:
                    out = model(x)
            finally:
                setattr(parent, child, original)
            rd_sum[(n, b)] += crit(out, x)["loss"].item() * w
            bar.update(1)
    bar.close()
    if distributed:
        keys = list(rd_sum)
        sums = torch.tensor([rd_fp] + [rd_sum[k] for k in keys], dtype=torch.float64)
        dist.all_reduce(sums)
        rd_fp = float(sums[0])
        rd_sum = {k: float(v) for k, v in zip(keys, sums[1:].tolist(), strict=True)}
    rd_fp /= total
    zeta: dict[str, dict[str, float]] = {n: {} for n in names}
    rd: dict[str, dict[str, float]] = {n: {} for n in names}
    for (n, b), s in rd_sum.items():
        rd[n][str(b)] = s / total
        zeta[n][str(b)] = (s / total - rd_fp) / rd_fp
    return SensitivityResult(
        layers=names, bits=list(settings.bits), zeta=zeta, rd_fp=rd_fp,
        settings={**asdict(settings), "calibration_revision": CALIBRATION_REVISION},
        model_hash=model_hash(model), seconds=time.perf_counter() - t0,
        evaluations=len(trials), path="staged" if staged else "generic", rd=rd,
        provenance=provenance(),
    )
