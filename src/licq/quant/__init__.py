"""Quantization primitives, observers, fake quantizers, quantized layers, size accounting."""

from licq.quant.fake_quant import FakeQuantize, NotCalibratedError
from licq.quant.modules import (
    QGDN,
    QConv2d,
    QConvTranspose2d,
    QLinear,
    QMaskedConv2d,
    QuantLayer,
)

__all__ = [
    "FakeQuantize",
    "NotCalibratedError",
    "QConv2d",
    "QConvTranspose2d",
    "QGDN",
    "QLinear",
    "QMaskedConv2d",
    "QuantLayer",
]
