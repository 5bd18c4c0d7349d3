"""Estimators for wide layers: kde's Monte Carlo estimate and noise scales, renyi, sliced.

Closed forms: the exact (quadrature) entropy of small Gaussian mixtures for kde's Monte Carlo
estimate; equal well-separated clusters and identity Gram matrices for renyi; the average over
directions of -1/2 log2(1 - rho^2) for jointly Gaussian (X, T), computed independently of the
estimator by a large Monte Carlo over directions, for sliced.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from test_estimators import MIXTURES, exact_mixture_mi

from infoflow.estimators import check_params, kde, renyi, saturation_warning, sliced
from infoflow.estimators.kde import NN_QUERIES
from infoflow.estimators.renyi import power_sums
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
