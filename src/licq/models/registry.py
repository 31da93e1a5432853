"""Model adapters, registered under CompressAI's zoo names.

An adapter knows how to build an architecture (from a zoo quality, from explicit sizes, or from the
shapes in a state dict, as CompressAI's ``from_state_dict`` does) and which of its layers are
quantizable, grouped the way the quantization papers talk about them: analysis ``g_a``, synthesis
``g_s``, hyper-analysis ``h_a``, hyper-synthesis ``h_s``, and the context / entropy-parameter
networks of autoregressive models. Entropy models (``EntropyBottleneck``, ``GaussianConditional``)
are never quantizable: their CDF tables stay float.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import torch.nn as nn
from compressai.models import (
    Cheng2020Anchor,
    Cheng2020Attention,
    Elic2022Official,
    FactorizedPrior,
    JointAutoregressiveHierarchicalPriors,
    MeanScaleHyperprior,
    ScaleHyperprior,
)
from torch import Tensor

from licq.config import QUANTIZABLE_TYPES
from licq.errors import UnknownModelError

#: First matching pattern names a layer's group. ELIC nests h_a/h_s and the context networks
#: under ``latent_codec``, hence the unanchored patterns.
_GROUP_PATTERNS: tuple[tuple[str, str], ...] = (
    ("g_a", r"^g_a\."),
    ("g_s", r"^g_s\."),
    ("h_a", r"(^|\.)h_a\."),
    ("h_s", r"(^|\.)h_s\."),
    ("context_prediction", r"(^|\.)context_prediction(\.|$)"),
    ("entropy_parameters", r"(^|\.)entropy_parameters(\.|$)"),
    ("channel_context", r"(^|\.)channel_context\."),
)

#: λ used to train CompressAI's zoo models (MSE: bpp + λ·255²·MSE; MS-SSIM: bpp + λ·(1 − MS-SSIM)).
LAMBDAS: dict[str, dict[int, float]] = {
    "mse": {1: 0.0018, 2: 0.0035, 3: 0.0067, 4: 0.0130, 5: 0.0250, 6: 0.0483, 7: 0.0932, 8: 0.1800},
    "ms-ssim": {1: 2.40, 2: 4.58, 3: 8.73, 4: 16.64, 5: 31.73, 6: 60.50, 7: 115.37, 8: 220.0},
}


def lambda_for(quality: int, metric: str = "mse") -> float:
    """CompressAI's training λ for a quality level (the λ of licq's baselines too)."""
    try:
        return LAMBDAS[metric][quality]
    except KeyError:
        raise ValueError(f"no λ for metric={metric!r} quality={quality!r}") from None


def resolve_lambda(lmbda: float | None, quality: int | None, metric: str = "mse") -> float:
    """The RD loss λ of a model: ``lmbda`` if given, else CompressAI's λ for ``quality`` and
    ``metric``; ``ValueError`` when neither is known."""
    if lmbda is not None:
        return lmbda
    if quality is None:
        raise ValueError("give --lambda or -q QUALITY (the model's training λ)")
    return lambda_for(quality, metric)


def layer_group(name: str) -> str:
    """The group (g_a, g_s, h_a, h_s, ...) of a module name; ``"other"`` if none matches."""
    for group, pattern in _GROUP_PATTERNS:
        if re.search(pattern, name):
            return group
    return "other"


@dataclass(frozen=True)
class ModelAdapter:
    """How licq builds, loads and inspects one CompressAI architecture.

    Attributes:
        name: CompressAI zoo name (``bmshj2018-hyperprior``, ...).
        cls: the CompressAI model class.
        infer_args: state dict -> constructor arguments (N, M, ...), read from weight shapes.
        size_args: names of the constructor arguments, in order (for messages and metadata).
        tiny_args: small constructor arguments for fast tests.
        zoo: whether ``compressai.zoo`` has pretrained weights under this name.
        pad_multiple: inputs are padded to a multiple of this (total spatial downsampling).
    """

    name: str
    cls: type[nn.Module]
    infer_args: Callable[[dict[str, Tensor]], tuple[int, ...]]
    size_args: tuple[str, ...]
    tiny_args: tuple[int, ...]
    zoo: bool = True
    pad_multiple: int = 64
    notes: str = field(default="", compare=False)

    def build(self, *args: int) -> nn.Module:
        return self.cls(*args)

    def quantizable_layers(self, model: nn.Module) -> dict[str, str]:
        """Ordered map ``layer name -> group`` of every quantizable leaf layer."""
        return {
            name: layer_group(name)
            for name, module in model.named_modules()
            if isinstance(module, QUANTIZABLE_TYPES)
        }

    def groups(self, model: nn.Module) -> dict[str, list[str]]:
        """Map ``group -> [layer names]`` in model order."""
        out: dict[str, list[str]] = {}
        for name, group in self.quantizable_layers(model).items():
            out.setdefault(group, []).append(name)
        return out


def _out_channels(sd: dict[str, Tensor], key: str) -> int:
    return int(sd[key].size(0))


def _n_m_from_g_a(sd: dict[str, Tensor]) -> tuple[int, int]:
    """(N, M) of the Ballé/Minnen family: g_a.0 has N outputs, g_a.6 has M."""
    return _out_channels(sd, "g_a.0.weight"), _out_channels(sd, "g_a.6.weight")


_REGISTRY: dict[str, ModelAdapter] = {}


def register(adapter: ModelAdapter) -> ModelAdapter:
    _REGISTRY[adapter.name] = adapter
    return adapter


def get_adapter(name: str) -> ModelAdapter:
    """The adapter registered under ``name`` (a CompressAI zoo name)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown architecture {name!r}; known: {', '.join(list_models())}"
        ) from None


