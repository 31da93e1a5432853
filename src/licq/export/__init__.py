"""Deployment: packed low-bit model files, sub-pixel rewrite, QDQ ONNX export and the ONNX
Runtime int8 backend (licq.export.onnx)."""

from licq.export.packed import PackedModelError, export_packed, load_quantized, read_packed_metadata
from licq.export.packing import PackingError, pack, unpack

__all__ = ["PackedModelError", "PackingError", "export_packed", "load_quantized", "pack",
           "read_packed_metadata", "unpack"]
