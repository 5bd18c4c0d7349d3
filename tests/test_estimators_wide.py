"""Estimators for wide layers: kde's Monte Carlo estimate and noise scales, renyi, sliced,
the column-block paths of layers wider than ``_common.WIDE_UNITS`` (against the unchunked
computation, their invariances and memory) and the cost warning (issue 23).

Closed forms: the exact (quadrature) entropy of small Gaussian mixtures for kde's Monte Carlo
estimate; equal well-separated clusters and identity Gram matrices for renyi; the average over
directions of -1/2 log2(1 - rho^2) for jointly Gaussian (X, T), computed independently of the
estimator by a large Monte Carlo over directions, for sliced.
"""

from __future__ import annotations

import functools
import importlib
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from test_estimators import MIXTURES, exact_mixture_mi

from infoflow.estimators import _common, _memo, check_params, kde, renyi, saturation_warning, sliced
from infoflow.estimators._common import hash_rows
from infoflow.estimators.binning import bin_codes, binning, hash_quantile_bins, quantile_edges
from infoflow.estimators.cost import MAX_SECONDS, cost_warning, estimate_cost
from infoflow.estimators.kde import NN_QUERIES
from infoflow.estimators.per_neuron import per_neuron
from infoflow.estimators.renyi import power_sums
from infoflow.estimators.saturation import saturation_summary
from infoflow.estimators.sliced import directions, quantile_codes
from infoflow.spec import ConfigError, validate

# ------------------------------------------------------------------------------------------
# kde: the Monte Carlo point estimate (Goldfeld et al. 2019)


@pytest.mark.parametrize("case", list(MIXTURES))
def test_kde_monte_carlo_lies_between_the_bounds_and_equals_quadrature(case):
    make, v = MIXTURES[case]
    T = make(np.random.default_rng(0))
    y = (T[:, 0] > 0).astype(int)
    I_XT, I_TY = exact_mixture_mi(T, y, v)
    r = kde(T, None, y, noise_var=v, mc_samples=len(T) * 300)
    assert r["I_XT_lower"] < r["I_XT_mc"] < r["I_XT_upper"]  # strict: not clipped onto a bound
    assert r["I_XT_mc"] == pytest.approx(I_XT, abs=max(4 * r["I_XT_mc_se"], 0.005))
    assert r["I_TY_mc"] == pytest.approx(I_TY, abs=0.02)


def test_kde_monte_carlo_is_exact_for_separated_clusters_and_identical_points():
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(5), 8)
    r = kde(rng.standard_normal((5, 4))[y] * 100, None, y)
    assert r["I_XT_mc"] == pytest.approx(math.log2(5), abs=1e-9)
    assert r["I_TY_mc"] == pytest.approx(math.log2(5), abs=1e-9)
    r = kde(np.ones((30, 3)), None, np.arange(30) % 3)
    assert r["I_XT_mc"] == pytest.approx(0.0, abs=1e-12)
    assert r["I_TY_mc"] == pytest.approx(0.0, abs=1e-12)


def test_kde_monte_carlo_is_reproducible_from_its_seed_and_independent_of_the_tiles():
    rng = np.random.default_rng(1)
    T, y = rng.standard_normal((300, 6)), rng.integers(0, 4, 300)
    a = kde(T, None, y, seed=5)
    assert kde(T, None, y, seed=5) == a
    b = kde(T, None, y, seed=5, block=64)
    assert b["I_XT_mc"] == pytest.approx(a["I_XT_mc"], abs=1e-10)
    c = kde(T, None, y, seed=6)
    assert c["I_XT_mc"] != a["I_XT_mc"]
    assert c["I_XT_mc"] == pytest.approx(a["I_XT_mc"], abs=5 * a["I_XT_mc_se"])
    assert c["I_XT_upper"] == a["I_XT_upper"]  # the bounds do not depend on the seed


def test_kde_without_monte_carlo_keeps_the_bounds_and_leaves_its_columns_empty():
    rng = np.random.default_rng(2)
    T, y = rng.standard_normal((100, 3)), rng.integers(0, 3, 100)
    r, full = kde(T, None, y, mc_samples=0), kde(T, None, y)
    assert math.isnan(r["I_XT_mc"]) and math.isnan(r["I_TY_mc"])
    assert r["I_XT_upper"] == full["I_XT_upper"] and r["I_XT"] == full["I_XT"]


# ------------------------------------------------------------------------------------------
# kde: scale-aware noise


