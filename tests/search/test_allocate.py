import itertools
import random

import pytest
import torch

from licq.api import quantizable_layer_names
from licq.quant.size import model_size
from licq.search import (
    Constraints,
    Problem,
    SearchError,
    SensitivityResult,
    adaptive,
    allocate_bits,
    dp,
    enumerate_subset,
    exhaustive,
)
from tests.conftest import tiny_model

BITS = [2, 3, 4, 5, 6, 7, 8]


def _sens(model, zeta_fn):
    names = quantizable_layer_names(model)
    zeta = {n: {str(b): zeta_fn(i, b) for b in BITS} for i, n in enumerate(names)}
    return SensitivityResult(layers=names, bits=BITS, zeta=zeta, rd_fp=1.0,
                             settings={"a_bits": 8, "observer": "mse", "a_observer": "mse"},
                             model_hash="x", seconds=0.0, evaluations=0)


def _monotone(i, b):  # sensitivity falls with bits, layers differ in scale
    return (1 + i % 5) * 2.0 ** (-2 * b)


@pytest.fixture(scope="module")
def model():
    return tiny_model("bmshj2018-hyperprior")


def _distinct(i, b):  # monotone in b, every layer with its own thresholds
    return (1 + 0.37 * i) * 2.0 ** (-2 * b)


@pytest.mark.parametrize("quantile", [0.3, 0.5, 0.7])
def test_adaptive_converges_on_monotone_sensitivities(model, quantile):
    # Layer-wise allocations form a staircase of sizes; aim at a reachable step.
    p = Problem(model, _sens(model, _distinct))
    zs = sorted(v for d in p.zeta.values() for v in d.values())
    target = p.ratio(p.threshold_bits(zs[int(quantile * len(zs))]))
    a = adaptive(p, target)
    assert abs(a.ratio - target) <= 0.01
    assert 1 <= a.iterations <= 60
    # the allocation really is the threshold rule at the β found
    assert {n: a.bits[n] for n in p.layers} == p.threshold_bits(a.extra["beta"])


def test_adaptive_reports_failure_with_best_found(model):
    p = Problem(model, _sens(model, _monotone))
    with pytest.raises(SearchError, match=r"cannot reach ratio 40\.000.*max possible") as e:
        adaptive(p, 40.0)
    assert e.value.best is not None and e.value.best.ratio == pytest.approx(p.max_ratio())
    with pytest.raises(SearchError, match="out of reach"):
        dp(p, 40.0)


@pytest.mark.parametrize("seed", range(5))
def test_dp_equals_brute_force_on_small_problems(model, seed):
    rng = random.Random(seed)
    names = quantizable_layer_names(model)
    free = rng.sample(names, 4)
    table = {n: sorted((rng.random() for _ in BITS), reverse=True) for n in names}
    sens = _sens(model, lambda i, b: table[names[i]][BITS.index(b)])
    fixed = {n: 8 for n in names if n not in free}
    p = Problem(model, sens, Constraints(fixed=fixed))
    lo = p.ratio({n: 8 for n in p.layers})
    hi = p.max_ratio()
    target = lo + rng.random() * (hi - lo)
    alloc, front = dp(p, target)
    budget = p.fp32_bytes * 8 / target
    bf_bits, bf_loss, count = enumerate_subset(p, p.layers, budget)
    assert count == 7**4
    assert alloc.predicted == pytest.approx(bf_loss, abs=1e-12)
    assert p.total_bits({n: alloc.bits[n] for n in p.layers}) <= budget
    # the Pareto front is non-increasing in size and contains the chosen point
    finite = front.loss[torch.isfinite(torch.tensor(front.loss)).numpy()]
    assert (finite[1:] <= finite[:-1] + 1e-12).all()


