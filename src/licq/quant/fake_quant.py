"""The fake quantizer: a module holding one tensor's bit-width, range and quantization params."""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from licq.quant.observers import Observer
from licq.quant.primitives import fake_quantize, qparams_from_range, qrange, round_ste


class NotCalibratedError(RuntimeError):
    """An activation quantizer was used before calibration gave it a range."""


class FakeQuantize(nn.Module):
    """Quantize-dequantize one tensor (weights per channel along ``axis``, inputs per tensor).

    While ``observing`` it records statistics and passes values through unchanged; after
    :meth:`compute_qparams` it fake-quantizes. ``scale`` and ``zero_point`` are buffers (fixed
    quantization parameters). Layers above this one change the behaviour by subclassing and
    swapping the class of an instance (state and ``state_dict`` unchanged): QAT's quantizer
    (:class:`licq.qat.quantizers.QATFakeQuantize`) learns ``log_scale``/``zp``, ONNX export's
    (:func:`licq.export.onnx.qdq_mode`) computes with Q/DQ ops. They override
    :meth:`quantize`; the observing and calibration checks of :meth:`forward` stay here.
    """

    def __init__(
        self, bits: int, symmetric: bool, axis: int | None = None, channels: int | None = None,
        observer: str = "minmax", unsigned: bool = False,
    ) -> None:
        super().__init__()
        self.bits = bits
        self.symmetric = symmetric
        self.unsigned = unsigned
        self.axis = axis
        self.qmin, self.qmax = qrange(bits, symmetric, unsigned)
        shape = (channels,) if axis is not None else ()
        self.register_buffer("scale", torch.ones(shape))
        self.register_buffer("zero_point", torch.zeros(shape))
        self.register_buffer("calibrated", torch.tensor(False))
        self.observer = Observer(observer, axis)
        self.observing = False
        self.integer_step = False  # calibrated on integer inputs with an integer step (ŷ, ẑ)
        self.register_parameter("log_scale", None)  # learnable log-scale (QAT: lsq, dpa)
        self.register_parameter("zp", None)  # learnable zero point (QAT: dpa)

    def current_qparams(self) -> tuple[Tensor, Tensor]:
        """(scale, zero point) in use: the buffers, or the learnable QAT parameters."""
        scale = self.scale if self.log_scale is None else torch.exp(self.log_scale)
        if self.zp is None:
            return scale, self.zero_point
        return scale, torch.clamp(round_ste(self.zp), self.qmin, self.qmax)

    def forward(self, x: Tensor) -> Tensor:
        if self.observing:
            self.observer.observe(x)
            return x
        if not bool(self.calibrated):
            raise NotCalibratedError(
                "activation quantizer has no range yet: run `with licq.calibrate(model): ...` "
                "over calibration images first"
            )
        return self.quantize(x)

    def quantize(self, x: Tensor) -> Tensor:
        """Quantize-dequantize ``x`` with the calibrated parameters (subclasses override)."""
        if self.integer_step and self.training:
            return self._train_latent(x)
        return fake_quantize(x, self.scale, self.zero_point, self.qmin, self.qmax, self.axis)

    def _train_latent(self, x: Tensor) -> Tensor:
        """Training-time stand-in for a quantizer of decoded latents (ŷ, ẑ: ``integer_step``).

        At inference its input is ``round(y)``; while training, CompressAI's entropy models hand
        over ``y + u`` (uniform noise) instead. Quantizing that rounds the noisy latent again:
        the synthesis would see twice the latent noise of inference (variance 1/6 instead of
        1/12), and training answers with larger latents, i.e. a higher rate (+3 % bpp of ŷ after
        300 QAT steps at W8A8, `qat-latent-check-bmshj2018-hyperprior.json`). So only the error
        the quantizer makes on the rounded latent is added (the identity when the step is 1 and the
        range holds it),
        with a straight-through gradient.
        """
        scale, zero_point = self.current_qparams()
        r = torch.round(x.detach())
        err = fake_quantize(r, scale, zero_point, self.qmin, self.qmax, self.axis) - r
        return x + err

    @torch.no_grad()
    def compute_qparams(self) -> None:
        """Set scale/zero point from what the observer saw; frees the observer's samples."""
        lo, hi = self.observer.compute_range(self.qmin, self.qmax, self.symmetric)
        integer = self.observer.integer and self.axis is None
        scale, zp = qparams_from_range(lo, hi, self.qmin, self.qmax, self.symmetric, integer)
        self.integer_step = bool(integer)
        self.scale.copy_(scale.reshape(self.scale.shape))
        self.zero_point.copy_(zp.reshape(self.zero_point.shape))
        self.calibrated.fill_(True)
        self.observer.reset()

    @torch.no_grad()
    def calibrate_static(self, x: Tensor) -> None:
        """Observe a static tensor (a weight) once and set the parameters from it."""
        self.observer.reset()
        self.observer.observe(x)
        self.compute_qparams()

    def extra_repr(self) -> str:
        gran = f"per-channel(axis={self.axis})" if self.axis is not None else "per-tensor"
        kind = "unsigned" if self.unsigned else ("symmetric" if self.symmetric else "asymmetric")
        return f"bits={self.bits}, {kind}, {gran}, observer={self.observer.kind}"
