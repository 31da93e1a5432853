"""Model adapters (CompressAI zoo names) and safe checkpoint loading."""

from licq.models.loading import load_model, model_from_state_dict, read_state_dict, warm_start
from licq.models.registry import (
    QUANTIZABLE_TYPES,
    ModelAdapter,
    adapter_for_model,
    get_adapter,
    lambda_for,
    layer_group,
    list_models,
    resolve_lambda,
)

__all__ = [
    "QUANTIZABLE_TYPES",
    "ModelAdapter",
    "adapter_for_model",
    "get_adapter",
    "lambda_for",
    "resolve_lambda",
    "layer_group",
    "list_models",
    "load_model",
    "model_from_state_dict",
    "read_state_dict",
    "warm_start",
]
