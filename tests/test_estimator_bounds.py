"""Every estimator's outputs stay within their bounds over its whole admissible parameter range.

The bounds: ``0 <= I_XT <= min(H_max, I_XT_max)`` (H_max = log2 n_samples; I_XT_max the
estimator's own ceiling where it has one) and ``0 <= I_TY <= H_Y`` (the plug-in label entropy),
all finite, up to ``ROUNDOFF_BITS`` = 1e-9 bits of float round-off; or a ValueError naming the
``estimator.<key>`` whose value the data cannot support. Checked as properties over random layers
(narrow and wide, constant columns and layers, duplicated rows, one class, labels that the layer
determines, tanh- and ReLU-like, float32 and float64, a few hundred samples at most) and
parameters drawn from each estimator's admissible range, its edges included, with NumPy's
random Generator at fixed seeds (no new dependency). Then the regressions of the defects found
by adversarial testing, each against a known answer or an independent reference.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from infoflow.estimators import binning, check_params, kde, per_neuron, renyi, sliced
from infoflow.estimators._common import MAX_ALPHA, ROUNDOFF_BITS, check_bounds
from infoflow.estimators.renyi import entropies, entropy_of
from infoflow.training.data import load_digits

TOL = ROUNDOFF_BITS

# ------------------------------------------------------------------------------------------
# random layers


def layers(seed: int) -> Iterator[tuple[str, Any, Any, np.ndarray]]:
    """(name, T, X, y) for a fixed set of awkward layer shapes, drawn from ``seed``."""
    rng = np.random.default_rng(seed)

    def inputs(n: int) -> np.ndarray:
        return rng.random((n, int(rng.integers(3, 40)))).astype(np.float32)  # pixels in [0, 1]

    def pre(X: np.ndarray, d: int) -> np.ndarray:
        W = rng.standard_normal((X.shape[1], d)) * rng.uniform(0.05, 4.0)
        return (X - X.mean(0)) @ W

    def labels(n: int) -> np.ndarray:
        return rng.integers(0, int(rng.integers(2, 11)), n)

    X = inputs(200)
    yield "tanh, one unit", np.tanh(pre(X, 1)).astype(np.float32), X, labels(200)
    X = inputs(60)
    relu = np.maximum(pre(X, 300), 0).astype(np.float32)  # wide, about half the units dead
    yield "wide ReLU", relu, X, labels(60)
    X = inputs(150)
    T = np.tanh(pre(X, 8)).astype(np.float32)
    T[:, :5] = 0.7  # constant columns
    yield "constant columns", T, X, labels(150)
    X = inputs(100)
    yield "constant layer", np.full((100, 4), 3.0, np.float32), X, labels(100)
    X = inputs(120)
    T = np.maximum(pre(X, 6), 0).astype(np.float32)
    T[1::2] = T[::2]  # every row twice
    T[:40] = T[0]  # and a third of them one row
    yield "duplicated rows", T, X, labels(120)
    X = inputs(90)
    yield "one class", np.tanh(pre(X, 5)).astype(np.float32), X, np.zeros(90, int)
    X = inputs(200)
    T = np.tanh(pre(X, 6)).astype(np.float32)
    rare = (T[:, 0] > np.quantile(T[:, 0], 0.9)).astype(int)  # 90/10, a function of T
    yield "imbalanced labels that T determines", T * 50, X, rare
    X = inputs(5)
    yield "five samples", np.tanh(pre(X, 3)).astype(np.float32), X, np.array([0, 1, 1, 2, 0])
    X = inputs(2)
    yield "two samples", np.tanh(pre(X, 2)).astype(np.float32), X, np.array([0, 1])
    X = inputs(80).astype(np.float64)
    yield "float64 ReLU, large", np.maximum(pre(X, 12), 0) * 1e3, X, labels(80)
    X = inputs(80)
    yield "tiny activations", (np.tanh(pre(X, 7)) * 1e-6).astype(np.float32), X, labels(80)
    X = inputs(64)
    T = torch.from_numpy(np.tanh(pre(X, 10)).astype(np.float32))
    yield "tensors", T, torch.from_numpy(X), torch.from_numpy(labels(64))


# ------------------------------------------------------------------------------------------
# parameters from each estimator's admissible range, edges included


def log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


BIAS = ("none", "miller_madow")
BELOW_ONE, ABOVE_ONE = float(np.nextafter(1.0, 0.0)), float(np.nextafter(1.0, 2.0))
TINY, HUGE = 5e-324, 1.7e308  # the smallest and (about) the largest positive float64


def binning_params(rng: np.random.Generator, n: int, spread: float) -> list[dict[str, Any]]:
    edges = [
        {"bins": 2},
        {"bins": 2**40},  # far beyond one sample per cell
        {"bins": 2, "strategy": "quantile"},
        {"bins": 10**4, "strategy": "quantile", "range": [-0.5, 0.5]},  # ~N^2 edges, merged
        {"bins": None, "bin_width": TINY},  # refused: more bins than a code holds
        {"bins": None, "bin_width": HUGE},  # one bin
        {"bins": 3, "bias_correction": "miller_madow"},
        {"bins": 2**40, "bias_correction": "miller_madow"},
        {"bins": 30, "range": [50.0, 60.0]},  # every value below the range
    ]
    drawn = []
    for _ in range(4):
        p: dict[str, Any] = {"bias_correction": str(rng.choice(["none", "miller_madow"]))}
        if rng.random() < 0.3:
            p.update(bins=None, bin_width=log_uniform(rng, 1e-4, 10.0))
        else:
            p["bins"] = int(log_uniform(rng, 2, 1e4))
            p["strategy"] = str(rng.choice(["uniform", "quantile"]))
        if rng.random() < 0.5:
            lo = rng.uniform(-2, 1)
            p["range"] = [lo, lo + log_uniform(rng, 1e-3, 10)]
        drawn.append(p)
    return edges + drawn


def kde_params(rng: np.random.Generator, n: int, spread: float) -> list[dict[str, Any]]:
    edges = [
        {"noise_var": 1e-300},  # refused where the layer's spread puts it beyond float64
        {"noise_var": HUGE},
        {"noise_var": 1e-300, "precision": "float32"},
        {"noise_var": 1e-300, "noise_scale": "variance"},
        {"noise_var": HUGE, "noise_scale": "variance"},
        {"noise_var": 1e-300, "noise_scale": "neighbour"},
        {"noise_var": 1e-3, "mc_samples": 0},
        {"noise_var": 1e-2, "mc_samples": 1},
    ]
    drawn = [
        {
            "noise_var": log_uniform(rng, 1e-8, 1e8),
            "noise_scale": str(rng.choice(["absolute", "variance", "neighbour"])),
            "precision": str(rng.choice(["auto", "float32", "float64"])),
            "mc_samples": [None, 0, int(rng.integers(1, 300))][int(rng.integers(3))],
            "seed": int(rng.integers(0, 2**31)),
        }
        for _ in range(3)
    ]
    return edges + drawn


def renyi_params(rng: np.random.Generator, n: int, spread: float) -> list[dict[str, Any]]:
    alphas = [TINY, 1e-3, 0.5, BELOW_ONE, ABOVE_ONE, 1 + 1e-10, 1.0000001, 1.01, 2.0, 500.0]
    alphas.append(MAX_ALPHA)
    edges = [{"alpha": a, "batch_size": 64} for a in alphas]
    edges += [
        {"width": w, "width_rule": rule, "batch_size": 64}
        for w in (TINY, 1e-30, 1e30, HUGE)
        for rule in ("silverman", "fixed")
    ]
    edges += [{"batch_size": 2, "batches": None}, {"batch_size": 10**6, "batches": 1}]
    drawn = []
    for _ in range(4):
        gap = 10 ** rng.uniform(-15, 0)  # a distance from 1 on a log scale
        rule = str(rng.choice(["silverman", "fixed"]))
        # a fixed width in the layer's units (the edges above try absurd ones)
        width = log_uniform(rng, 1e-2, 1e2) * (spread if rule == "fixed" else 1.0)
        drawn.append(
            {
                "alpha": float(
                    rng.choice([1 + gap, 1 - gap * 0.999, log_uniform(rng, 1e-3, MAX_ALPHA)])
                ),
                "width": width,
                "width_rule": rule,
                "batch_size": int(rng.integers(2, max(3, n + 1))),
                "batches": [None, int(rng.integers(1, 5))][int(rng.integers(2))],
                "seed": int(rng.integers(0, 2**31)),
            }
        )
    return edges + drawn


def sliced_params(rng: np.random.Generator, n: int, spread: float) -> list[dict[str, Any]]:
    edges = [{"slices": 1, "bins": 2}, {"slices": 1, "bins": n + 1}, {"slices": 200, "bins": 2}]
    for bins in (n, n + 1, 10 * n + 7):  # as many bins as samples and more
        edges += [{"slices": 4, "bins": bins, "bias_correction": bc} for bc in BIAS]
    drawn = [
        {
            "slices": int(rng.integers(1, 32)),
            "bins": int(log_uniform(rng, 2, 4 * n + 2)),
            "bias_correction": str(rng.choice(["none", "miller_madow"])),
            "seed": int(rng.integers(0, 2**31)),
        }
        for _ in range(4)
    ]
    return edges + drawn


def per_neuron_params(rng: np.random.Generator, n: int, spread: float) -> list[dict[str, Any]]:
    # per-unit tables of (bins + 2)^2 cells: the largest tested keeps them small
    edges = [{"bins": 2}, {"bins": max(2, n)}, {"max_units": 1}, {"max_units": 10**6}]
    drawn = [{"bins": int(rng.integers(2, max(3, n))), "max_units": int(rng.integers(1, 60))}]
    return edges + drawn


ESTIMATORS: dict[str, tuple[Callable[..., dict], Callable[..., list], tuple[str, ...]]] = {
    # name: (estimator, parameter sampler, keys it may refuse for a given layer)
    "binning": (binning, binning_params, ("bin_width",)),
    "kde": (kde, kde_params, ("noise_var",)),
    "renyi": (renyi, renyi_params, ()),
    "sliced": (sliced, sliced_params, ()),
    "per_neuron": (per_neuron, per_neuron_params, ()),
}


# ------------------------------------------------------------------------------------------
# the property


def bound_violations(r: dict[str, Any], n: int) -> list[str]:
    """Every way the result ``r`` on ``n`` samples leaves its bounds, as readable lines."""
    bad = []

    def within(key: str, lo: float, hi: float) -> None:
        v = r[key]
        if not (math.isfinite(v) and lo - TOL <= v <= hi + TOL):
            bad.append(f"{key} = {v!r} outside [{lo!r}, {hi!r}]")

    n_used = r["n_samples"]
    if not 0 < n_used <= n or r["H_max"] != pytest.approx(math.log2(n_used), abs=1e-12):
        bad.append(f"n_samples {n_used}, H_max {r['H_max']} for {n} samples")
    ceiling = min(r["H_max"], r.get("I_XT_max", math.inf))
    within("I_XT", 0.0, ceiling)
    within("I_TY", 0.0, r["H_Y"])
    for key in ("I_XT_lower", "I_XT_upper"):  # kde: bounds on the noisy layer's I(X;T)
        if key in r:
            within(key, 0.0, r["H_max"])
    for key in ("I_TY_lower", "I_TY_upper"):
        if key in r:
            within(key, 0.0, r["H_Y"])
    if "I_XT_mc" in r and not math.isnan(r["I_XT_mc"]):  # NaN only with mc_samples=0
        within("I_XT_mc", r["I_XT_lower"], r["I_XT_upper"])
        within("I_TY_mc", 0.0, r["H_Y"])
    if "H_X" in r:  # renyi: Renyi entropies of a batch, at most log2 of its size
        within("H_T", 0.0, r["H_max"])
        within("H_X", 0.0, r["H_max"])
    return bad


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_outputs_stay_within_their_bounds_over_the_admissible_parameters(name):
    est, sample, refusable = ESTIMATORS[name]
    failures, refused, runs = [], 0, 0
    for seed in range(2):
        rng = np.random.default_rng(1000 + seed)
        for layer, T, X, y in layers(seed):
            spread = float(np.sqrt(np.asarray(T, dtype=np.float64).var(0).sum())) or 1.0
            for params in sample(rng, len(T), spread):
                check_params(params)  # every drawn setting is admissible
                runs += 1
                try:
                    r = est(T, X, y, **params)
                except ValueError as err:  # only a data-dependent limit, named by its key
                    if not any(f"estimator.{key}" in str(err) for key in refusable):
                        failures.append(f"{layer}, {params}: refused: {err}")
                    refused += 1
                    continue
                failures += [f"{layer}, {params}: {b}" for b in bound_violations(r, len(T))]
    assert not failures, "\n".join(failures[:20])
    assert refused <= runs // 10, f"{refused} of {runs} settings refused"  # the rest was run


# ------------------------------------------------------------------------------------------
# renyi: orders near 1 and large (I_XT of -238 to -2043 bits, I_TY NaN before)


def _digits_batch(n: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    data = load_digits()
    return data.x_eval.reshape(len(data.x_eval), -1)[:n], data.y_eval[:n]  # float32


@functools.cache
def _reference_spectrum(n: int, sigma: float) -> np.ndarray:
    """Eigenvalues of K / n for the RBF Gram matrix K of the first n digits, by NumPy in
    float64 (distances by pairwise differences), normalised to a unit sum, zeros dropped."""
    Z = _digits_batch(n)[0].double().numpy()
    D = ((Z[:, None, :] - Z[None, :, :]) ** 2).sum(-1)
    lam = np.clip(np.linalg.eigvalsh(np.exp(-D / (2 * sigma**2)) / len(Z)), 0, None)
    return lam[lam > 0] / lam.sum()


def _reference_entropy(n: int, sigma: float, alpha: float) -> float:
    """Renyi entropy in bits of that matrix: the Shannon entropy of its spectrum (alpha = 1)
    or a log-sum-exp of alpha ln(lambda)."""
    lam = _reference_spectrum(n, sigma)
    if alpha == 1:
        return float(-(lam * np.log2(lam)).sum())
    return float(logsumexp(alpha * np.log(lam)) / ((1 - alpha) * math.log(2)))


@pytest.mark.parametrize("alpha", [1 + 1e-10, 1.0000001, 1 - 1e-9, ABOVE_ONE, 1.001])
def test_renyi_orders_near_one_give_the_von_neumann_entropy_in_float32(alpha):
    X, y = _digits_batch()
    r = renyi(X, X, y, alpha=alpha, width_rule="fixed", width=2.0, batch_size=256, batches=1)
    S = _reference_entropy(256, 2.0, 1.0)  # 4.99 bits; the order moves it by < 0.01 bits
    assert r["H_T"] == pytest.approx(S, abs=0.01)
    # T = X: the joint Gram K o K is X's at width sigma / sqrt(2), I = 2 S(sigma) - S(joint)
    S_joint = _reference_entropy(256, 2.0 / math.sqrt(2.0), 1.0)
    assert r["I_XT"] == pytest.approx(2 * S - S_joint, abs=0.01)
    assert 0 <= r["I_TY"] <= r["H_Y"]
    r64 = renyi(X.double(), X.double(), y, alpha=alpha, width_rule="fixed", width=2.0)
    assert r["I_XT"] == pytest.approx(r64["I_XT"], abs=1e-4)  # float32 as good as float64


@pytest.mark.parametrize("alpha", [0.5, 3.0, 50.0, 500.0, MAX_ALPHA])
def test_renyi_entropy_of_any_order_equals_a_log_sum_exp_reference(alpha):
    X, _ = _digits_batch(128)
    sigma = 2.0
    D = torch.cdist(X.double(), X.double()) ** 2
    K = torch.exp(-D / (2 * sigma**2)).float()  # float32, like a float32 layer's
    got = float(entropies(K / len(X), alpha))
    assert got == pytest.approx(_reference_entropy(128, sigma, alpha), abs=2e-4)


def test_renyi_at_large_orders_is_finite_and_tends_to_the_min_entropy():
    X, y = _digits_batch()
    g = torch.Generator().manual_seed(0)
    T = torch.relu(X @ torch.randn(64, 256, generator=g) / 8)  # a random ReLU layer
    r = [renyi(T, X, y, alpha=a) for a in (500.0, 5000.0, MAX_ALPHA)]
    for x in r:
        assert not bound_violations(x, len(X))
    assert r[0]["I_TY"] > 0.5  # not 0 either: the labels still tell the batches' clusters
    assert r[2]["H_T"] == pytest.approx(r[1]["H_T"], rel=1e-3)  # the min-entropy
    assert r[0]["H_T"] >= r[1]["H_T"] >= r[2]["H_T"]  # Renyi entropies fall with the order


def test_renyi_equal_clusters_give_log2_c_at_every_order():
    c = 8
    rng = np.random.default_rng(c)
    y = np.repeat(np.arange(c), 64 // c)
    T = rng.standard_normal((c, 5))[y] * 100  # K = 1 within a cluster, 0 across
    # (orders towards 0 count every eigenvalue above 0, the round-off ones of this rank-8
    # matrix too: log2 of its numerical rank, still within the bounds)
    for alpha in (0.5, 1 - 1e-12, 1 + 1e-10, 1.01, 2.0, 500.0, MAX_ALPHA):
        r = renyi(T, T, y, alpha=alpha, width_rule="fixed", batch_size=64)
        for key in ("I_XT", "I_TY", "H_T", "H_X"):
            assert r[key] == pytest.approx(3.0, abs=1e-5), (alpha, key)


def test_entropy_of_stays_within_zero_and_log2_of_the_support_for_every_order():
    rng = np.random.default_rng(3)
    p = torch.from_numpy(rng.dirichlet(np.full(50, 0.1), size=20))  # (20, 50), many tiny
    p[:5, 10:] = 0.0  # smaller supports
    p = p / p.sum(1, keepdim=True) * (1 + 1e-6)  # a unit sum off by float32-like rounding
    support = (p > 0).sum(1).double().log2()
    for alpha in (TINY, 1e-3, 0.5, BELOW_ONE, ABOVE_ONE, 1.01, 3.0, 700.0, MAX_ALPHA):
        S = entropy_of(p, alpha, 1)
        assert bool(torch.isfinite(S).all()) and bool((S >= 0).all()), alpha
        assert bool((S <= support + 1e-12).all()), alpha


def test_alpha_above_the_largest_order_is_refused_with_the_range():
    for alpha in (MAX_ALPHA * 1.5, math.inf, math.nan):
        with pytest.raises(ValueError) as err:
            check_params({"alpha": alpha})
        for word in ("estimator.alpha", "at most 1e+06", repr(alpha)):
            assert word in str(err.value)
    check_params({"alpha": MAX_ALPHA})


# ------------------------------------------------------------------------------------------
# renyi: extreme kernel widths (a raw LinAlgError before), large activations, order < 1


@pytest.mark.parametrize("rule", ["silverman", "fixed"])
def test_renyi_extreme_widths_give_the_exact_limits(rule):
    X, y = _digits_batch()
    g = torch.Generator().manual_seed(1)
    T = torch.tanh(X @ torch.randn(64, 32, generator=g))
    fine = renyi(T, X, y, width=1e-30, width_rule=rule)  # sigma^2 underflows: K = identity
    assert fine["H_T"] == pytest.approx(8.0, abs=1e-9)  # 256 distinct samples
    assert fine["I_XT"] == pytest.approx(8.0, abs=1e-9) and fine["saturated"]
    # T tells every sample apart, so its label: I_TY is the batch's label entropy of order 1.01
    assert fine["I_TY"] == pytest.approx(fine["H_Y"], abs=1e-3) and fine["I_TY"] <= fine["H_Y"]
    coarse = renyi(T, X, y, width=1e30, width_rule=rule)  # K = 1: nothing told apart
    # K = 1 exactly; its float32 spectrum (256, then round-off ~1e-5) reads ~1e-5 bits
    assert 0 <= coarse["H_T"] < 1e-4 and 0 <= coarse["I_XT"] < 1e-4


def test_renyi_reads_activations_too_large_for_float32_distances():
    X, y = _digits_batch()
    g = torch.Generator().manual_seed(2)
    T = torch.tanh(X @ torch.randn(64, 16, generator=g))
    small = renyi(T, X, y)
    large = renyi(T * 1e25, X, y)  # squared distances ~1e50: beyond float32
    assert large["I_XT"] == pytest.approx(small["I_XT"], abs=1e-3)  # scale invariance
    with pytest.raises(ValueError, match="float64 range"):
        renyi(T.double() * 1e160, X, y)


def test_renyi_below_order_one_keeps_I_TY_below_the_label_entropy():
    rng = np.random.default_rng(4)
    X = rng.random((256, 10))
    T = np.tanh(X @ rng.standard_normal((10, 6)))
    y = (T[:, 0] > np.quantile(T[:, 0], 0.9)).astype(int)  # 90/10 labels, a function of T
    r = renyi(T * 100, X, y, alpha=0.5, width_rule="fixed", width=0.01)  # T tells every sample
    # S_0.5 of 90/10 labels is 0.68 bits, their Shannon entropy 0.47: I_TY was 0.68
    assert r["I_TY"] == pytest.approx(r["H_Y"], abs=1e-9)
    assert r["I_TY"] <= r["H_Y"] + TOL


def test_renyi_constant_layer_carries_no_negative_information():
    rng = np.random.default_rng(5)
    X, y = rng.random((256, 10)).astype(np.float32), rng.integers(0, 3, 256)
    r = renyi(np.zeros((256, 5), np.float32), X, y)  # K = 1: the float32 spectrum is 256, ~0
    assert 0.0 <= r["I_XT"] < 1e-4 and 0.0 <= r["H_T"] < 1e-4  # was -8e-5


# ------------------------------------------------------------------------------------------
# sliced: more bins than samples (I_XT 9.21 > H_max 8.49 on digits before), Miller-Madow


def test_sliced_with_more_bins_than_samples_stays_below_its_ceilings():
    data = load_digits()
    X, y = data.x_eval.reshape(len(data.x_eval), -1), data.y_eval  # 360 samples
    g = torch.Generator().manual_seed(0)
    T = torch.relu(X @ torch.randn(64, 256, generator=g) / 8)
    r = sliced(T, X, y, bins=400)
    assert r["n_samples"] == 360 and r["I_XT_max"] == pytest.approx(math.log2(360))
    # 360 bins for 360 distinct projections: every sample its own bin, on both sides
    assert r["I_XT"] == pytest.approx(r["H_max"], abs=1e-9) and r["saturated"]
    assert r["I_XT"] <= min(r["H_max"], r["I_XT_max"]) + TOL
    assert r["I_TY"] == pytest.approx(r["H_Y"], abs=1e-9) and r["I_TY"] <= r["H_Y"] + TOL
    same = sliced(T, X, y, bins=360)  # N bins: the same cells
    assert (same["I_XT"], same["I_TY"]) == (r["I_XT"], r["I_TY"])


def test_sliced_miller_madow_stays_below_the_label_entropy_where_a_slice_determines_it():
    rng = np.random.default_rng(6)
    t = rng.standard_normal(400)
    y = np.argsort(np.argsort(t)) * 4 // 400  # quartiles of t: on the 16 bins' edges
    X = rng.random((400, 3))
    r = sliced(t[:, None], X, y, slices=4, bins=16)  # one unit: every slice is +-t
    assert r["H_Y"] == pytest.approx(2.0)
    # the plug-in I_TY is H_Y exactly; Miller-Madow added (4 - 1) / (2 N ln 2) = 0.0054 on top
    assert r["I_TY"] == pytest.approx(2.0, abs=1e-12) and r["I_TY"] <= r["H_Y"] + TOL
    plain = sliced(t[:, None], X, y, slices=4, bins=16, bias_correction="none")
    assert plain["I_TY"] == pytest.approx(2.0, abs=1e-12)


# ------------------------------------------------------------------------------------------
# kde: noise too small for the floats (NaN or a ZeroDivisionError before)


def test_kde_noise_beyond_float64_is_refused_with_the_smallest_admissible_value():
    rng = np.random.default_rng(7)
    T, y = np.tanh(rng.standard_normal((100, 5))).astype(np.float32), rng.integers(0, 3, 100)
    for scale in ("absolute", "variance", "neighbour"):
        for v in (1e-310, TINY):
            with pytest.raises(ValueError) as err:
                kde(T, None, y, noise_var=v, noise_scale=scale)
            for word in ("estimator.noise_var", "at least", repr(v)):
                assert word in str(err.value), (scale, v, str(err.value))
    r = kde(T, None, y, noise_var=1e-200, precision="float32")  # float32 overflows: float64
    assert r["precision"] == "float64" and not bound_violations(r, 100)
    assert r["I_XT"] == pytest.approx(math.log2(100), abs=1e-9)  # every sample told apart


def test_check_bounds_refuses_an_estimate_outside_its_range():
    ok = {"I_XT": 3.0, "I_TY": 1.0, "H_max": 8.0, "H_Y": 1.0, "n_samples": 256}
    assert check_bounds("x", ok) is ok
    assert check_bounds("x", {**ok, "I_TY": 1.0 + TOL / 2})  # round-off passes
    for bad in ({"I_XT": 9.2}, {"I_XT": -1e-6}, {"I_TY": math.nan}, {"I_XT": 5.0, "I_XT_max": 4}):
        with pytest.raises(RuntimeError, match="outside"):
            check_bounds("x", {**ok, **bad})