def test_constraints_are_respected(model):
    p = Problem(model, _sens(model, _monotone), Constraints(
        fixed={"re:^h_": 8, "g_a.0": 8}, min_bits=3, max_bits=6, float_layers=("g_s.6",)))
    for method in (lambda: adaptive(p, 4.0, tol=0.5), lambda: exhaustive(p, 4.0, tol=0.5),
                   lambda: dp(p, 4.0)[0]):
        a = method()
        assert all(a.bits[n] == 8 for n in a.bits if n.startswith("h_")) and a.bits["g_a.0"] == 8
        assert a.bits["g_s.6"] is None
        assert all(3 <= b <= 6 for n, b in a.bits.items() if n in p.layers)
        resolved = a.config.resolve(quantizable_layer_names(model))
        assert resolved["g_s.6"] is None and resolved["h_s.4"].w_bits == 8


def test_returned_size_equals_the_accounting(model):
    p = Problem(model, _sens(model, _monotone))
    alloc, _ = dp(p, 6.0)
    rep = model_size(model, alloc.config)
    assert alloc.weight_ratio == rep.weight_ratio and alloc.model_ratio == rep.ratio
    assert alloc.ratio == pytest.approx(p.ratio({n: alloc.bits[n] for n in p.layers}), rel=1e-12)
    # on the "model" basis (buffers too: the tiny model is mostly CDF tables) the same holds
    pm = Problem(model, _sens(model, _monotone), basis="model")
    am, _ = dp(pm, 1.05)
    assert am.ratio == model_size(model, am.config).ratio >= 1.05
    assert am.ratio == pytest.approx(pm.ratio({n: am.bits[n] for n in pm.layers}), rel=1e-12)


def test_dp_meets_the_target_on_the_largest_registered_models():
    """(Its time on these models is measured by run_fmpq.py: search-cost-*.json.)"""
    for arch, args in (("bmshj2018-hyperprior", (64, 96)), ("cheng2020-anchor", (128,))):
        m = __import__("licq").get_adapter(arch).build(*args)
        p = Problem(m, _sens(m, _monotone))
        a, _ = dp(p, 6.0)
        assert a.ratio >= 6.0, arch


def test_monotone_zeta_is_nonnegative_and_nonincreasing_in_bits():
    from licq.search.allocate import _monotone

    assert _monotone({2: 0.5, 3: -0.1, 4: 0.2, 8: -0.01}) == {8: 0.0, 4: 0.2, 3: 0.2, 2: 0.5}
    assert _monotone({4: 0.3, 8: 0.1}) == {4: 0.3, 8: 0.1}  # already clean: unchanged


@pytest.mark.parametrize("seed", range(4))
def test_dp_monotone_fills_the_budget_despite_negative_zeta(model, seed):
    # noisy ζ: some layers "improve" at fewer bits. Raw DP takes those bit-widths and lands
    # below the size the target allows; dp-monotone is the brute-force optimum of Σζ̃, and of
    # its ties the largest allocation that fits.
    rng = random.Random(seed)
    names = quantizable_layer_names(model)
    free = rng.sample(names, 4)
    table = {n: [rng.uniform(-0.02, 0.01) if b >= 5 else rng.uniform(0.0, 0.3) for b in BITS]
             for n in names}
    sens = _sens(model, lambda i, b: table[names[i]][BITS.index(b)])
    fixed = Constraints(fixed={n: 8 for n in names if n not in free})
    raw, mono = Problem(model, sens, fixed), Problem(model, sens, fixed, monotone=True)
    assert all(v >= 0 for d in mono.zeta.values() for v in d.values())
    target = raw.ratio({n: 8 for n in raw.layers}) * 1.02  # just below all-8-bit size
    budget = raw.fp32_bytes * 8 / target
    a, _ = dp(mono, target)
    assert a.method == "dp-monotone"
    best = None
    for combo in itertools.product(*(mono.choices[n] for n in mono.layers)):
        bits = dict(zip(mono.layers, combo, strict=True))
        if mono.total_bits(bits) <= budget:
            key = (round(mono.predicted(bits), 12), -mono.total_bits(bits))
            best = key if best is None or key < best else best
    chosen = {n: a.bits[n] for n in mono.layers}
    assert (round(a.predicted, 12), -mono.total_bits(chosen)) == best
    r, _ = dp(raw, target)
    assert target <= a.ratio <= r.ratio
    # through the public entry point
    assert allocate_bits(model, sens, target, "dp-monotone", constraints=fixed).bits == a.bits
