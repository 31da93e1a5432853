"""Bit allocation from a sensitivity table: FMPQ's adaptive threshold, exhaustive, and exact DP.

All three choose one weight bit-width per layer from the candidates of a :class:`SensitivityResult`
and return a :class:`QuantConfig`; sizes come from :mod:`licq.quant.size`, so a returned
config's size is exactly what ``model_size`` reports.

* ``adaptive`` (FMPQ, arXiv 2506.01221): layer n gets the lowest b with ζ_n(b) < β; β is moved in
  large (×5) steps while the ratio is far from the target and small (×2) steps near it, then
  bisected (geometrically) once the target is bracketed, until |ratio − R| ≤ tol.
* ``exhaustive``: every distinct threshold allocation (β at every ζ value: the finest possible β
  grid), plus full enumeration of all bit combinations on a small layer subset.
* ``dp`` (beyond the paper): the exact minimum of Σ_n ζ_n(b_n) under the size budget, a
  multiple-choice knapsack solved by dynamic programming over the budget discretised in units;
  one pass gives the whole Pareto front (size → predicted loss). Among allocations of equal
  predicted loss it takes the largest that fits.
* ``dp-monotone`` (beyond the paper): the same DP on ζ cleaned of measurement noise, ζ̃_n(b) =
  max(0, max_{b' ≥ b} ζ_n(b')): quantizing a layer never lowers the RD loss, and fewer bits never
  cost less than more. ζ measured on a few crops can be slightly negative, or lower at b than at
  b + 1; raw ``dp`` then takes those bit-widths although the budget does not ask for them, and
  lands below the target size (cheng2020-anchor 4×: 5.02×). ``predicted`` is Σζ̃.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch.nn as nn

from licq.api import LayerQConfig, QuantConfig, key_matches, quantizable_layer_names
from licq.errors import LicqError
from licq.quant.size import activation_qparam_bits, layer_bits, model_size
from licq.search.sensitivity import SensitivityResult


class SearchError(LicqError):
    """The target cannot be met; carries the best allocation found."""

    def __init__(self, message: str, best: Allocation | None = None) -> None:
        super().__init__(message)
        self.best = best


@dataclass(frozen=True)
class Constraints:
    """User constraints on the allocation.

    Attributes:
        fixed: ``name or "re:<regex>" -> bits`` for layers whose weight bits are fixed.
        min_bits / max_bits: bounds on every searched layer's bits.
        a_bits: ``name or "re:<regex>" -> activation bits`` overriding the default a_bits.
        float_layers: names/regexes of layers kept float.
    """

    fixed: dict[str, int] = field(default_factory=dict)
    min_bits: int | None = None
    max_bits: int | None = None
    a_bits: dict[str, int | None] = field(default_factory=dict)
    float_layers: tuple[str, ...] = ()


def _lookup(mapping: dict, name: str, default=None):
    for key, value in mapping.items():
        if key_matches(key, name):
            return value
    return default


def _monotone(zeta: dict[int, float]) -> dict[int, float]:
    """ζ̃(b) = max(0, max_{b' ≥ b} ζ(b')) for one layer's {bits: ζ}."""
    out, run = {}, 0.0
    for b in sorted(zeta, reverse=True):
        run = max(run, float(zeta[b]))
        out[b] = run
    return out


@dataclass
class Allocation:
    bits: dict[str, int | None]  # layer -> weight bits (None: float)
    config: QuantConfig
    model_bytes: float
    ratio: float  # on the problem's basis (weights by default)
    model_ratio: float  # every parameter and buffer
    weight_ratio: float  # every parameter
    quantized_layers_ratio: float
    predicted: float  # Σ ζ_n(b_n) over searched layers
    method: str
    iterations: int = 0
    evaluations: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {"method": self.method, "ratio": self.ratio, "model_bytes": self.model_bytes,
                "model_ratio": self.model_ratio, "weight_ratio": self.weight_ratio,
                "quantized_layers_ratio": self.quantized_layers_ratio,
                "predicted_zeta_sum": self.predicted, "iterations": self.iterations,
                "evaluations": self.evaluations, "seconds": self.seconds,
                "bits": self.bits, **self.extra}