def test_kde_relative_noise_is_invariant_to_the_layer_scale():
    rng = np.random.default_rng(4)
    T, y = np.tanh(rng.standard_normal((400, 8))), rng.integers(0, 5, 400)
    for scale in ("variance", "neighbour"):
        a = kde(T, None, y, noise_var=0.5, noise_scale=scale)
        b = kde(T * 37.0, None, y, noise_var=0.5, noise_scale=scale)
        assert b["noise_var_used"] == pytest.approx(a["noise_var_used"] * 37.0**2, rel=1e-5)
        for key in ("I_XT_upper", "I_XT_lower", "I_XT_mc", "I_TY_upper"):
            assert b[key] == pytest.approx(a[key], abs=1e-4), (scale, key)
    absolute = kde(T * 37.0, None, y, noise_var=0.5)
    assert absolute["I_XT_upper"] > a["I_XT_upper"] + 1.0  # absolute noise: far finer


def test_kde_noise_scales_are_the_documented_multiples():
    rng = np.random.default_rng(5)
    T = rng.standard_normal((200, 4)) * [1.0, 2.0, 3.0, 4.0]
    T[:10] = T[10]  # ten duplicates of one row: the nearest *distinct* neighbour counts
    y = np.zeros(200, int)
    var = kde(T, None, y, noise_var=0.3, noise_scale="variance")["noise_var_used"]
    assert var == pytest.approx(0.3 * T.var(0).mean(), rel=1e-9)
    D = ((T[:, None, :] - T[None, :, :]) ** 2).sum(-1)
    D[D < 1e-12] = np.inf
    assert len(T) <= NN_QUERIES  # every sample is a query here
    nn = kde(T, None, y, noise_var=0.3, noise_scale="neighbour")["noise_var_used"]
    assert nn == pytest.approx(0.3 * np.median(D.min(1)), rel=1e-4)
    assert kde(np.ones((20, 2)), None, y[:20], noise_scale="neighbour")["I_XT_upper"] == 0


def test_kde_neighbour_noise_means_the_same_on_a_tanh_and_a_wide_relu_layer():
    """One setting, two layers of unrelated scale and width seeing the same 8 clusters."""
    rng = np.random.default_rng(6)
    y = rng.integers(0, 8, 600)
    narrow = np.tanh(rng.standard_normal((8, 10))[y] + 0.3 * rng.standard_normal((600, 10)))
    wide = np.maximum(rng.standard_normal((8, 1000))[y] * 5 + rng.standard_normal((600, 1000)), 0)
    r = [kde(T, None, y, noise_var=1.0, noise_scale="neighbour") for T in (narrow, wide)]
    assert [x["saturated"] for x in r] == [False, False]
    absolute = [kde(T, None, y, noise_var=1.0) for T in (narrow, wide)]
    assert absolute[1]["saturated"] and not absolute[0]["saturated"]


# ------------------------------------------------------------------------------------------
# renyi: closed forms and invariances


