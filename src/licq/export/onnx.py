"""ONNX export of quantized codecs (QuantizeLinear/DequantizeLinear) and the ONNX Runtime int8 backend.

:func:`export_onnx` writes the analysis/synthesis transforms and the hyper transforms of a
quantized model as ONNX graphs in the QDQ format: every quantized layer's input becomes a
``QuantizeLinear → DequantizeLinear`` pair (uint8, its per-tensor scale and zero point) and its
weight a per-channel ``QuantizeLinear → DequantizeLinear`` pair (int8). Layers below 8 bits keep
their own grid: their values are clipped to it first and are exactly representable in 8 bits.
Transposed convolutions are first rewritten as ``Conv2d + PixelShuffle`` (exactly the same
function, :mod:`licq.export.subpixel`), so that the decoder's layers are ordinary convolutions,
and a quantized strided convolution on ≤ 4 input channels (the RGB input layer) as
``PixelUnshuffle + Conv2d`` (the same integer sums; the exported g_a then needs an input whose
height and width are even, as CompressAI's padding to multiples of 64 gives).

ONNX Runtime fuses ``DequantizeLinear → Conv → QuantizeLinear`` into ``QLinearConv``, an int8
kernel, wherever a layer's output is quantized by the next layer's input quantizer; a layer
whose output is not re-quantized (the last one of a transform) runs as a float convolution of
the dequantized weights. :func:`int8_backend` returns a copy of the model whose transforms run
in ONNX Runtime sessions; the entropy model and coding stay in Python (CompressAI's rANS).
:func:`layer_kernels` reports which kernel each convolution ran on after ORT's optimisation.

Layers with more than 8 bits (weights or activations) export as float fake-quantization
(Round/Clip) and run in float.
"""

from __future__ import annotations

import copy
import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from licq.errors import LicqError
from licq.quant.fake_quant import FakeQuantize
from licq.quant.primitives import channel_view, fake_quantize

PARTS = ("g_a", "h_a", "g_s", "h_s")
OPSET = 17
#: How 8-bit signed weight codes are stored in the QDQ graphs: ``True`` as uint8 with zero point
#: 128 (ORT then runs u8·u8 kernels), ``False`` as int8 (u8·s8 kernels), ``None`` (default): ask
#: :func:`u8s8_exact` once. On x86 CPUs without VNNI, ORT's u8·s8 kernels add pairs of u8·s8
#: products in 16 bits (vpmaddubsw), which saturates for 8-bit weights (2·255·127 > 32767);
#: with AVX-VNNI / AVX512-VNNI (vpdpbusd) they accumulate in 32 bits and are exact, and faster
#: than u8·u8. Codes of at most 7 bits cannot saturate (2·255·63 < 32767) and are always int8.
U8_WEIGHTS: bool | None = None
_U8S8_EXACT: bool | None = None


def _u8s8_probe() -> tuple[np.ndarray, np.ndarray, float]:
    """The input, weights and output scale of :func:`u8s8_exact`'s 1×1 ``QLinearConv``: for
    every output, adjacent channels form the pairs that vpmaddubsw adds, 24 pairs of 255·127
    (64,770 each, > 32,767) and 8 of 255·(−128); exact sum 1,032,240, with saturated pairs
    524,264."""
    c = 64  # a GEMM of ordinary shape (16 outputs × 64 pixels × 64 channels), not a dot product
    w = np.full((16, c, 1, 1), 127, np.int8)
    w[:, 48:] = -128
    return np.full((1, c, 8, 8), 255, np.uint8), w, 8192.0


def u8s8_exact() -> bool:
    """Whether this machine's ONNX Runtime computes a u8·s8 ``QLinearConv`` exactly at the
    extremes of 8-bit codes (see :func:`_u8s8_probe`), measured once per process."""
    global _U8S8_EXACT
    if _U8S8_EXACT is None:
        from onnx import TensorProto, helper, numpy_helper

        x, w, out_scale = _u8s8_probe()
        n_out = w.shape[0]
        exact = int((x[0, :, 0, 0].astype(np.int64) * w[0, :, 0, 0].astype(np.int64)).sum())
        inits = [numpy_helper.from_array(a, n) for a, n in (
            (np.array(1.0, np.float32), "xs"), (np.array(0, np.uint8), "xz"), (w, "w"),
            (np.ones(n_out, np.float32), "ws"), (np.zeros(n_out, np.int8), "wz"),
            (np.array(out_scale, np.float32), "ys"), (np.array(0, np.uint8), "yz"))]
        node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"],
                                ["y"])
        graph = helper.make_graph(
            [node], "u8s8", [helper.make_tensor_value_info("x", TensorProto.UINT8, x.shape)],
            [helper.make_tensor_value_info("y", TensorProto.UINT8, None)], inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 10)])
        model.ir_version = 7
        got = ort_session(model.SerializeToString(), threads=1).run(None, {"x": x})[0]
        want = int(np.clip(np.round(exact / out_scale), 0, 255))
        _U8S8_EXACT = bool((got == want).all())
    return _U8S8_EXACT