class Problem:
    """The allocation problem for one model, sensitivity table and constraints.

    Precomputes, for every searched layer and candidate b, its exact size in bits and ζ; the
    rest of the model (float parts, fixed layers) is a constant. ``basis`` is what a ratio
    measures: ``"weights"`` (every parameter; the default for targets) or ``"model"`` (every
    parameter and buffer, CDF tables included); see :mod:`licq.quant.size`. ``monotone``
    replaces every ζ_n(b) by max(0, max_{b' ≥ b} ζ_n(b')) (see ``dp-monotone`` in the module doc).
    """

    def __init__(self, model: nn.Module, sens: SensitivityResult,
                 constraints: Constraints | None = None, basis: str = "weights",
                 monotone: bool = False) -> None:
        if basis not in ("weights", "model"):
            raise ValueError(f"basis must be 'weights' or 'model', got {basis!r}")
        self.basis = basis
        self.model = model
        self.sens = sens
        self.c = constraints or Constraints()
        s = sens.settings
        self.base = LayerQConfig(8, s["a_bits"], observer=s["observer"], a_observer=s["a_observer"])
        names = quantizable_layer_names(model)
        modules = dict(model.named_modules())
        table = sens.table()
        self.fixed: dict[str, int | None] = {}
        for n in names:
            if any(key_matches(k, n) for k in self.c.float_layers):
                self.fixed[n] = None
            elif (b := _lookup(self.c.fixed, n)) is not None:
                self.fixed[n] = b
            elif n not in table:
                raise ValueError(f"layer {n!r} has no sensitivity; fix its bits or rerun sensitivity")
        self.layers = [n for n in names if n not in self.fixed]
        lo = self.c.min_bits or 0
        hi = self.c.max_bits or 99
        self.choices: dict[str, list[int]] = {}
        for n in self.layers:
            cand = sorted(b for b in table[n] if lo <= b <= hi)
            if not cand:
                raise ValueError(f"layer {n!r}: no candidate bits within [{lo}, {hi}]")
            self.choices[n] = cand
        self.zeta = {n: {b: table[n][b] for b in self.choices[n]} for n in self.layers}
        self.monotone = monotone
        if monotone:
            self.zeta = {n: _monotone(z) for n, z in self.zeta.items()}
        self.cost = {n: {b: self._bits(n, modules[n], b) for b in self.choices[n]}
                     for n in self.layers}
        # constant part: everything but the searched layers' quantized tensors
        probe = {n: self.layer_config(n, min(self.choices[n])) for n in self.layers}
        probe.update({n: self.layer_config(n, b) if b is not None else None
                      for n, b in self.fixed.items()})
        rep = model_size(model, probe)
        total = rep.weight_bytes if basis == "weights" else rep.model_bytes
        self.fp32_bytes = rep.fp32_weight_bytes if basis == "weights" else rep.fp32_bytes
        searched_bits = sum(self.cost[n][min(self.choices[n])] for n in self.layers)
        self.const_bits = total * 8 - searched_bits

    def _bits(self, name: str, mod: nn.Module, b: int) -> int:
        cfg = self.layer_config(name, b)
        bits = layer_bits(name, mod, cfg)[0]
        return bits - activation_qparam_bits(cfg) if self.basis == "weights" else bits

    def layer_config(self, name: str, bits: int) -> LayerQConfig:
        a = _lookup(self.c.a_bits, name, self.base.a_bits)
        return replace(self.base, w_bits=bits, a_bits=a)

    def total_bits(self, bits: dict[str, int]) -> float:
        return self.const_bits + sum(self.cost[n][bits[n]] for n in self.layers)

    def ratio(self, bits: dict[str, int]) -> float:
        return self.fp32_bytes * 8 / self.total_bits(bits)

    def predicted(self, bits: dict[str, int]) -> float:
        return float(sum(self.zeta[n][bits[n]] for n in self.layers))

    def max_ratio(self) -> float:
        return self.ratio({n: min(self.choices[n]) for n in self.layers})

    def allocation(self, bits: dict[str, int], method: str, **kw) -> Allocation:
        full: dict[str, int | None] = {**self.fixed, **bits}
        layers = {n: (self.layer_config(n, b) if b is not None else None) for n, b in full.items()}
        cfg = QuantConfig(default=None, layers=layers)
        rep = model_size(self.model, cfg)
        ratio = rep.weight_ratio if self.basis == "weights" else rep.ratio
        return Allocation(full, cfg, rep.model_bytes, ratio, rep.ratio, rep.weight_ratio,
                          rep.quantized_layers_ratio, self.predicted(bits), method,
                          extra={"basis": self.basis, **kw.pop("extra", {})}, **kw)

    # -- FMPQ threshold rule ------------------------------------------------------------------
    def threshold_bits(self, beta: float) -> dict[str, int]:
        """Each layer: the lowest candidate b with ζ_n(b) < β (the highest if none is)."""
        out = {}
        for n in self.layers:
            ok = [b for b in self.choices[n] if self.zeta[n][b] < beta]
            out[n] = min(ok) if ok else max(self.choices[n])
        return out