@pytest.mark.parametrize("c", [2, 4, 8])
def test_renyi_well_separated_equal_clusters_give_log2_c(c):
    rng = np.random.default_rng(c)
    y = np.repeat(np.arange(c), 64 // c)
    T = rng.standard_normal((c, 5))[y] * 100  # K = 1 within a cluster, 0 across
    r = renyi(T, T, y, width_rule="fixed", width=1.0, batch_size=64)
    for key in ("I_XT", "I_TY", "H_T", "H_X"):
        assert r[key] == pytest.approx(math.log2(c), abs=1e-6), key
    noisy = renyi(T + 0.01 * rng.standard_normal(T.shape), T, y, width_rule="fixed", batch_size=64)
    assert noisy["I_XT"] == pytest.approx(math.log2(c), abs=1e-6)  # H(X, T) = H(T) still


def test_renyi_identity_gram_gives_log2_n():
    rng = np.random.default_rng(0)
    T = rng.standard_normal((100, 20)) * 100  # every pair far apart at width 1: K = I
    r = renyi(T, T, np.arange(100) % 4, width_rule="fixed", width=1.0, batch_size=100)
    assert r["H_T"] == pytest.approx(math.log2(100), abs=1e-9)
    assert r["I_XT"] == pytest.approx(math.log2(100), abs=1e-9)
    assert r["I_TY"] == pytest.approx(2.0, abs=1e-9)  # T determines Y: I = S(Y) = log2 4
    A = torch.eye(50, dtype=torch.float64) / 50
    assert float(power_sums(A, 1.01).log2() / -0.01) == pytest.approx(math.log2(50))


def _layer_and_inputs(seed=0, n=300):
    rng = np.random.default_rng(seed)
    X = rng.random((n, 30))
    T = np.tanh(X @ rng.standard_normal((30, 12)))
    y = (T[:, 0] > 0).astype(int) + 2 * (T[:, 1] > 0)
    return T, X, y


def test_renyi_is_invariant_to_permutation_rotation_translation_and_common_scaling():
    T, X, y = _layer_and_inputs()
    kw = {"batch_size": 300}  # one batch: the permutation leaves its Gram spectrum unchanged
    base = renyi(T, X, y, **kw)
    perm = np.random.default_rng(1).permutation(len(T))
    Q, _ = np.linalg.qr(np.random.default_rng(2).standard_normal((12, 12)))
    for other in (
        renyi(T[perm], X[perm], y[perm], **kw),
        renyi(T @ Q, X, y, **kw),
        renyi(T * 13.0 + 4.0, X, y, **kw),
    ):
        for key in ("I_XT", "I_TY", "H_T"):
            assert other[key] == pytest.approx(base[key], abs=1e-6), key
    assert 0.2 < base["I_TY"] < base["H_Y"] and 0.2 < base["I_XT"] < base["I_XT_max"]
    fixed = renyi(T * 13.0, X, y, width_rule="fixed", **kw)  # a fixed width is not invariant
    assert fixed["H_T"] > renyi(T, X, y, width_rule="fixed", **kw)["H_T"] + 0.5


def test_renyi_averages_seeded_batches_within_their_spread():
    T, X, y = _layer_and_inputs(3, n=1200)
    a = renyi(T, X, y, batch_size=100, batches=None, seed=0)
    assert a["n_samples"] == 1200 and renyi(T, X, y, batch_size=100, batches=None) == a
    b = renyi(T, X, y, batch_size=100, batches=None, seed=1)  # another partition
    assert b["I_XT"] == pytest.approx(a["I_XT"], abs=4 * math.hypot(a["I_XT_se"], b["I_XT_se"]))
    assert renyi(T, X, y, batch_size=100, batches=3)["n_samples"] == 300


def test_renyi_alpha_2_without_eigenvalues_equals_the_eigenvalue_sum():
    T, X, y = _layer_and_inputs(4, n=120)
    A = torch.exp(-(torch.cdist(torch.from_numpy(T), torch.from_numpy(T)) ** 2)) / 120
    lam = torch.linalg.eigvalsh(A).clamp(min=0)
    assert float(power_sums(A, 2.0)) == pytest.approx(float((lam**2).sum()), rel=1e-10)
    r = renyi(T, X, y, alpha=2.0, batch_size=120)
    assert 0 <= r["I_XT"] <= min(r["H_T"], r["H_X"]) + 1e-9


def test_renyi_ranges_hold_on_random_layers():
    rng = np.random.default_rng(7)
    for _ in range(3):
        n, d = int(rng.integers(40, 400)), int(rng.integers(1, 50))
        T, X = rng.standard_normal((n, d)) * rng.uniform(0.1, 10), rng.random((n, 9))
        y = rng.integers(0, 5, n)
        for alpha in (0.5, 1.01, 2.0, 3.0):
            r = renyi(np.maximum(T, 0), X, y, alpha=alpha, batch_size=64)
            assert 0 <= r["I_XT"] <= min(r["H_T"], r["H_X"]) + 1e-9
            assert 0 <= r["I_TY"] <= r["H_T"] + 1e-9
            assert r["H_T"] <= math.log2(min(64, n)) + 1e-9


def test_renyi_and_sliced_need_the_inputs_and_refuse_nan():
    T, y = np.zeros((10, 2)), np.zeros(10, int)
    for est in (renyi, sliced):
        with pytest.raises(ValueError, match="needs the inputs X"):
            est(T, None, y)
    T, X, y = _layer_and_inputs(1, n=50)
    T[7, 3] = np.nan
    for est in (renyi, sliced):
        with pytest.raises(ValueError, match="finite"):
            est(T, X, y)
        with pytest.raises(ValueError, match="finite"):
            est(X[:, :12], np.where(T > 0.5, np.inf, X[:, :12]), y)


# ------------------------------------------------------------------------------------------
# sliced: closed form for jointly Gaussian (X, T), independence, invariances


def sliced_gaussian_mi(S_xx, S_xt, S_tt, n_dirs=200_000, seed=123) -> float:
    """E over independent uniform directions of -1/2 log2(1 - rho^2), by Monte Carlo in NumPy."""
    g = np.random.default_rng(seed)
    th = g.standard_normal((n_dirs, len(S_xx)))
    ph = g.standard_normal((n_dirs, len(S_tt)))
    cov = np.einsum("mi,ij,mj->m", th, S_xt, ph)
    var_x = np.einsum("mi,ij,mj->m", th, S_xx, th)
    var_t = np.einsum("mi,ij,mj->m", ph, S_tt, ph)
    return float(np.mean(-0.5 * np.log2(1 - cov**2 / (var_x * var_t))))


GAUSSIAN_CASES = {  # (d_x, d_t, noise sd, seed)
    "2-d to 2-d": (2, 2, 0.3, 0),
    "3-d to 2-d": (3, 2, 0.5, 1),
    "4-d to 3-d, noisy": (4, 3, 1.0, 2),
}


@pytest.mark.parametrize("case", list(GAUSSIAN_CASES))
def test_sliced_equals_the_gaussian_closed_form(case):
    d_x, d_t, sd, seed = GAUSSIAN_CASES[case]
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((d_t, d_x))
    X = rng.standard_normal((20_000, d_x))
    T = X @ A.T + sd * rng.standard_normal((20_000, d_t))
    exact = sliced_gaussian_mi(np.eye(d_x), A.T, A @ A.T + sd**2 * np.eye(d_t))
    r = sliced(T, X, np.zeros(20_000, int), slices=500, bins=32)
    assert r["I_XT"] == pytest.approx(exact, abs=3 * r["I_XT_se"] + 0.02)
    # over the estimator's own directions the only error left is the 1-D estimator's
    th, ph = directions(d_x, 500, 0).numpy(), directions(d_t, 500, 1).numpy()
    S_tt = A @ A.T + sd**2 * np.eye(d_t)
    rho2 = (th.T @ A.T @ ph).diagonal() ** 2 / (
        (th * th).sum(0) * np.einsum("im,ij,jm->m", ph, S_tt, ph)
    )
    assert r["I_XT"] == pytest.approx(np.mean(-0.5 * np.log2(1 - rho2)), abs=0.02)


def test_sliced_independent_variables_give_about_zero():
    rng = np.random.default_rng(8)
    X, T, y = (
        rng.random((10_000, 20)),
        rng.standard_normal((10_000, 30)),
        rng.integers(0, 10, 10_000),
    )
    r = sliced(T, X, y, slices=64)
    assert r["I_XT"] < 0.005 and r["I_TY"] < 0.005
    plain = sliced(T, X, y, slices=64, bias_correction="none")
    assert 0.005 < plain["I_XT"] < 0.03  # the plug-in bias (bins - 1)^2 / (2 N ln 2) = 0.016


def test_sliced_label_determined_by_a_projection_gives_the_label_entropy():
    rng = np.random.default_rng(9)
    y = np.repeat(np.arange(4), 2000)  # class boundaries fall on the 16 bins' edges
    T = (y[:, None] * 10.0 + rng.standard_normal((8000, 1))).astype(np.float32)  # 1 unit
    r = sliced(T, T, y, slices=4, bins=16)
    assert r["I_TY"] == pytest.approx(r["H_Y"], abs=0.01)
    assert r["I_XT_max"] == 4.0 and r["I_XT"] <= 4.0 + 0.01


def test_sliced_is_reproducible_and_invariant_to_order_translation_and_scaling():
    T, X, y = _layer_and_inputs(5, n=2000)
    base = sliced(T, X, y)
    assert sliced(T, X, y) == base
    assert sliced(T, X, y, seed=1)["I_XT"] != base["I_XT"]
    perm = np.random.default_rng(1).permutation(len(T))
    for other in (sliced(T[perm], X[perm], y[perm]), sliced(T * 3.0 + 1.0, X, y)):
        assert other["I_XT"] == pytest.approx(base["I_XT"], abs=1e-9)
        assert other["I_TY"] == pytest.approx(base["I_TY"], abs=1e-9)
    assert 0.01 < base["I_XT"] < base["I_XT_max"] and 0.05 < base["I_TY"] < base["H_Y"]


def test_quantile_codes_equal_a_per_row_reference_with_ties():
    rng = np.random.default_rng(10)
    P = torch.from_numpy(np.round(rng.standard_normal((40, 999)), 1))  # many ties
    codes = quantile_codes(P, 7).numpy()
    for row, got in zip(P.numpy(), codes):
        edges = np.sort(row)[(np.arange(1, 7) * 999) // 7]
        assert np.array_equal(got, np.searchsorted(edges, row, side="right"))
    even = quantile_codes(torch.randn(3, 700, dtype=torch.float64), 7)
    assert (torch.stack([torch.bincount(r, minlength=7) for r in even]) == 100).all()


def test_sliced_and_renyi_of_tensors_equal_the_arrays():
    T, X, y = _layer_and_inputs(6, n=500)
    T, X = T.astype(np.float32), X.astype(np.float32)
    tensors = torch.from_numpy(T), torch.from_numpy(X), torch.from_numpy(y)
    assert sliced(*tensors) == sliced(T, X, y)
    assert renyi(*tensors) == renyi(T, X, y)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_new_estimators_on_cuda_equal_cpu():  # pragma: no cover - GPU machines only
    T, X, y = _layer_and_inputs(7, n=3000)
    cuda = [torch.from_numpy(a).cuda() for a in (T, X, y)]
    for est in (sliced, renyi, kde):
        a, b = est(*cuda), est(T, X, y)
        for key in ("I_XT", "I_TY"):
            assert a[key] == pytest.approx(b[key], abs=1e-6), (est.__name__, key)


# ------------------------------------------------------------------------------------------
# validation: messages name the key, the rule and the value


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"alpha": 1}, ["estimator.alpha", "!= 1", "1"]),
        ({"alpha": 0.0}, ["estimator.alpha", "> 0", "0.0"]),
        ({"alpha": -2}, ["estimator.alpha", "> 0", "-2"]),
        ({"width": 0}, ["estimator.width", "> 0", "0"]),
        ({"width": -0.5}, ["estimator.width", "> 0", "-0.5"]),
        ({"width_rule": "scott"}, ["estimator.width_rule", "silverman, fixed", "'scott'"]),
        ({"batch_size": 1}, ["estimator.batch_size", ">= 2", "1"]),
        ({"batches": 0}, ["estimator.batches", ">= 1", "0"]),
        ({"slices": 0}, ["estimator.slices", ">= 1", "0"]),
        ({"slices": 2.5}, ["estimator.slices", "integer", "2.5"]),
        ({"noise_var": -1}, ["estimator.noise_var", "> 0", "-1"]),
        ({"noise_scale": "std"}, ["estimator.noise_scale", "neighbour", "'std'"]),
        ({"mc_samples": -3}, ["estimator.mc_samples", ">= 0", "-3"]),
        ({"seed": -1}, ["estimator.seed", ">= 0", "-1"]),
    ],
)
def test_bad_parameters_of_the_new_estimators_are_refused(params, words):
    with pytest.raises(ValueError) as err:
        check_params(params)
    for word in words:
        assert word in str(err.value), (word, str(err.value))


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["estimator=renyi", "estimator.alpha=1"], ["estimator.alpha", "!= 1"]),
        (["estimator=renyi", "estimator.alpha=0"], ["estimator.alpha", "> 0"]),
        (["estimator=renyi", "estimator.width=0"], ["estimator.width", "> 0"]),
        (["estimator=sliced", "estimator.slices=0"], ["estimator.slices", ">= 1"]),
        (["estimator=sliced", "estimator.bins=1"], ["estimator.bins", ">= 2"]),
        (["estimator=kde_nn", "estimator.noise_var=-1"], ["estimator.noise_var", "> 0"]),
        (["estimator=kde", "estimator.noise_scale=rms"], ["estimator.noise_scale", "'rms'"]),
    ],
)
def test_bad_keys_of_the_new_options_fail_validation_before_training(compose_cfg, overrides, words):
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg(*overrides, "runtime.device=cpu"))
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_new_options_compose_with_their_documented_defaults(compose_cfg):
    r = compose_cfg("estimator=renyi").estimator
    assert (r.alpha, r.width, r.width_rule, r.batch_size, r.batches) == (
        1.01,
        1.0,
        "silverman",
        256,
        4,
    )
    s = compose_cfg("estimator=sliced").estimator
    assert (s.slices, s.bins, s.bias_correction, s.seed) == (128, 16, "miller_madow", 0)
    k = compose_cfg("estimator=kde_nn").estimator
    assert (k.noise_scale, k.noise_var, k.mc_samples) == ("neighbour", 1.0, None)
    assert compose_cfg("estimator=kde").estimator.noise_scale == "absolute"