def u8_weight_storage() -> bool:
    """Whether 8-bit weights are exported as uint8 (see :data:`U8_WEIGHTS`)."""
    return (not u8s8_exact()) if U8_WEIGHTS is None else U8_WEIGHTS


class OnnxExportError(LicqError):
    """A model (part) that cannot be exported or run through ONNX Runtime."""


def _qdq(fq: FakeQuantize, x: Tensor) -> Tensor:
    """``fq``'s quantize-dequantize written with the ops the exporter maps to Q/DQ nodes."""
    scale, zp = fq.current_qparams()
    scale, zp = scale.detach(), zp.detach()
    if fq.bits > 8:  # no 8-bit Q/DQ pair can hold it: float fake-quant
        return fake_quantize(x, scale, zp, fq.qmin, fq.qmax, fq.axis)
    signed = fq.qmin < 0
    lo8, hi8 = (-128, 127) if signed else (0, 255)
    if fq.axis is None:
        s, z = float(scale), int(zp)
        if (fq.qmin, fq.qmax) != (lo8, hi8):  # a narrower grid: clip to it first
            x = torch.clamp(x, (fq.qmin - z) * s, (fq.qmax - z) * s)
        return torch.fake_quantize_per_tensor_affine(x, s, z, lo8, hi8)
    lo = channel_view((fq.qmin - zp) * scale, x, fq.axis)
    hi = channel_view((fq.qmax - zp) * scale, x, fq.axis)
    x = torch.minimum(torch.maximum(x, lo), hi)
    zp_i = zp.round().to(torch.int32)
    if signed and fq.bits >= 8 and u8_weight_storage():  # the same codes shifted into uint8
        zp_i, lo8, hi8 = zp_i + 128, 0, 255
    return torch.fake_quantize_per_channel_affine(x, scale.float(), zp_i, fq.axis % x.dim(),
                                                  lo8, hi8)


class QDQFakeQuantize(FakeQuantize):
    """A :class:`FakeQuantize` computing with the ops the exporter maps to Q/DQ nodes (the same
    values); :func:`qdq_mode` swaps quantizers to this class and back."""

    def quantize(self, x: Tensor) -> Tensor:
        return _qdq(self, x)


@contextmanager
def qdq_mode(model: nn.Module) -> Iterator[nn.Module]:
    """While inside, every fake quantizer of ``model`` computes with Q/DQ ops."""
    classes = {fq: type(fq) for fq in model.modules() if isinstance(fq, FakeQuantize)}
    try:
        for fq in classes:
            fq.__class__ = QDQFakeQuantize
        yield model
    finally:
        for fq, cls in classes.items():
            fq.__class__ = cls


def _check_static(model: nn.Module) -> None:
    from licq.dynamic.selector import DynamicLayer

    if any(isinstance(m, DynamicLayer) for m in model.modules()):
        raise OnnxExportError("dynamic bit-width models cannot be exported (their layers choose "
                              "bits per image); export a static configuration")


def _requant_before_shuffle(model: nn.Module) -> None:
    """Give each sub-pixel conv whose output the next layer quantizes (directly, or after a
    ReLU, which commutes with a quantizer whose grid holds 0) that quantizer as ``out_quant``."""
    from licq.export.subpixel import SubPixelConv

    for seq in model.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        kids = list(seq.children())
        for i, mod in enumerate(kids[:-1]):
            if not isinstance(mod, SubPixelConv):
                continue
            nxt = kids[i + 1]
            if isinstance(nxt, nn.ReLU) and i + 2 < len(kids):
                nxt = kids[i + 2]
            fq = getattr(nxt, "input_quant", None)
            if isinstance(fq, FakeQuantize) and bool(fq.calibrated) and fq.axis is None:
                mod.out_quant = copy.deepcopy(fq)


