"""Autoregressive (context-model) coding loops for quantized models.

CompressAI's ``JointAutoregressiveHierarchicalPriors._compress_ar`` / ``_decompress_ar`` (used by
mbt2018 and cheng2020) call ``F.conv2d`` with the context model's *float* weights directly, so a
quantized ``context_prediction`` (a :class:`~licq.quant.modules.QMaskedConv2d`) would be bypassed
in real bitstreams while the model's forward, its size and its likelihoods use the quantized one.
:func:`install_ar_paths` binds these loops to a quantized model instead: the same raster-order
loops, with the context computed by the quantized layer (input quantizer, quantized masked
weights) and, inside :func:`licq.codec.exact.exact_paths`, on licq's exact arithmetic (context
conv and entropy-parameter network), so the entropy decoder's state is reproducible too.
"""

from __future__ import annotations

import types
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from compressai.ans import BufferedRansEncoder, RansDecoder
from torch import Tensor

Fn = Callable[[Tensor], Tensor]


def _context_fns(model: nn.Module, decoding: bool) -> tuple[Fn, Fn]:
    """(crop → context features, features → Gaussian parameters) in use for ``model``."""
    exact = getattr(model, "_licq_ar_exact", None)
    if exact is not None:
        return exact.context, exact.entropy_parameters
    cp = model.context_prediction
    if hasattr(cp, "quantized_weight"):
        w = cp.quantized_weight().detach()

        def ctx(crop: Tensor) -> Tensor:
            return F.conv2d(cp.quant_input(crop), w, cp.bias)
    else:  # float: what CompressAI does
        w = cp.weight if decoding else cp.weight * cp.mask

        def ctx(crop: Tensor) -> Tensor:
            return F.conv2d(crop, w, bias=cp.bias)
    return ctx, model.entropy_parameters


def _tables(gc: nn.Module) -> tuple[list, list, list]:
    return gc.quantized_cdf.tolist(), gc.cdf_length.tolist(), gc.offset.tolist()


def _raster(self, y_hat, params, height, width, kernel_size, decoding):
    """Yield ``(h, w, crop, means, indexes)`` in raster order. The consumer writes position
    (h, w) of ``y_hat`` before asking for the next one: the next context reads it."""
    from licq.eval.cost import active_meter

    ctx, entropy_parameters = _context_fns(self, decoding)
    gc = self.gaussian_conditional
    meter = active_meter(self)  # the context conv is functional here: no hook sees it
    for h in range(height):
        for w in range(width):
            y_crop = y_hat[:, :, h:h + kernel_size, w:w + kernel_size]
            p = params[:, :, h:h + 1, w:w + 1]
            c = ctx(y_crop)
            if meter is not None:
                meter.record("context_prediction", self.context_prediction, y_crop, c)
            gaussian_params = entropy_parameters(torch.cat((p, c), dim=1))
            scales_hat, means_hat = gaussian_params.chunk(2, 1)  # (1, M, 1, 1) each
            yield h, w, y_crop, means_hat, gc.build_indexes(scales_hat)


def ar_compress(self, y_hat, params, height, width, kernel_size, padding):
    """CompressAI's ``_compress_ar`` with licq's context functions."""
    gc = self.gaussian_conditional
    symbols, indexes_all = [], []
    for h, w, y_crop, means_hat, indexes in _raster(self, y_hat, params, height, width,
                                                    kernel_size, decoding=False):
        centre = y_crop[:, :, padding:padding + 1, padding:padding + 1]
        y_q = gc.quantize(centre, "symbols", means_hat)
        y_hat[:, :, h + padding:h + padding + 1, w + padding:w + padding + 1] = y_q + means_hat
        symbols.extend(y_q.squeeze().tolist())
        indexes_all.extend(indexes.squeeze().tolist())
    encoder = BufferedRansEncoder()
    encoder.encode_with_indexes(symbols, indexes_all, *_tables(gc))
    return encoder.flush()


def ar_decompress(self, y_string, y_hat, params, height, width, kernel_size, padding):
    """CompressAI's ``_decompress_ar`` with licq's context functions."""
    gc = self.gaussian_conditional
    tables = _tables(gc)
    decoder = RansDecoder()
    decoder.set_stream(y_string)
    for h, w, _, means_hat, indexes in _raster(self, y_hat, params, height, width, kernel_size,
                                               decoding=True):
        rv = decoder.decode_stream(indexes.squeeze().tolist(), *tables)
        rv = torch.tensor(rv, dtype=y_hat.dtype, device=y_hat.device).reshape(1, -1, 1, 1)
        y_hat[:, :, h + padding:h + padding + 1, w + padding:w + padding + 1] = gc.dequantize(
            rv, means_hat)


def install_ar_paths(model: nn.Module) -> bool:
    """Bind licq's loops to ``model`` if it is an autoregressive CompressAI model; True if so."""
    if not (hasattr(model, "context_prediction") and hasattr(model, "_compress_ar")):
        return False
    model._compress_ar = types.MethodType(ar_compress, model)
    model._decompress_ar = types.MethodType(ar_decompress, model)
    return True