# ------------------------------------------------------------------------------------------
# the saturation warning


def _rows(**cols) -> pd.DataFrame:
    return pd.DataFrame(cols)


def test_saturation_warning_names_the_saturated_estimators_and_their_keys():
    rows = _rows(
        estimator=["binning_10"] * 4 + ["kde_0.1"] * 4 + ["renyi"] * 4,
        saturated=[True] * 4 + [True, True, True, False] + [False] * 4,
        n_samples=[10000] * 12,
        I_XT=[13.29] * 12,
    )
    msg = saturation_warning(rows)
    assert msg is not None
    assert "58% of the rows (7 of 12)" in msg
    assert "binning (100% of its rows)" in msg and "estimator.bins" in msg
    assert "kde (75% of its rows)" in msg and "estimator.noise_var" in msg
    assert "renyi (" not in msg  # not saturated: not named
    assert "13.29" in msg


def test_saturation_warning_stays_silent_at_half_or_less():
    rows = _rows(estimator=["sliced"] * 4, saturated=[True, True, False, False])
    assert saturation_warning(rows) is None
    assert "sliced" in saturation_warning(rows, min_fraction=0.25)
    assert "estimator.bins" in saturation_warning(rows, min_fraction=0.25)
    assert saturation_warning(_rows(I_XT=[1.0])) is None  # nothing to judge by