def export_onnx(
    model: nn.Module, out_dir: str | os.PathLike, parts: tuple[str, ...] = PARTS,
    sample_hw: tuple[int, int] = (256, 256),
) -> dict[str, Path]:
    """Write ``<part>.onnx`` for each part of a quantized model into ``out_dir``.

    Inputs have dynamic batch, height and width. Returns ``part -> path``.
    """
    from licq.export.subpixel import rewrite_strided_input_convs, rewrite_transposed_convs

    _check_static(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    m = copy.deepcopy(model).eval().cpu()
    rewrite_transposed_convs(m)
    rewrite_strided_input_convs(m)
    _requant_before_shuffle(m)
    h, w = sample_hw
    with torch.no_grad():
        y = m.g_a(torch.rand(1, 3, h, w))
        z = m.h_a(y)
    samples = {"g_a": torch.rand(1, 3, h, w), "h_a": y, "g_s": torch.round(y),
               "h_s": torch.round(z)}
    paths = {}
    with qdq_mode(m), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for part in parts:
            mod = getattr(m, part, None)
            if mod is None:
                raise OnnxExportError(f"{type(model).__name__} has no {part}")
            dst = out / f"{part}.onnx"
            try:
                torch.onnx.export(mod, (samples[part],), str(dst), dynamo=False,
                                  opset_version=OPSET, input_names=["x"], output_names=["y"],
                                  dynamic_axes={"x": {0: "n", 2: "h", 3: "w"},
                                                "y": {0: "n", 2: "h", 3: "w"}})
            except Exception as e:  # noqa: BLE001 - the exporter raises many types
                raise OnnxExportError(f"exporting {part} failed: {e}") from e
            paths[part] = dst
    return paths


#: ONNX Runtime graph optimisation levels by name. "extended" (the default) fuses the QDQ
#: pairs into QLinearConv but keeps NCHW; "all" also converts layouts (NHWC around each
#: QLinearConv, NCHWc for float convolutions), which inserts a Transpose around every int8
#: layer and measured slower for licq's QDQ graphs on the 1-thread CPU runs of deploy.py.
OPT_LEVELS = {
    "basic": lambda ort: ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": lambda ort: ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": lambda ort: ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def ort_session(model: str | os.PathLike | bytes, threads: int | None = None,
                opt_level: str = "extended", optimized_path: str | os.PathLike | None = None):
    """A CPU ONNX Runtime session of ``model`` (a path or serialized bytes): ``threads``
    intra-op threads (default: torch's), one inter-op thread, optimisation ``opt_level``."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or torch.get_num_threads()
    so.inter_op_num_threads = 1
    so.graph_optimization_level = OPT_LEVELS[opt_level](ort)
    so.log_severity_level = 3
    if optimized_path is not None:
        so.optimized_model_filepath = str(optimized_path)
    src = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


class OrtModule(nn.Module):
    """An ONNX Runtime session standing in for a torch module (CPU, float32 in and out)."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None,
                 optimized_path: str | os.PathLike | None = None,
                 opt_level: str = "extended") -> None:
        super().__init__()
        self.path = Path(path)
        self.session = ort_session(path, threads, opt_level, optimized_path)

    def forward(self, x: Tensor) -> Tensor:
        y = self.session.run(None, {"x": np.ascontiguousarray(x.detach().cpu().float().numpy())})[0]
        return torch.from_numpy(y).to(x.device)


def int8_backend(
    model: nn.Module, work_dir: str | os.PathLike | None = None,
    parts: tuple[str, ...] = ("g_a", "h_a", "g_s"), threads: int | None = None,
    opt_level: str = "extended",
) -> nn.Module:
    """A copy of the quantized ``model`` whose ``parts`` run in ONNX Runtime (int8 kernels).

    ``h_s`` stays in licq (by default the codec runs it on the exact path, which makes the
    entropy decoder's state reproducible; ORT's kernels would not be).
    """
    work = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="licq-onnx-"))
    paths = export_onnx(model, work, parts)
    m = copy.deepcopy(model).eval().cpu()
    for part, path in paths.items():
        setattr(m, part, OrtModule(path, threads, optimized_path=work / f"{part}.opt.onnx",
                                   opt_level=opt_level))
    return m


def layer_kernels(optimized_path: str | os.PathLike) -> dict[str, int]:
    """Counts of the convolution kernels in an ORT-optimised graph: ``QLinearConv`` (int8) vs
    ``Conv`` / ``FusedConv`` / ``NchwcConv`` (float)."""
    counts: dict[str, int] = {}
    for ops in layer_kernel_map(optimized_path, "").values():
        for op in ops.split("+"):
            counts[op] = counts.get(op, 0) + 1
    return counts


def layer_kernel_map(optimized_path: str | os.PathLike, part: str) -> dict[str, str]:
    """``"<part>.<child>" -> kernel`` of each convolution in an ORT-optimised graph of one
    transform (node names keep the exporter's module path, e.g. ``/0/conv/Conv``); a child with
    several convolutions (GDN's, a sub-pixel conv) lists them joined by ``+``."""
    import onnx

    out: dict[str, str] = {}
    for n in onnx.load(str(optimized_path)).graph.node:
        if "Conv" not in n.op_type:
            continue
        head = n.name.strip("/").split("/", 1)[0]
        key = f"{part}.{head}" if head.isdigit() else f"{part}:{n.name}"
        out[key] = f"{out[key]}+{n.op_type}" if key in out else n.op_type
    return out
