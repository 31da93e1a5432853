"""The `.licq` codec: file format, compress/decompress with packed quantized models."""

from licq.codec.api import (
    ReconstructionMismatch,
    UnsupportedModelError,
    compress_image,
    decompress_bytes,
    default_packed_models,
    model_id,
)
from licq.codec.container import CodecFormatError, Container

__all__ = ["CodecFormatError", "Container", "ReconstructionMismatch", "UnsupportedModelError",
           "compress_image",
           "decompress_bytes", "default_packed_models", "model_id"]