def adaptive(problem: Problem, target_ratio: float, tol: float = 0.01, beta0: float = 1e-3,
             far: float = 0.1, max_iter: int = 100) -> Allocation:
    """FMPQ's adaptive β search (see module doc). Raises :class:`SearchError` with the best
    allocation found when no β gives a ratio within ``tol`` of the target."""
    t0 = time.perf_counter()
    beta, lo, hi = beta0, None, None  # lo: β with ratio < target; hi: β with ratio > target
    best, best_gap = None, float("inf")
    for it in range(1, max_iter + 1):
        bits = problem.threshold_bits(beta)
        r = problem.ratio(bits)
        gap = r - target_ratio
        if abs(gap) < best_gap:
            best, best_gap = (bits, it), abs(gap)
        if abs(gap) <= tol:
            return problem.allocation(bits, "adaptive", iterations=it,
                                      seconds=time.perf_counter() - t0, extra={"beta": beta})
        if gap < 0:
            lo = beta
        else:
            hi = beta
        if lo is not None and hi is not None:
            beta = (lo * hi) ** 0.5
            if hi / lo < 1 + 1e-9:
                break
        else:
            step = 5.0 if abs(gap) / target_ratio > far else 2.0
            beta = beta * step if gap < 0 else beta / step
            if beta > 1e9 or beta < 1e-12:
                break
    assert best is not None
    alloc = problem.allocation(best[0], "adaptive", iterations=best[1],
                               seconds=time.perf_counter() - t0)
    raise SearchError(
        f"adaptive search cannot reach ratio {target_ratio:.3f}±{tol} (max possible "
        f"{problem.max_ratio():.3f}); best found {alloc.ratio:.3f}", alloc)


def exhaustive(problem: Problem, target_ratio: float, tol: float = 0.01) -> Allocation:
    """The finest β grid: every distinct threshold allocation; the lowest predicted loss among
    those within ``tol`` of the target (raises :class:`SearchError` if none is)."""
    t0 = time.perf_counter()
    betas = sorted({v for d in problem.zeta.values() for v in d.values()})
    betas = [betas[0] - 1.0] + [np.nextafter(b, np.inf) for b in betas]
    best, closest, evaluations = None, None, 0
    seen = set()
    for beta in betas:
        bits = problem.threshold_bits(float(beta))
        key = tuple(bits.values())
        if key in seen:
            continue
        seen.add(key)
        evaluations += 1
        gap = abs(problem.ratio(bits) - target_ratio)
        if closest is None or gap < closest[0]:
            closest = (gap, bits)
        if gap <= tol:
            p = problem.predicted(bits)
            if best is None or p < best[0]:
                best = (p, bits)
    if best is None:
        assert closest is not None
        alloc = problem.allocation(closest[1], "exhaustive", evaluations=evaluations,
                                   seconds=time.perf_counter() - t0)
        raise SearchError(f"no threshold allocation within {tol} of ratio {target_ratio:.3f}; "
                          f"closest {alloc.ratio:.3f}", alloc)
    return problem.allocation(best[1], "exhaustive", evaluations=evaluations,
                              seconds=time.perf_counter() - t0)


def enumerate_subset(problem: Problem, layers: Sequence[str], budget_bits: float) -> tuple[dict, float, int]:
    """Brute force over every bit combination of ``layers`` (others at their minimum bits):
    the lowest Σζ with total bits ≤ ``budget_bits``. Returns (bits, loss, evaluations)."""
    rest = {n: min(problem.choices[n]) for n in problem.layers if n not in layers}
    best, best_loss, count = None, float("inf"), 0
    for combo in itertools.product(*(problem.choices[n] for n in layers)):
        count += 1
        bits = {**rest, **dict(zip(layers, combo, strict=True))}
        if problem.total_bits(bits) <= budget_bits:
            loss = problem.predicted(bits)
            if loss < best_loss:
                best, best_loss = bits, loss
    return best, best_loss, count