def test_saturation_warning_without_the_column_uses_the_sample_ceiling():
    rows = _rows(I_XT=[8.49, 8.49, 3.0], n_samples=[360, 360, 360])
    msg = saturation_warning(rows)
    assert msg is not None and "67%" in msg and "8.49" in msg
    rows = _rows(estimator=["renyi"] * 3, saturated=[True] * 3)
    assert "estimator.width" in saturation_warning(rows)


def test_exact_at_its_ceiling_is_the_net_not_a_resolution_and_is_not_warned_about():
    # a quantized layer that tells all 4,096 patterns apart has I(X;T) = 12 bits in fact
    exact = _rows(estimator=["exact"] * 4, saturated=[True] * 4, n_samples=[4096] * 4)
    assert saturation_warning(exact) is None and saturation_summary(exact) is None
    binning = _rows(estimator=["binning_100"] * 4, saturated=[True, True, True, False],
                    n_samples=[4096] * 4)  # fmt: skip
    both = pd.concat([exact, binning], ignore_index=True)
    msg = saturation_warning(both)  # the share is over the estimators' rows: 3 of 4
    assert "75% of the rows (3 of 4)" in msg and "exact" not in msg
    assert "binning 75%" in saturation_summary(both)


def test_the_report_note_is_the_saturation_warning():
    from infoflow.report.page import saturation_note

    rows = _rows(estimator=["kde"] * 4, saturated=[True, False, False, False], n_samples=[360] * 4)
    assert saturation_note(rows) == saturation_warning(rows, min_fraction=0.25 - 1e-12)
    assert saturation_note(rows) is not None and saturation_warning(rows) is None


