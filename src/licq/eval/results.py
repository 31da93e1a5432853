"""Results files in CompressAI's ``eval_model`` JSON format, plus a ``"licq"`` object.

``{"name", "description", "results": {"psnr-rgb": [...], "ms-ssim-rgb": [...], "bpp": [...],
"encoding_time": [...], "decoding_time": [...]}, "licq": {...}}`` with one list entry per quality
point, so CompressAI's own plotting reads licq's files and any two files compare by BD-rate.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from licq._provenance import atomic_write_bytes, provenance
from licq.errors import LicqError

#: The metrics CompressAI's ``eval_model`` writes, in its order.
RESULT_KEYS = ("psnr-rgb", "ms-ssim-rgb", "bpp", "encoding_time", "decoding_time")


class ResultsFormatError(LicqError):
    """A results file that is not in CompressAI's ``eval_model`` format."""


def make_results(
    name: str,
    points: Sequence[dict[str, float]],
    *,
    description: str = "",
    licq: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble a results object from per-quality mean metrics (one dict per quality point)."""
    keys = list(RESULT_KEYS) + sorted(
        {k for p in points for k in p if k not in RESULT_KEYS and isinstance(p[k], float | int)}
    )
    results = {k: [float(p[k]) for p in points] for k in keys if all(k in p for p in points)}
    obj: dict[str, Any] = {"name": name, "description": description, "results": results}
    meta = dict(licq or {})
    meta.setdefault("provenance", provenance())
    obj["licq"] = meta
    validate_results(obj)
    return obj


def validate_results(obj: Any, source: str = "results") -> None:
    """Raise :class:`ResultsFormatError` unless ``obj`` follows CompressAI's format."""
    if not isinstance(obj, dict):
        raise ResultsFormatError(f"{source}: top level must be an object")
    for key in ("name", "results"):
        if key not in obj:
            raise ResultsFormatError(f"{source}: missing {key!r}")
    res = obj["results"]
    if not isinstance(res, dict) or "bpp" not in res:
        raise ResultsFormatError(f"{source}: 'results' must be an object with a 'bpp' list")
    n = None
    for key, values in res.items():
        if not isinstance(values, list) or not all(isinstance(v, int | float) for v in values):
            raise ResultsFormatError(f"{source}: results[{key!r}] must be a list of numbers")
        if n is not None and len(values) != n:
            raise ResultsFormatError(f"{source}: results lists differ in length ({key!r})")
        n = len(values)
    if not n:
        raise ResultsFormatError(f"{source}: results are empty")


def write_results(obj: dict[str, Any], path: str | os.PathLike) -> None:
    validate_results(obj, str(path))
    text = json.dumps(obj, indent=1, allow_nan=True, default=_jsonable)
    atomic_write_bytes(path, (text + "\n").encode())


def read_results(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultsFormatError(f"results file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ResultsFormatError(f"{path}: not JSON ({e})") from None
    validate_results(obj, str(path))
    return obj


def _jsonable(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, float) and math.isnan(o):
        return None
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
