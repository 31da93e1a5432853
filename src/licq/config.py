"""Quantization configs: what :func:`licq.quantize_` is told, as data.

A :class:`QuantConfig` is a default :class:`LayerQConfig` plus a map from layer name (exact,
or ``"re:<regex>"``) to a :class:`LayerQConfig` or ``None`` (keep float). It serialises to JSON;
that JSON is what the mixed-precision search writes and ``licq ptq --bit-config`` reads.

Resolution order for each quantizable layer: an exact name, then the first matching regex in map
order, then ``default``. Every key of the map must match at least one quantizable layer.

This module sits at the bottom of licq: it imports nothing from licq, so the quantized layers
(:mod:`licq.quant`) and everything above them can use the config types.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch.nn as nn
from compressai.layers import GDN

#: the bit-widths a quantizer takes
MIN_BITS, MAX_BITS = 2, 16
#: range observers (:class:`licq.quant.observers.Observer`)
OBSERVERS = ("minmax", "percentile", "mse")
#: the leaf layer types that have a quantized version (:mod:`licq.quant.modules`; MaskedConv2d is a
#: Conv2d subclass)
QUANTIZABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, GDN)
GRANULARITIES = ("per_channel", "per_tensor")
CONFIG_VERSION = 1


@dataclass(frozen=True)
class LayerQConfig:
    """How one layer is quantized.

    Attributes:
        w_bits: weight bit-width (2-16). For GDN/IGDN: the precision of effective γ and β.
        a_bits: input-activation bit-width (2-16), or ``None`` for weight-only.
        granularity: ``"per_channel"`` (weights per output channel) or ``"per_tensor"``.
        symmetric: symmetric signed weights (zero exact) or asymmetric.
        observer: weight range observer: ``"minmax"``, ``"percentile"`` or ``"mse"``.
        a_observer: input-activation range observer.
    """

    w_bits: int = 8
    a_bits: int | None = 8
    granularity: str = "per_channel"
    symmetric: bool = True
    # Defaults chosen on training crops (RD loss of the q3 baseline, never Kodak): min-max weight
    # ranges beat MSE-optimal clipping at every bit-width (clipped weight outliers cost RD), and
    # MSE-optimal activation ranges beat min-max and percentile.
    observer: str = "minmax"
    a_observer: str = "mse"

    def __post_init__(self) -> None:
        for name, bits in (("w_bits", self.w_bits), ("a_bits", self.a_bits)):
            if bits is None and name == "a_bits":
                continue
            if not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
                raise ValueError(f"{name} must be an integer in {MIN_BITS}..{MAX_BITS}, got {bits!r}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {self.granularity!r}")
        for name in ("observer", "a_observer"):
            if getattr(self, name) not in OBSERVERS:
                raise ValueError(f"{name} must be one of {OBSERVERS}, got {getattr(self, name)!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LayerQConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown LayerQConfig fields: {sorted(unknown)}")
        return cls(**d)


@dataclass(frozen=True)
class QuantConfig:
    """A whole-model quantization config.

    Attributes:
        default: config of every quantizable layer the map does not name (``None``: keep float).
        layers: ``name or "re:<regex>" -> LayerQConfig | None``.
        gdn_bits: if set, GDN/IGDN γ/β use this precision whatever their layer config says.
    """

    default: LayerQConfig | None = field(default_factory=LayerQConfig)
    layers: dict[str, LayerQConfig | None] = field(default_factory=dict)
    gdn_bits: int | None = None

    def __post_init__(self) -> None:
        for key in self.layers:
            if key.startswith("re:"):
                try:
                    re.compile(key[3:])
                except re.error as e:
                    raise ValueError(f"layer key {key!r}: invalid regex ({e})") from None
        if self.gdn_bits is not None and not MIN_BITS <= self.gdn_bits <= MAX_BITS:
            raise ValueError(f"gdn_bits must be in {MIN_BITS}..{MAX_BITS}, got {self.gdn_bits}")

    @classmethod
    def uniform(cls, w_bits: int, a_bits: int | None = 8, **kw: Any) -> QuantConfig:
        """Every quantizable layer at the same precision (``a_bits=None``: weight-only)."""
        return cls(default=LayerQConfig(w_bits=w_bits, a_bits=a_bits, **kw))

    # -- resolution --------------------------------------------------------------------------
    def resolve(self, layer_names: list[str]) -> dict[str, LayerQConfig | None]:
        """The config of each layer; raises ``ValueError`` for keys that match no layer."""
        names = set(layer_names)
        regexes = [(k, re.compile(k[3:])) for k in self.layers if k.startswith("re:")]
        for key in self.layers:
            if key.startswith("re:"):
                rx = dict(regexes)[key]
                if not any(rx.search(n) for n in layer_names):
                    raise ValueError(f"layer pattern {key!r} matches no quantizable layer")
            elif key not in names:
                raise ValueError(f"layer {key!r} is not a quantizable layer of this model")
        out: dict[str, LayerQConfig | None] = {}
        for n in layer_names:
            if n in self.layers:
                out[n] = self.layers[n]
                continue
            for key, rx in regexes:
                if rx.search(n):
                    out[n] = self.layers[key]
                    break
            else:
                out[n] = self.default
        return out

    def resolve_model(self, model: nn.Module) -> dict[str, LayerQConfig | None]:
        """:meth:`resolve` on ``model``'s quantizable layers, with the ``gdn_bits`` override
        applied to GDN/IGDN layers (the one place it is applied)."""
        resolved = self.resolve(quantizable_layer_names(model))
        if self.gdn_bits is not None:
            modules = dict(model.named_modules())
            for name, cfg in resolved.items():
                if cfg is not None and isinstance(modules[name], GDN):
                    resolved[name] = replace(cfg, w_bits=self.gdn_bits)
        return resolved

    def with_a_bits(self, a_bits: dict[str, int], layer_names: list[str]) -> QuantConfig:
        """This config with the input-activation bits of some layers replaced.

        ``a_bits`` maps a layer name or ``"re:<regex>"`` (first match in map order) to bits; it
        applies to the layers that quantize their input activations (kept-float and weight-only
        layers stay as they are). The result names every layer of ``layer_names`` explicitly, so
        it is the resolved config written out. Raises ``ValueError`` for a key that changes no
        layer (a typo would otherwise silently leave the config as it was).
        """
        resolved = self.resolve(layer_names)
        used: set[str] = set()
        layers: dict[str, LayerQConfig | None] = {}
        for name, cfg in resolved.items():
            for key, bits in a_bits.items():
                if key_matches(key, name) and cfg is not None and cfg.a_bits is not None:
                    cfg = replace(cfg, a_bits=bits)
                    used.add(key)
                    break
            layers[name] = cfg
        unused = [k for k in a_bits if k not in used]
        if unused:
            raise ValueError(f"activation-bit override(s) {unused} match no layer with quantized "
                             "input activations")
        return QuantConfig(default=None, layers=layers, gdn_bits=self.gdn_bits)

    # -- JSON --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "version": CONFIG_VERSION,
            "default": asdict(self.default) if self.default else None,
            "layers": {k: asdict(v) if v else None for k, v in self.layers.items()},
            "gdn_bits": self.gdn_bits,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QuantConfig:
        if not isinstance(d, dict):
            raise ValueError("a bit config must be a JSON object")
        if d.get("version", CONFIG_VERSION) != CONFIG_VERSION:
            raise ValueError(f"unsupported bit-config version {d.get('version')!r}")
        if "default" not in d and "layers" not in d:  # e.g. a results file passed by mistake
            raise ValueError("not a bit config: it has neither 'default' nor 'layers'")
        default = d.get("default")
        layers = d.get("layers", {})
        if not isinstance(layers, dict):
            raise ValueError("'layers' must map layer names to configs or null")
        return cls(
            default=LayerQConfig.from_dict(default) if default else None,
            layers={k: LayerQConfig.from_dict(v) if v else None for k, v in layers.items()},
            gdn_bits=d.get("gdn_bits"),
        )

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=1)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_json(cls, text_or_path: str | os.PathLike) -> QuantConfig:
        p = Path(text_or_path) if not str(text_or_path).lstrip().startswith("{") else None
        text = p.read_text() if p is not None else str(text_or_path)
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise ValueError(f"bit config is not valid JSON: {e}") from None


def key_matches(key: str, name: str) -> bool:
    """Whether a layer-map key (an exact name, or ``"re:<regex>"`` searched) names ``name``."""
    return bool(re.search(key[3:], name)) if key.startswith("re:") else key == name


def quantizable_layer_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, QUANTIZABLE_TYPES)]


