"""FMPQ mixed-precision search: sensitivity analysis and bit allocation."""

from licq.search.allocate import (
    Allocation,
    Constraints,
    ParetoFront,
    Problem,
    SearchError,
    adaptive,
    allocate_bits,
    dp,
    enumerate_subset,
    exhaustive,
)
from licq.search.sensitivity import (
    SensitivityResult,
    SensitivitySettings,
    cache_key,
    compute_sensitivity,
    model_hash,
)

__all__ = [
    "Allocation",
    "Constraints",
    "ParetoFront",
    "Problem",
    "SearchError",
    "SensitivityResult",
    "SensitivitySettings",
    "adaptive",
    "allocate_bits",
    "cache_key",
    "compute_sensitivity",
    "dp",
    "enumerate_subset",
    "exhaustive",
    "model_hash",
]