@pytest.mark.slow
def test_multirun_across_the_new_estimators_through_the_cli(cli, tmp_path):
    proc = cli(
        "-m",
        "estimator=renyi,sliced,kde_nn",
        "model=mlp1",
        "trainer.epochs=1",
        "runtime.device=cpu",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (merged,) = tmp_path.glob("outputs/multirun/*/*/results.parquet")
    df = pd.read_parquet(merged)
    assert sorted(df.estimator.unique()) == ["kde_nn", "renyi", "sliced"]
    assert (df.I_XT <= df.I_XT_max.fillna(df.H_max) + 1e-9).all()
    assert not df.saturated.any()  # digits, 360 samples: none of the three at its ceiling
    kde_rows = df[df.estimator == "kde_nn"]
    assert (
        (kde_rows.I_XT_lower <= kde_rows.I_XT_mc) & (kde_rows.I_XT_mc <= kde_rows.I_XT_upper)
    ).all()
    assert df[df.estimator == "renyi"]["estimator.alpha"].eq(1.01).all()
    assert df[df.estimator == "sliced"]["estimator.slices"].eq(128).all()


# ------------------------------------------------------------------------------------------
# wide layers: the column-block paths, their invariances, their memory and the cost warning


def _wide_case(n=320, d=400, seed=11, dtype=torch.float32):
    """A post-ReLU layer that depends on X (about half zeros), X (n, 150) and ten labels."""
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn((n, 150), generator=gen)
    H = X @ torch.randn((150, 24), generator=gen) / math.sqrt(150)
    T = torch.relu(H @ torch.randn((24, d), generator=gen) + 0.3 * torch.randn((n, d)) - 0.1)
    y = (H[:, 0] > 0).long() + 2 * (H[:, 1] > 0).long() + 4 * (H[:, 2] > 0.5).long()
    return T.to(dtype), X, y


def _narrow_and_wide(monkeypatch, est, T, X, y, **kw):
    """``est`` on the unchunked path, then on the column-block path with blocks of 2^13
    values (every layer here wider than 64 units is 'wide'), and the number of wide calls."""
    _memo.clear()
    narrow = est(T, X, y, **kw)
    calls = []
    for module, name in WIDE_FUNCTIONS:
        original = getattr(module, name)

        def spy(*args, _original=original, _name=name, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, name, spy)
    monkeypatch.setattr(_common, "WIDE_UNITS", 64)
    monkeypatch.setattr(_common, "BLOCK_ELEMS", 2**13)
    _memo.clear()
    wide = est(T, X, y, **kw)
    _memo.clear()
    return narrow, wide, calls


# the modules (the package's names renyi, sliced, kde and binning are the functions)
renyi_module, sliced_module, kde_module, binning_module = (
    importlib.import_module(f"infoflow.estimators.{name}")
    for name in ("renyi", "sliced", "kde", "binning")
)

WIDE_FUNCTIONS = [
    (renyi_module, "_wide_batch_grams"),
    (sliced_module, "_wide_projections"),
    (kde_module, "_wide_scaled"),
]


@pytest.mark.parametrize(
    ("est", "kw", "dtype", "tol"),
    [
        # renyi's float32 eigenvalues at alpha = 1.01 amplify the sums' rounding ~100-fold
        (renyi, {}, torch.float32, 1e-4),
        (renyi, {"alpha": 2, "batches": None, "batch_size": 96}, torch.float32, 1e-6),
        (renyi, {"width_rule": "fixed", "width": 9.0}, torch.float64, 1e-9),
        (sliced, {}, torch.float32, 2e-3),  # a rounding can move a value across a bin edge
        (sliced, {"slices": 40, "bins": 8}, torch.float16, 2e-3),  # converted block by block
        (sliced, {}, torch.float64, 1e-9),
        (kde, {"mc_samples": 200}, torch.float32, 1e-6),
        (
            kde,
            {"noise_scale": "neighbour", "noise_var": 1.0, "mc_samples": 99},
            torch.float32,
            1e-6,
        ),
        (kde, {"noise_scale": "variance", "precision": "float64"}, torch.float32, 1e-9),
    ],
)
def test_wide_layers_equal_the_unchunked_computation(monkeypatch, est, kw, dtype, tol):
    T, X, y = _wide_case(dtype=dtype)
    narrow, wide, calls = _narrow_and_wide(monkeypatch, est, T, X, y, **kw)
    assert calls, "the column-block path did not run"
    for key, value in narrow.items():
        if isinstance(value, float) and not math.isnan(value):
            assert wide[key] == pytest.approx(value, abs=tol, rel=1e-6), key
        else:
            assert wide[key] == value or (math.isnan(value) and math.isnan(wide[key])), key


def test_wide_renyi_and_kde_refuse_nan_as_the_narrow_path_does(monkeypatch):
    T, X, y = _wide_case()
    T[:, 300] = math.nan  # in every row: whichever rows renyi's batches draw
    monkeypatch.setattr(_common, "WIDE_UNITS", 64)
    monkeypatch.setattr(_common, "BLOCK_ELEMS", 2**13)
    for est in (renyi, kde, sliced):
        _memo.clear()
        with pytest.raises(ValueError, match="finite"):
            est(T, X, y)


def test_wide_projections_use_the_directions_of_the_narrow_path(monkeypatch):
    monkeypatch.setattr(_common, "BLOCK_ELEMS", 2**12)  # blocks of 16 units, 1003 = 62 x 16 + 11
    eye = torch.eye(1003, dtype=torch.float64)
    got = sliced_module._wide_projections(eye, 37, 5, torch.float64)  # (37, 1003) = phi^T
    assert torch.allclose(got.T, directions(1003, 37, 5), rtol=0, atol=1e-15)


def test_quantile_binning_hashes_block_by_block_bit_for_bit(monkeypatch):
    T = _wide_case(n=300, d=90)[0].numpy()
    values, inner, _ = quantile_edges(T, 12, None)
    reference = hash_rows(bin_codes(T, bins=12, strategy="quantile")[0])
    monkeypatch.setattr(binning_module, "_BLOCK_ELEMS", 7 * 90)  # ragged blocks of 7 rows
    assert np.array_equal(hash_quantile_bins(values, inner), reference)


@pytest.mark.parametrize("est", [renyi, sliced, kde, binning])
def test_wide_estimates_do_not_depend_on_the_order_of_samples_or_units(monkeypatch, est):
    T, X, y = _wide_case(n=300, seed=12)
    monkeypatch.setattr(_common, "WIDE_UNITS", 64)
    monkeypatch.setattr(_common, "BLOCK_ELEMS", 2**13)
    kw = {"batch_size": 300} if est is renyi else {"mc_samples": 0} if est is kde else {}
    samples = torch.randperm(300, generator=torch.Generator().manual_seed(1))
    units = torch.randperm(400, generator=torch.Generator().manual_seed(2))
    # float32 eigenvalues at alpha = 1.01: within 1e-4 bits (docs/estimators.md, renyi)
    tol = 1e-4 if est is renyi else 1e-6
    base = est(T, X, y, **kw)
    by_samples = est(T[samples], X[samples], y[samples], **kw)
    by_units = est(T[:, units], X, y, **kw)
    for key in ("I_XT", "I_TY"):
        assert by_samples[key] == pytest.approx(base[key], abs=tol), key
        if est is sliced:  # a permutation of units is a rotation: invariant over directions
            se = math.hypot(base[f"{key}_se"], by_units[f"{key}_se"])
            assert abs(by_units[key] - base[key]) < 4 * se, key
        else:
            assert by_units[key] == pytest.approx(base[key], abs=tol), key


MEMORY_SCRIPT = """
import resource, torch
from infoflow.estimators import renyi, sliced
gen = torch.Generator().manual_seed(0)
X = torch.randn((1024, 3, 32, 32), generator=gen)
Y = torch.randint(0, 10, (1024,), generator=gen)
T = torch.rand((1024, 65536), generator=gen).sub_(0.5).relu_()  # 256 MiB, made in place
small = torch.rand((300, 64), generator=gen).sub_(0.5).relu_()
renyi(small, X[:300], Y[:300]), sliced(small, X[:300], Y[:300])  # the libraries' start-up
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
renyi(T, X, Y), sliced(T, X, Y)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""


def test_renyi_and_sliced_hold_little_memory_beyond_a_wide_layer():
    """1,024 x 65,536 float32 (half zeros) at the defaults in a fresh process: the peak
    (ru_maxrss) rises by far less than renyi's 4 x 256 gathered rows (256 MiB in float32),
    which the unchunked path held four times over (1,039 MiB, measured at 10,000 x 65,536)."""
    proc = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    extra_mib = float(proc.stdout.split()[-1])
    assert extra_mib < 160, extra_mib


def _partial(est, **kw):
    return functools.partial(est, **kw)


def test_cost_warning_names_an_expensive_wide_layer_and_the_cheaper_estimators():
    for est, kw in ((kde, {}), (binning, {"strategy": "quantile"})):
        message = cost_warning(_partial(est, **kw), [65536, 4096, 512], 10_000)
        assert message is not None, est.__name__
        for words in (
            f"estimator={est.__name__}",
            "65,536 units",
            "estimator=renyi",
            "estimator=sliced",
            "10,000 samples",
            "GiB",
        ):
            assert words in message, (words, message)
        assert "4,096 units" not in message or est is kde  # only the expensive layers
    seconds, nbytes = estimate_cost(_partial(kde), 65536, 10_000)
    assert seconds > 10 * MAX_SECONDS  # O(N^2 d)
    # one copy of the layer in the work dtype: float64 under precision=auto (an upper bound)
    assert 10_000 * 65536 * 8 < nbytes < 10_000 * 65536 * 9
    _, nbytes = estimate_cost(_partial(kde, precision="float32"), 65536, 10_000)
    assert 10_000 * 65536 * 4 < nbytes < 10_000 * 65536 * 5


def test_cost_warning_is_silent_for_renyi_sliced_and_small_layers():
    for est in (renyi, sliced):
        assert cost_warning(_partial(est), [65536, 16384, 4096, 512], 10_000) is None
        assert cost_warning(est, [65536], 10_000) is None  # a bare function: its defaults
    for est, kw in ((kde, {}), (binning, {}), (binning, {"strategy": "quantile"})):
        assert cost_warning(_partial(est, **kw), [256, 128, 64], 10_000) is None
    # uniform bins (binning's default) run in row blocks: seconds and a few MiB, even here
    assert cost_warning(_partial(binning, bins=30), [65536], 10_000) is None
    assert cost_warning(_partial(per_neuron), [65536], 10_000) is None  # no cost model


def test_cost_warning_follows_the_parameters():
    # one Gram matrix of every sample: a 10,000 x 10,000 eigenproblem
    message = cost_warning(_partial(renyi, batch_size=10_000, batches=1), [512], 10_000)
    assert message is not None and "batch_size=10000" in message and "512 units" in message
    assert cost_warning(_partial(kde, mc_samples=0), [512], 10_000) is None
    slow, fast = (estimate_cost(_partial(kde, mc_samples=m), 4096, 10_000)[0] for m in (None, 0))
    assert slow == pytest.approx(3 * fast)  # N^2 d / 2 for the bounds, N^2 d for the draws


def test_cost_warning_reads_the_estimator_the_runner_builds(compose_cfg):
    from infoflow.sweep.runner import build

    kde_nn = build(compose_cfg("estimator=kde_nn").estimator)
    assert "noise_scale=neighbour" in cost_warning(kde_nn, [65536], 10_000)
    assert cost_warning(build(compose_cfg("estimator=sliced").estimator), [65536], 10_000) is None
    tanh = build(compose_cfg("estimator=binning_quantile").estimator)
    assert cost_warning(tanh, [65536], 10_000) is not None