def list_models() -> list[str]:
    """Names of every registered architecture."""
    return list(_REGISTRY)


def adapter_for_model(model: nn.Module) -> ModelAdapter:
    """The adapter whose class is exactly ``type(model)``."""
    for adapter in _REGISTRY.values():
        if type(model) is adapter.cls:
            return adapter
    raise UnknownModelError(f"no licq adapter for model class {type(model).__name__}")


register(ModelAdapter(
    "bmshj2018-factorized", FactorizedPrior,
    _n_m_from_g_a,
    ("N", "M"), (8, 12), pad_multiple=16,
))
register(ModelAdapter(
    "bmshj2018-hyperprior", ScaleHyperprior,
    _n_m_from_g_a,
    ("N", "M"), (8, 12),
))
register(ModelAdapter(
    "mbt2018-mean", MeanScaleHyperprior,
    _n_m_from_g_a,
    ("N", "M"), (8, 12),
))
register(ModelAdapter(
    "mbt2018", JointAutoregressiveHierarchicalPriors,
    _n_m_from_g_a,
    ("N", "M"), (8, 12),
))
register(ModelAdapter(
    "cheng2020-anchor", Cheng2020Anchor,
    lambda sd: (_out_channels(sd, "g_a.0.conv1.weight"),),
    ("N",), (8,),
))
register(ModelAdapter(
    "cheng2020-attn", Cheng2020Attention,
    lambda sd: (_out_channels(sd, "g_a.0.conv1.weight"),),
    ("N",), (8,),
))
# ELIC: CompressAI 1.2.8 ships the architecture but no zoo weights. Unlike CompressAI's
# from_state_dict, licq also reads M (g_a.13 is the last conv), so non-default widths load.
register(ModelAdapter(
    "elic2022-official", Elic2022Official,
    lambda sd: (_out_channels(sd, "g_a.0.weight"), _out_channels(sd, "g_a.13.weight")),
    ("N", "M"), (8, 160), zoo=False,
    notes="channel groups [16, 16, 32, 64, M-128]: M must exceed 128",
))
