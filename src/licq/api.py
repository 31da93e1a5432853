"""``quantize_(model, config)``: quantize a model in place from a per-layer config, torchao-style.

The config types (:class:`LayerQConfig`, :class:`QuantConfig`) live in :mod:`licq.config` and are
re-exported here.
"""

from __future__ import annotations

import torch.nn as nn

from licq.config import (  # noqa: F401  (the config types are part of this API)
    CONFIG_VERSION,
    GRANULARITIES,
    LayerQConfig,
    QuantConfig,
    key_matches,
    quantizable_layer_names,
)
from licq.quant.modules import QuantLayer, quantized_type_for


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def quantize_(model: nn.Module, config: QuantConfig) -> dict[str, LayerQConfig | None]:
    """Replace quantizable layers of ``model`` in place by their fake-quantized versions.

    Weights are quantized immediately (their ranges come from the weights themselves);
    input activations need :func:`licq.calibrate` before the model runs. Entropy models stay
    float. Returns the resolved ``layer -> config`` map (``None`` = kept float).

    Raises:
        ValueError: bits outside 2-16, a map key matching no layer, a layer type without a
            quantized version, or a model that is already quantized; the message names the layer.
    """
    modules = dict(model.named_modules())
    already = [n for n, m in modules.items() if isinstance(m, QuantLayer)]
    if already:
        raise ValueError(f"model is already quantized (e.g. {already[0]})")
    resolved = config.resolve_model(model)
    for name, cfg in resolved.items():
        if cfg is None:
            continue
        mod = modules[name]
        qtype = quantized_type_for(mod)
        if qtype is None:
            raise ValueError(f"layer {name!r} ({type(mod).__name__}) has no quantized version")
        try:
            new = qtype.from_float(mod, cfg)
        except ValueError as e:
            raise ValueError(f"layer {name!r}: {e}") from None
        _set_submodule(model, name, new)
    from licq.codec.ar import install_ar_paths

    install_ar_paths(model)  # real bitstreams must use the quantized context model
    return resolved


def quantizes_activations(resolved: dict[str, LayerQConfig | None]) -> bool:
    """Whether a resolved ``layer -> config`` map (what :func:`quantize_` returns) quantizes any
    input activation, i.e. whether the model needs calibration."""
    return any(c is not None and c.a_bits is not None for c in resolved.values())


def quantized_layers(model: nn.Module) -> dict[str, QuantLayer]:
    return {n: m for n, m in model.named_modules() if isinstance(m, QuantLayer)}


def quantizer_sites(model: nn.Module) -> list[tuple[str, nn.Module, nn.Module, str]]:
    """Every quantizer of a quantized model as ``(name, layer, quantizer, role)``, role one of
    ``"weight"``, ``"beta"`` (GDN) and ``"input"``; the candidates of dynamic (per-image bit-width)
    layers are included, each with the layer it quantizes."""
    sites = []
    for name, mod in model.named_modules():
        if isinstance(mod, QuantLayer):
            for attr, role in (("weight_quant", "weight"), ("beta_quant", "beta"),
                               ("input_quant", "input")):
                q = mod._modules.get(attr)
                if q is not None:
                    sites.append((f"{name}.{attr}", mod, q, role))
        cand_w, cand_a = mod._modules.get("cand_w"), mod._modules.get("cand_a")
        if cand_w is not None and cand_a is not None:  # licq.dynamic.DynamicLayer
            for i, q in enumerate(cand_w):
                sites.append((f"{name}.cand_w.{i}", mod.layer, q, "weight"))
            for i, q in enumerate(cand_a):
                sites.append((f"{name}.cand_a.{i}", mod.layer, q, "input"))
    return sites
