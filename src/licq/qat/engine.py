"""Quantization-aware training of a codec on its RD loss (``licq qat``).

    model = load_model("bmshj2018-hyperprior", checkpoint=...)
    run = qat_quantize(model, QuantConfig.uniform(4), QATSettings(spec=PRESETS["fmpq"].spec),
                       TrainConfig(lmbda=0.0067, steps=2000), train_dir="../shared/data/train",
                       out_dir="runs/qat/q3")

Pipeline: quantize (``quantize_``) → calibrate activations on training crops → switch the
quantizers to QAT (:mod:`licq.qat.quantizers`) → train weights and quantization parameters
together with the ``licq train`` loop (:class:`~licq.qat.loop.Trainer`: aux loss, atomic
checkpoints, exact resume, DDP) → write the learned parameters back (``freeze_qat``) →
``update(force=True)``. The result codes real bitstreams like a PTQ model.
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from licq.api import LayerQConfig, QuantConfig, quantize_, quantizes_activations
from licq.data import CropSampler
from licq.errors import CheckpointError
from licq.models.loading import resize_entropy_tables
from licq.ptq.calibrate import calibrate_on_folder
from licq.ptq.equalize import equalize_for_config
from licq.ptq.pipeline import reconstruction_crops
from licq.ptq.reconstruct import ReconstructionConfig, reconstruct_
from licq.qat.loop import TrainConfig, Trainer
from licq.qat.quantizers import QATSpec, freeze_qat, prepare_qat
from licq.quant.fake_quant import FakeQuantize
from licq.quant.size import SizeReport, model_size

#: what QAT starts from (QATSettings.init)
INITS = ("range", "rdo-ptq")


@dataclass(frozen=True)
class QATSettings:
    """What QAT does besides the training loop.

    Attributes:
        spec: rounding / clipping gradients and which quantization parameters learn.
        scale_lr: Adam learning rate of the (log-)scales; ``zero_point_lr`` of the zero points.
        pin_8bit_groups: adapter groups forced to W8A8 (e.g. the hyper-transforms).
        pin_8bit_first_layers: the first layer of g_a and of g_s at W8A8 (DynaQuant's setting).
        calib_crops / calib_size / calib_seed: activation calibration before training.
        equalize: rescale the float model's channels first (an α, or ``"auto"``: chosen by the
            RD loss on held-out training crops; :mod:`licq.ptq.equalize`), on the calibration
            crops.
        init: the quantized model training starts from: ``"range"`` (calibrated ranges, round
            to nearest) or ``"rdo-ptq"`` (then reconstructed: :mod:`licq.ptq.reconstruct`,
            on the calibration crops, with ``reconstruction``'s hyper-parameters).
    """

    spec: QATSpec = field(default_factory=QATSpec)
    # chosen on held-out training crops (benchmarks/results/qat-probe-*-diag2.json): log-scale
    # lr 1e-3 made 200 QAT steps worse than PTQ, 1e-4 improved on it
    scale_lr: float = 1e-4
    zero_point_lr: float = 1e-3
    pin_8bit_groups: tuple[str, ...] = ()
    pin_8bit_first_layers: bool = False
    calib_crops: int = 32
    calib_size: int = 256
    calib_seed: int = 0
    # activation-range equalization before quantizing (licq.ptq.equalize): an α, "auto", or None
    equalize: float | str | None = None
    init: str = "range"
    reconstruction: ReconstructionConfig = field(default_factory=ReconstructionConfig)
    # DynaQuant DBWS (licq.dynamic): per-image bit-widths from these candidates, loss + γ·L_bits
    dynamic_candidates: tuple[int, ...] | None = None
    bits_weight: float = 0.01  # γ
    tau0: float = 5.0  # Gumbel-softmax temperature, annealed exponentially to tau_min
    tau_min: float = 0.5
    selector_lr: float = 1e-3
    # 16 hidden units: the selectors' weights are read for every image; at 64 the two would hold
    # about a quarter as many weights as the ScaleHyperprior's transforms
    selector_hidden: int = 16
    selector_bits: int | None = 8  # selector weights after training (None: float)

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if self.init == "rdo-ptq" and self.dynamic_candidates is not None:
            raise ValueError("init 'rdo-ptq' reconstructs one static model: not with dynamic "
                             "(per-image) bit-widths")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["pin_8bit_groups"] = list(self.pin_8bit_groups)
        d["reconstruction"] = self.reconstruction.as_dict()
        if self.dynamic_candidates is not None:
            d["dynamic_candidates"] = list(self.dynamic_candidates)
        return d


@dataclass(frozen=True)
class Preset:
    description: str
    settings: QATSettings
    loss: str = "rd"


PRESETS: dict[str, Preset] = {
    "fmpq": Preset(
        "FMPQ: RD loss, leaky clip (slope 0.01), STE rounding, LSQ-style learnable scales; use "
        "with an FMPQ allocation (--bit-config from `licq search`)",
        QATSettings(spec=QATSpec(rounding="ste", clip="leaky", params="lsq")),
    ),
    "dynaquant-q": Preset(
        "DynaQuant static (Q-): DPA (learnable per-channel scale and zero point, weights and "
        "activations) + DGM rounding gradient; fixed bit config with h_a, h_s and the first "
        "layer of g_a and g_s at 8 bit",
        QATSettings(spec=QATSpec(rounding="dgm", clip="hard", params="dpa"),
                    pin_8bit_groups=("h_a", "h_s"), pin_8bit_first_layers=True),
    ),
    "dynaquant": Preset(
        "DynaQuant dynamic (DQ-): DPA + DGM, W8A8 base with h_a, h_s and each side's first "
        "module static at 8 bit; every other g_a/g_s conv picks its bits per image from "
        "{4, 6, 8} (Gumbel-softmax selector, loss R + λ·D + γ·L_bits)",
        QATSettings(spec=QATSpec(rounding="dgm", clip="hard", params="dpa"),
                    pin_8bit_groups=("h_a", "h_s"), pin_8bit_first_layers=True,
                    dynamic_candidates=(4, 6, 8)),
    ),
}


def pin_8bit(model: nn.Module, adapter, config: QuantConfig, settings: QATSettings) -> QuantConfig:
    """``config`` with the layers ``settings`` pins set to W8A8 (their other options kept)."""
    if not settings.pin_8bit_groups and not settings.pin_8bit_first_layers:
        return config
    layers = adapter.quantizable_layers(model)
    resolved = config.resolve(list(layers))
    pinned = {n for n, g in layers.items() if g in settings.pin_8bit_groups}
    if settings.pin_8bit_first_layers:
        for side in ("g_a", "g_s"):
            first = next((n for n, g in layers.items() if g == side), None)
            if first is not None:
                pinned.add(first)
    per_layer: dict[str, LayerQConfig | None] = {}
    for n, c in resolved.items():
        if n in pinned:
            base = c if c is not None else LayerQConfig()
            c = replace(base, w_bits=8, a_bits=8 if base.a_bits is not None else None)
        per_layer[n] = c
    return QuantConfig(default=None, layers=per_layer, gdn_bits=config.gdn_bits)


@dataclass
class QATRun:
    model: nn.Module
    config: QuantConfig
    size: SizeReport
    steps: int
    train_seconds: float
    calibration_seconds: float
    last: dict[str, float]
    out_dir: Path
    #: the command, commit, date and machine that trained it (``meta["provenance"]``), if given
    provenance: dict | None = None
    #: what activation-range equalization did before quantizing (``None``: not asked)
    equalization: dict | None = None


FINAL = "model.pth.tar"
SUMMARY = "qat.json"


def qat_quantize(
    model: nn.Module,
    config: QuantConfig,
    settings: QATSettings,
    train: TrainConfig,
    *,
    train_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    calib_dir: str | os.PathLike | None = None,
    adapter=None,
    resume: bool = False,
    device: str = "cpu",
    progress: bool = True,
    log=None,
    meta: dict[str, Any] | None = None,
) -> QATRun:
    """Quantize ``model`` in place with ``config`` and fine-tune it on the RD loss.

    ``resume`` continues from ``out_dir/checkpoint.pth.tar`` (exactly: the quantizer parameters,
    both optimizers and every RNG are in it). Writes ``out_dir/model.pth.tar`` (the quantized
    codec's state dict after ``update(force=True)``) and ``out_dir/qat.json``.
    """
    out_dir = Path(out_dir)
    if adapter is not None:
        config = pin_8bit(model, adapter, config, settings)
    size = model_size(model, config)
    equalization = None
    if settings.equalize is not None:  # (a resumed run's checkpoint then overwrites the weights)
        equalization = equalize_for_config(
            model, config, settings.equalize, calib_dir or train_dir, lmbda=train.lmbda,
            metric=train.metric, num_crops=settings.calib_crops,
            patch_size=settings.calib_size, seed=settings.calib_seed)
    float_model = copy.deepcopy(model) if settings.init == "rdo-ptq" else None
    resolved = quantize_(model, config)
    extra_loss = on_step = None
    selector_params: list[nn.Parameter] = []
    if settings.dynamic_candidates is not None:
        from licq.dynamic import bits_loss, make_dynamic, set_temperature, temperature

        sides = make_dynamic(model, settings.dynamic_candidates, settings.selector_hidden)
        selector_params = [p for s in sides.values() for p in s.selector.parameters()]
        gamma = settings.bits_weight
        total = train.steps or 0

        def extra_loss(m: nn.Module) -> torch.Tensor:
            return gamma * bits_loss(m)

        def on_step(step: int) -> None:
            set_temperature(model, temperature(step, total, settings.tau0, settings.tau_min))
    calib_seconds = 0.0
    if quantizes_activations(resolved):
        stats = calibrate_on_folder(model, calib_dir or train_dir, num_crops=settings.calib_crops,
                                    patch_size=settings.calib_size, seed=settings.calib_seed,
                                    progress=progress)
        calib_seconds = stats.seconds
    reconstruction = None
    if float_model is not None and not resume:  # (a resumed run's checkpoint holds the result)
        calib, heldout = reconstruction_crops(calib_dir or train_dir, settings.calib_crops, 8,
                                              settings.calib_size, settings.calib_seed)
        reconstruction = reconstruct_(model, float_model, calib, heldout, train.lmbda,
                                      settings.reconstruction, metric=train.metric,
                                      progress=progress).as_dict()
        del float_model
    qparams = prepare_qat(model, settings.spec)
    groups = [{"params": qparams["scale"], "lr": settings.scale_lr},
              {"params": qparams["zero_point"], "lr": settings.zero_point_lr},
              {"params": selector_params, "lr": settings.selector_lr}]
    sampler = CropSampler(train_dir, patch_size=train.patch_size, seed=train.seed)
    meta = {"bit_config": config.to_dict(), "qat": settings.as_dict(), **(meta or {})}
    if equalization is not None:
        meta["equalization"] = equalization
    if reconstruction is not None:
        meta["reconstruction"] = reconstruction
    trainer = Trainer(model, sampler, train, out_dir, meta=meta, extra_param_groups=groups,
                      device=device, extra_loss=extra_loss, on_step=on_step)
    ckpt = out_dir / Trainer.CHECKPOINT
    if resume:
        if not ckpt.is_file():
            raise CheckpointError(f"nothing to resume: {ckpt} does not exist")
        trainer.load_checkpoint(ckpt)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = trainer.fit(log=log, progress=progress)
    freeze_qat(model)
    if settings.dynamic_candidates is not None and settings.selector_bits is not None:
        from licq.dynamic import quantize_selectors

        quantize_selectors(model, settings.selector_bits)
    model.eval().cpu()
    model.update(force=True)
    if trainer.rank == 0:
        torch.save(model.state_dict(), out_dir / FINAL)
        summary = {"steps": state.step, "train_seconds": state.elapsed,
                   "calibration_seconds": calib_seconds, "last": state.last,
                   "train_config": asdict(train), "size": size.as_dict(), **meta,
                   "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        (out_dir / SUMMARY).write_text(json.dumps(summary, indent=1, default=str) + "\n")
    return QATRun(model, config, size, state.step, state.elapsed, calib_seconds, state.last,
                  out_dir, meta.get("provenance"), equalization)


def train_or_load(
    model: nn.Module,
    config: QuantConfig,
    settings: QATSettings,
    train: TrainConfig,
    *,
    out_dir: str | os.PathLike,
    retrain: bool = False,
    write_log: bool = True,
    **kw: Any,
) -> QATRun:
    """One model of a QAT run kept in ``out_dir``: a finished run is loaded (unless ``retrain``),
    an interrupted one resumes from its checkpoint, otherwise :func:`qat_quantize` trains it
    (``kw``: its keyword arguments). With ``write_log`` the training log lines are appended to
    ``out_dir/train.log`` (rank 0 of a data-parallel run)."""
    out_dir = Path(out_dir)
    if (out_dir / FINAL).is_file() and not retrain:
        return load_qat_result(model, out_dir)
    resume = (out_dir / Trainer.CHECKPOINT).is_file() and not retrain
    if not write_log:
        return qat_quantize(model, config, settings, train, out_dir=out_dir, resume=resume, **kw)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "train.log", "a") as log_file:

        def log(line: str) -> None:
            log_file.write(line + "\n")
            log_file.flush()

        return qat_quantize(model, config, settings, train, out_dir=out_dir, resume=resume,
                            log=log, **kw)


def load_qat_result(model: nn.Module, out_dir: str | os.PathLike) -> QATRun:
    """Rebuild a finished QAT run's quantized codec from ``out_dir`` (its float model given)."""
    out_dir = Path(out_dir)
    summary = json.loads((out_dir / SUMMARY).read_text())
    config = QuantConfig.from_dict(summary["bit_config"])
    size = model_size(model, config)
    quantize_(model, config)
    candidates = summary.get("qat", {}).get("dynamic_candidates")
    if candidates:
        from licq.dynamic import make_dynamic

        make_dynamic(model, candidates, summary["qat"].get("selector_hidden", 64))
        if summary["qat"].get("selector_bits"):  # absent or 0: float selectors
            from licq.dynamic import quantize_selectors

            quantize_selectors(model, summary["qat"]["selector_bits"])
    state = torch.load(out_dir / FINAL, map_location="cpu", weights_only=True)
    load_quantized_state(model, state)
    model.eval()
    return QATRun(model, config, size, summary["steps"], summary["train_seconds"],
                  summary["calibration_seconds"], summary["last"], out_dir,
                  summary.get("provenance"), summary.get("equalization"))


def load_quantized_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a quantized codec's state dict into a model quantized with the same config; input
    quantizers saved per channel (DPA) are made per channel first."""
    for name, m in model.named_modules():
        if isinstance(m, FakeQuantize) and m.axis is None:
            saved = state.get(f"{name}.scale")
            if saved is not None and saved.dim() == 1:
                m.axis = 1
                m.scale = torch.ones_like(saved)
                m.zero_point = torch.zeros_like(saved)
    resize_entropy_tables(model, state)  # tables rebuilt after training
    model.load_state_dict(state, strict=True)
