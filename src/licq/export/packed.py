"""Packed quantized model files: ``export_packed(model, path)`` / ``load_quantized(path)``.

A ``.safetensors`` file in which every quantized weight is stored as its integer codes packed
densely at its own bit-width (:mod:`licq.export.packing`), with per-channel float32 scales and
(where not all zero) packed zero points; input quantizers as a float32 scale and a packed zero
point; everything else (biases, entropy models and their CDF tables, float layers) as it is in the
state dict. The metadata holds the format version, architecture, build sizes, quality, the bit
config JSON, the FP32 source's hash and a table of the packed tensors.

Loading rebuilds the architecture, applies the bit config, writes the dequantized weights back
(GDN: through its reparametrisation) and checks that re-quantizing them gives exactly the stored
codes, so the loaded codec's outputs and bitstreams are bit-identical to the fake-quantized model
it was exported from.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from licq.api import QuantConfig, quantize_, quantized_layers
from licq.errors import LicqError
from licq.export.packing import PackingError, pack, unpack
from licq.models.loading import resize_entropy_tables
from licq.qat.quantizers import QATFakeQuantize
from licq.quant.fake_quant import FakeQuantize
from licq.quant.primitives import quantize_int

FORMAT = "licq-packed"
FORMAT_VERSION = 1


class PackedModelError(LicqError):
    """A packed model file that cannot be read or does not match what it claims to be."""


def _weight_tensors(layer: nn.Module) -> list[tuple[str, str, FakeQuantize]]:
    """(state-dict name of the float tensor, kind, its quantizer) for one quantized layer."""
    if hasattr(layer, "beta_quant"):  # GDN: effective gamma and beta
        return [("gamma", "gdn_gamma", layer.weight_quant), ("beta", "gdn_beta", layer.beta_quant)]
    return [("weight", "weight", layer.weight_quant)]


def _effective(layer: nn.Module, kind: str) -> Tensor:
    if kind == "gdn_beta":
        return layer.effective_beta()
    return layer.effective_weight()


def _pack_codes(codes: Tensor, fq: FakeQuantize) -> tuple[Tensor, dict[str, Any]]:
    offset = codes - fq.qmin
    return pack(offset, fq.bits), {"shape": list(codes.shape), "bits": fq.bits, "qmin": fq.qmin}


def export_packed(
    model: nn.Module, path: str | os.PathLike, *, arch: str, sizes: tuple[int, ...],
    config: QuantConfig, quality: int | None = None, fp32_sha256: str | None = None,
    extra: dict[str, Any] | None = None,
) -> int:
    """Write the quantized ``model`` (after ``update(force=True)``) to ``path``; its byte size."""
    layers = quantized_layers(model)
    if not layers:
        raise PackedModelError("the model has no quantized layers: quantize it first")
    tensors: dict[str, Tensor] = {}
    table: dict[str, dict[str, Any]] = {}
    replaced: set[str] = set()
    for name, layer in layers.items():
        if layer.input_quant is not None and not bool(layer.input_quant.calibrated):
            raise PackedModelError(f"{name}: input quantizer not calibrated")
        for tname, kind, fq in _weight_tensors(layer):
            if isinstance(fq, QATFakeQuantize):
                raise PackedModelError("finish QAT first (licq.qat.quantizers.freeze_qat)")
            with torch.no_grad():
                codes = quantize_int(_effective(layer, kind), fq.scale, fq.zero_point, fq.qmin,
                                     fq.qmax, fq.axis).to(torch.int64)
            key = f"{name}.{tname}"
            tensors[f"q/{key}"], info = _pack_codes(codes, fq)
            info.update(kind=kind, axis=fq.axis)
            tensors[f"s/{key}"] = fq.scale.detach().float().contiguous()
            zp = fq.zero_point.detach().to(torch.int64)
            if bool((zp != 0).any()):
                tensors[f"z/{key}"], zinfo = _pack_codes(zp, fq)
                info["zero_point"] = zinfo
            table[key] = info
            replaced.add(key)
            prefix = "beta_quant" if kind == "gdn_beta" else "weight_quant"
            replaced.update(f"{name}.{prefix}.{b}" for b in ("scale", "zero_point", "calibrated"))
        if layer.input_quant is not None:
            iq = layer.input_quant
            key = f"{name}.input"
            tensors[f"s/{key}"] = iq.scale.detach().float().contiguous()
            tensors[f"z/{key}"], zinfo = _pack_codes(iq.zero_point.detach().to(torch.int64), iq)
            table[key] = {"kind": "input", "axis": iq.axis, "zero_point": zinfo,
                          "bits": iq.bits, "shape": list(iq.scale.shape)}
            replaced.update(f"{name}.input_quant.{b}" for b in ("scale", "zero_point", "calibrated"))
    for key, value in model.state_dict().items():
        if key not in replaced:
            tensors[f"f/{key}"] = value.detach().contiguous()
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "arch": arch,
            "sizes": json.dumps(list(sizes)), "quality": json.dumps(quality),
            "bit_config": config.to_json(), "fp32_sha256": fp32_sha256 or "",
            "packed": json.dumps(table, separators=(",", ":")),
            "extra": json.dumps(extra or {}, separators=(",", ":"))}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path.stat().st_size


def read_packed_metadata(path: str | os.PathLike) -> dict[str, Any]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise PackedModelError(f"{path}: not a readable safetensors file ({e})") from None
    if meta.get("format") != FORMAT:
        raise PackedModelError(f"{path}: not a licq packed model (format {meta.get('format')!r})")
    if meta.get("format_version") != str(FORMAT_VERSION):
        raise PackedModelError(f"{path}: packed format version {meta.get('format_version')!r}; "
                               f"this licq reads version {FORMAT_VERSION}")
    try:
        return {"arch": meta["arch"], "sizes": tuple(json.loads(meta["sizes"])),
                "quality": json.loads(meta["quality"]),
                "config": QuantConfig.from_json(meta["bit_config"]),
                "fp32_sha256": meta["fp32_sha256"], "packed": json.loads(meta["packed"]),
                "extra": json.loads(meta.get("extra", "{}"))}
    except (KeyError, ValueError, TypeError) as e:
        raise PackedModelError(f"{path}: damaged metadata ({e})") from None


def load_quantized(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """(quantized codec in eval mode, metadata) from a file written by :func:`export_packed`."""
    from licq.models import get_adapter

    meta = read_packed_metadata(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise PackedModelError(f"{path}: cannot read tensors ({e})") from None
    adapter = get_adapter(meta["arch"])
    try:
        model = adapter.build(*meta["sizes"])
    except (TypeError, ValueError, AssertionError, RuntimeError) as e:
        raise PackedModelError(f"{path}: cannot build {meta['arch']}{meta['sizes']}: {e}") from None
    quantize_(model, meta["config"])
    try:
        _fill(model, tensors, meta["packed"])
    except (PackingError, KeyError, RuntimeError, ValueError) as e:
        raise PackedModelError(f"{path}: does not match its architecture/bit config: {e}") from None
    return model.eval(), meta


def _codes(tensors: dict[str, Tensor], key: str, info: dict[str, Any]) -> Tensor:
    shape = info["shape"]
    n = 1
    for s in shape:
        n *= int(s)
    return (unpack(tensors[key], int(info["bits"]), n) + int(info["qmin"])).reshape(shape)


@torch.no_grad()
def _fill(model: nn.Module, tensors: dict[str, Tensor], table: dict[str, Any]) -> None:
    layers = quantized_layers(model)
    missing = [k for k in table if k.rsplit(".", 1)[0] not in layers]
    if missing:
        raise KeyError(f"packed tensor {missing[0]!r} has no quantized layer")
    # 1. float parts (and the activation layout of DPA-trained inputs)
    floats = {k[2:]: v for k, v in tensors.items() if k.startswith("f/")}
    for key, info in table.items():
        if info["kind"] == "input" and info["axis"] is not None:
            iq = layers[key.rsplit(".", 1)[0]].input_quant
            iq.axis = int(info["axis"])
            iq.scale = torch.ones(info["shape"])
            iq.zero_point = torch.zeros(info["shape"])
    resize_entropy_tables(model, floats)
    own = model.state_dict()
    expected_float = {k for k in own if not _is_replaced(k, table)}
    if set(floats) != expected_float:
        extra, lack = sorted(set(floats) - expected_float), sorted(expected_float - set(floats))
        raise KeyError(f"float tensors differ (unexpected {extra[:2]}, missing {lack[:2]})")
    result = model.load_state_dict(floats, strict=False)
    if result.unexpected_keys:
        raise KeyError(f"unexpected {result.unexpected_keys[:2]}")
    # 2. quantized weights and quantizer parameters
    for key, info in table.items():
        name, tname = key.rsplit(".", 1)
        layer = layers[name]
        if info["kind"] == "input":
            iq = layer.input_quant
            if iq is None or int(info["bits"]) != iq.bits:
                raise ValueError(f"{key}: input stored at {info['bits']} bits, the bit config "
                                 f"says {iq.bits if iq is not None else 'float'}")
            iq.scale.copy_(tensors[f"s/{key}"].reshape(iq.scale.shape))
            iq.zero_point.copy_(_codes(tensors, f"z/{key}", info["zero_point"])
                                .reshape(iq.zero_point.shape).float())
            iq.calibrated.fill_(True)
            continue
        fq = layer.beta_quant if info["kind"] == "gdn_beta" else layer.weight_quant
        if int(info["bits"]) != fq.bits or int(info["qmin"]) != fq.qmin:
            raise ValueError(f"{key}: stored at {info['bits']} bits, the bit config says {fq.bits}")
        q = _codes(tensors, f"q/{key}", info).float()
        fq.scale.copy_(tensors[f"s/{key}"].reshape(fq.scale.shape))
        if "zero_point" in info:
            fq.zero_point.copy_(_codes(tensors, f"z/{key}", info["zero_point"])
                                .reshape(fq.zero_point.shape).float())
        else:
            fq.zero_point.zero_()
        fq.calibrated.fill_(True)
        from licq.quant.primitives import dequantize

        w = dequantize(q, fq.scale, fq.zero_point, fq.axis)
        if info["kind"] == "gdn_gamma":
            layer.gamma.copy_(layer.gamma_reparam.init(w.reshape(layer.gamma.shape)))
        elif info["kind"] == "gdn_beta":
            layer.beta.copy_(layer.beta_reparam.init(w.reshape(layer.beta.shape)))
        else:
            layer.weight.copy_(w.reshape(layer.weight.shape))
        again = quantize_int(_effective(layer, info["kind"]), fq.scale, fq.zero_point, fq.qmin,
                             fq.qmax, fq.axis)
        if not torch.equal(again.reshape(q.shape), q):
            raise ValueError(f"{key}: dequantized weights do not re-quantize to the stored codes")


def _is_replaced(key: str, table: dict[str, Any]) -> bool:
    for t, info in table.items():
        name, tname = t.rsplit(".", 1)
        if info["kind"] == "input":
            if key.startswith(f"{name}.input_quant."):
                return True
        elif key == t or key.startswith(f"{name}.{'beta_quant' if tname == 'beta' else 'weight_quant'}."):
            return True
    return False
