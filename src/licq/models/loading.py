"""Safe model loading: zoo names + quality, CompressAI checkpoints, safetensors.

Checkpoints are read with ``torch.load(weights_only=True)``: a checkpoint is data, and licq never
unpickles code from it. Architecture sizes (N, M) are inferred from weight shapes.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from licq.errors import CheckpointError
from licq.models.registry import ModelAdapter, get_adapter

#: Keys under which training scripts commonly nest the model's state dict.
_NESTED_KEYS = ("state_dict", "model", "net", "model_state_dict")


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a flat ``{name: tensor}`` state dict from a checkpoint file.

    Accepts CompressAI ``.pth.tar`` / ``.pth`` / ``.pt`` files (the state dict itself, or nested
    under ``state_dict``/``model``/``net``), DataParallel ``module.`` prefixes, CompressAI's legacy
    key names, and ``.safetensors`` files.

    Raises:
        CheckpointError: missing, unreadable or corrupt file, or no state dict inside.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            obj: Any = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"corrupt safetensors file {path}: {e}") from None
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"cannot read checkpoint {path}: {first}") from None
        except Exception as e:  # the unpickler raises UnpicklingError for non-tensor payloads
            if type(e).__name__ == "UnpicklingError":
                raise CheckpointError(
                    f"{path} is not a plain weights file (weights_only=True refused it: it "
                    "contains pickled objects); re-save it as a state dict"
                ) from None
            raise
    for key in _NESTED_KEYS:
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} holds no state dict of tensors")
    return normalize_keys(obj)


def normalize_keys(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Strip DataParallel prefixes and apply CompressAI's legacy key renames."""
    from compressai.zoo.pretrained import load_pretrained

    return load_pretrained(state_dict)


def infer_args(adapter: ModelAdapter, state_dict: dict[str, Tensor]) -> tuple[int, ...]:
    try:
        return adapter.infer_args(state_dict)
    except KeyError as e:
        raise CheckpointError(
            f"checkpoint does not look like {adapter.name}: missing key {e.args[0]!r} "
            f"(needed to infer {', '.join(adapter.size_args)})"
        ) from None


def model_from_state_dict(adapter: ModelAdapter, state_dict: dict[str, Tensor]) -> nn.Module:
    """Build ``adapter``'s architecture at the sizes the weights imply and load them strictly."""
    args = infer_args(adapter, state_dict)
    try:
        model = adapter.build(*args)
    except (AssertionError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"cannot build {adapter.name}{args}: {e}") from None
    load_strict(model, state_dict, adapter.name)
    model.eval()
    # Checkpoints saved after update(force=True) carry CDF tables; build them if absent.
    model.update()
    return model


def load_strict(model: nn.Module, state_dict: dict[str, Tensor], arch: str) -> None:
    """``load_state_dict(strict=True)`` with an error message a user can act on."""
    expected = set(model.state_dict())
    given = set(state_dict)
    missing = sorted(expected - given)
    unexpected = sorted(given - expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
        raise CheckpointError(
            f"checkpoint does not match architecture {arch}: {'; '.join(parts)}"
        )
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln]
        detail = lines[0] if lines else str(e).splitlines()[0]
        raise CheckpointError(f"checkpoint does not match architecture {arch}: {detail}") from None


#: the entropy coders' tables that ``update(force=True)`` rebuilds from the weights
CODER_TABLES = ("_quantized_cdf", "_offset", "_cdf_length")


def warm_start(model: nn.Module, state_dict: dict[str, Tensor]) -> list[str]:
    """Copy the tensors of ``state_dict`` whose name and shape match ``model``'s (a warm start).

    Entropy-coder tables are skipped (they are rebuilt by ``update``). Returns the loaded names.
    """
    own = model.state_dict()
    take = {k: v for k, v in state_dict.items() if k in own and own[k].shape == v.shape
            and not k.endswith(CODER_TABLES)}
    # nn.Module's loader: CompressAI's insists on the CDF tables, which a warm start rebuilds.
    nn.Module.load_state_dict(model, take, strict=False)
    return sorted(take)


def load_model(
    arch: str,
    quality: int | None = None,
    *,
    checkpoint: str | os.PathLike | None = None,
    pretrained: bool = False,
    metric: str = "mse",
    progress: bool = True,
) -> nn.Module:
    """Load a CompressAI model by zoo name.

    Args:
        arch: zoo name, e.g. ``"bmshj2018-hyperprior"`` (see :func:`licq.list_models`).
        quality: zoo quality; with ``pretrained=True`` CompressAI downloads its released weights,
            without a checkpoint and without ``pretrained`` it builds a random-init model at the
            zoo's size for that quality.
        checkpoint: a state-dict file (``.pth.tar``, ``.pth``, ``.safetensors``); sizes are
            inferred from the weights.
        pretrained: use CompressAI's own download of the released weights (needs internet).
        metric: ``"mse"`` or ``"ms-ssim"`` (selects the zoo weights).

    Returns:
        The model in eval mode with entropy-coder tables ready for ``compress``.
    """
    adapter = get_adapter(arch)
    if checkpoint is not None:
        if pretrained:
            raise ValueError("give either a checkpoint or pretrained=True, not both")
        return model_from_state_dict(adapter, read_state_dict(checkpoint))
    if not adapter.zoo:
        if pretrained:
            raise CheckpointError(
                f"CompressAI has no pretrained weights for {arch}; pass a checkpoint"
            )
        model = adapter.build()
    else:
        from compressai import zoo

        if quality is None:
            raise ValueError(f"{arch}: give a quality (1-8) or a checkpoint")
        fn = getattr(zoo, arch.replace("-", "_"))
        try:
            model = fn(quality=quality, metric=metric, pretrained=pretrained, progress=progress)
        except (ValueError, RuntimeError) as e:
            raise CheckpointError(f"{arch} q{quality} ({metric}): {e}") from None
    model.eval()
    model.update()
    return model


ENTROPY_TABLES = (*CODER_TABLES, "scale_table")


def resize_entropy_tables(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Give the model's CDF-table buffers the shapes they have in ``state`` (tables rebuilt by
    ``update(force=True)`` change size), so that ``load_state_dict`` can copy them."""
    for mod_name, mod in model.named_modules():
        for buf_name, buf in list(mod._buffers.items()):
            saved = state.get(f"{mod_name}.{buf_name}" if mod_name else buf_name)
            if buf_name in ENTROPY_TABLES and saved is not None and buf is not None \
                    and buf.shape != saved.shape:
                mod._buffers[buf_name] = torch.empty_like(saved)