@dataclass
class ParetoFront:
    bytes: np.ndarray  # model bytes at each budget unit
    loss: np.ndarray  # minimum Σζ achievable within that size (inf if infeasible)


def dp(problem: Problem, target_ratio: float, units: int = 20000) -> tuple[Allocation, ParetoFront]:
    """Exact multiple-choice knapsack: min Σ_n ζ_n(b_n) s.t. total size ≤ fp32 / target_ratio.

    The searched layers' costs are rounded *up* to units of ``unit`` bits (so every returned
    allocation truly fits); ``units`` sets the resolution of the budget axis. Of the sizes with
    the minimum loss, the largest is taken (with ``problem.monotone`` every layer at ζ̃ = 0 ties,
    and the allocation then fills the budget instead of stopping at the smallest such size).
    """
    t0 = time.perf_counter()
    budget_bits = problem.fp32_bytes * 8 / target_ratio - problem.const_bits
    max_bits = sum(max(problem.cost[n].values()) for n in problem.layers)
    unit = max(max_bits / units, 1.0)
    cap = int(np.floor(min(budget_bits, max_bits) / unit)) if budget_bits > 0 else -1
    if cap < 0 or budget_bits < sum(min(problem.cost[n].values()) for n in problem.layers):
        raise SearchError(f"ratio {target_ratio:.3f} is out of reach (max possible "
                          f"{problem.max_ratio():.3f})")
    n_units = int(np.ceil(max_bits / unit)) + 1
    inf = np.inf
    best = np.full(n_units, inf)
    best[0] = 0.0
    choice = np.zeros((len(problem.layers), n_units), dtype=np.int16)
    for li, n in enumerate(problem.layers):
        new = np.full(n_units, inf)
        arg = np.zeros(n_units, dtype=np.int16)
        for bi, b in enumerate(problem.choices[n]):
            w = int(np.ceil(problem.cost[n][b] / unit))
            cand = np.full(n_units, inf)
            cand[w:] = best[: n_units - w] + problem.zeta[n][b]
            better = cand < new
            new[better] = cand[better]
            arg[better] = bi
        best = new
        choice[li] = arg
    # best[c]: min loss with total units exactly c; the front is its running minimum
    front_loss = np.minimum.accumulate(best)
    within = best[: cap + 1]
    c = int(np.flatnonzero(within <= within.min() + 1e-12)[-1])
    bits = {}
    for li in range(len(problem.layers) - 1, -1, -1):
        n = problem.layers[li]
        b = problem.choices[n][choice[li, c]]
        bits[n] = b
        c -= int(np.ceil(problem.cost[n][b] / unit))
    assert c == 0
    bits = {n: bits[n] for n in problem.layers}
    front = ParetoFront(
        bytes=(problem.const_bits + np.arange(n_units) * unit) / 8, loss=front_loss)
    method = "dp-monotone" if problem.monotone else "dp"
    alloc = problem.allocation(bits, method, seconds=time.perf_counter() - t0,
                               extra={"unit_bits": unit, "budget_bytes": problem.fp32_bytes / target_ratio})
    return alloc, front



METHODS = ("adaptive", "exhaustive", "dp", "dp-monotone")


def allocate_bits(
    model: nn.Module, sens: SensitivityResult, target_ratio: float, method: str = "dp", *,
    constraints: Constraints | None = None, basis: str = "weights", tol: float = 0.01,
) -> Allocation:
    """One bit allocation of ``model`` for ``target_ratio`` by ``method`` (see module doc).

    Raises:
        SearchError: the target cannot be met (``.best`` holds the closest allocation, if any).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    problem = Problem(model, sens, constraints, basis=basis, monotone=method == "dp-monotone")
    if method == "adaptive":
        return adaptive(problem, target_ratio, tol=tol)
    if method == "exhaustive":
        return exhaustive(problem, target_ratio, tol=tol)
    return dp(problem, target_ratio)[0]
