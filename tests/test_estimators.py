"""Estimators against cases with a known answer, slow references, invariances and bounds.

Closed forms: discrete tables with exact entropies (binning; KDE with well-separated clusters),
Gaussian mixtures whose exact entropy is computed by quadrature (KDE bounds must bracket it),
and the Gaussian channel T = X + e with X Gaussian (I = d/2 log2(1 + s^2 / v)).
"""

from __future__ import annotations

import importlib
import math
from collections import Counter

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from infoflow.estimators import binning, check_params, kde, per_neuron
from infoflow.estimators._common import entropy_from_counts, hash_rows, symbols
from infoflow.estimators.binning import bin_codes, hash_uniform_bins, uniform_grid

BINNING = importlib.import_module("infoflow.estimators.binning")  # the module, not the function

LN2 = math.log(2.0)
KDE_KEYS = ("I_XT_upper", "I_XT_lower", "I_TY_upper", "I_TY_lower")


# ------------------------------------------------------------------------------------------
# slow, obviously-correct references


def entropy_of(items) -> float:
    """Plug-in entropy in bits of a list of hashable symbols."""
    counts = np.array(list(Counter(items).values()), dtype=float)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def plug_in(t, y) -> tuple[float, float]:
    """H(T) and I(T;Y) in bits of two symbol arrays, summed in the estimator's order."""
    t_sym, k_t = symbols(t)
    y_sym, k_y = symbols(y)
    H_T = entropy_from_counts(np.bincount(t_sym, minlength=k_t))
    H_Y = entropy_from_counts(np.bincount(y_sym, minlength=k_y))
    H_TY = entropy_from_counts(np.bincount(t_sym * k_y + y_sym, minlength=k_t * k_y))
    return H_T, max(H_T + H_Y - H_TY, 0.0)


def ref_codes(T, bins=30, bin_width=None, range=None, strategy="uniform"):
    """Bin indices by the textbook formula, one element at a time (float32 like the estimator)."""
    T = np.asarray(T, dtype=np.float32)
    if strategy == "quantile":
        V = T if range is None else np.clip(T, *range)
        edges = np.unique(np.quantile(V, np.linspace(0, 1, bins + 1)[1:-1])).astype(np.float32)
        return np.array([[sum(v >= e for e in edges) for v in row] for row in V]), len(edges) + 1
    lo, hi = (float(T.min()), float(T.max())) if range is None else range
    if bin_width is None:
        n_bins, scale = bins, np.float32(bins / (hi - lo))
    else:
        n_bins, scale = max(math.ceil((hi - lo) / bin_width), 1), np.float32(1.0 / bin_width)
    codes = [
        [min(max(int((np.float32(v) - np.float32(lo)) * scale), 0), n_bins - 1) for v in row]
        for row in T
    ]
    return np.array(codes), n_bins


def ref_binning(T, y, bias_correction="none", **kw):
    """H(T), I(T;Y) from rows of bin indices via np.unique(axis=0) and Counter, in bits."""
    codes, _ = ref_codes(T, **kw)
    _, t = np.unique(codes, axis=0, return_inverse=True)
    t = t.reshape(-1).tolist()
    y = list(np.asarray(y).tolist())
    H_T, H_Y, H_TY = entropy_of(t), entropy_of(y), entropy_of(list(zip(t, y)))
    if bias_correction == "miller_madow":
        n = len(t)
        H_T += (len(set(t)) - 1) / (2 * n * LN2)
        H_Y += (len(set(y)) - 1) / (2 * n * LN2)
        H_TY += (len(set(zip(t, y))) - 1) / (2 * n * LN2)
    return H_T, H_T + H_Y - H_TY


def ref_kde(T, y, v):
    """Kolchinsky-Tracey bounds by a Python loop over pairs (Saxe et al.'s kde.py formulas)."""
    T = np.asarray(T, dtype=float).reshape(len(T), -1)
    y = np.asarray(y)
    d = T.shape[1]
    H_e = d / 2 * math.log(2 * math.pi * math.e * v)

    def H(idx, kernel_div):
        total = 0.0
        for i in idx:
            s = sum(math.exp(-((T[i] - T[j]) ** 2).sum() / kernel_div) for j in idx)
            total += math.log(s / len(idx))
        return H_e - total / len(idx)

    out = {}
    for name, div in (("upper", 2 * v), ("lower", 8 * v)):
        h = H(range(len(T)), div)
        h_cond = sum(np.mean(y == c) * H(np.flatnonzero(y == c), div) for c in np.unique(y))
        out[f"I_XT_{name}"] = (h - H_e) / LN2
        out[f"I_TY_{name}"] = (h - h_cond) / LN2
    return out


def mixture_entropy(centers: np.ndarray, v: float, n_grid: int = 100_001) -> float:
    """Exact (quadrature) entropy in nats of the equal-weight mixture of N(c_i, v I), d <= 2."""
    c = np.asarray(centers, dtype=float).reshape(len(centers), -1)
    d = c.shape[1]
    s = math.sqrt(v)
    if d == 1:
        axes = [np.linspace(c.min() - 12 * s, c.max() + 12 * s, n_grid)]
    else:
        m = math.isqrt(n_grid // 25)  # ~ 2,000 points in each of 2 axes
        axes = [np.linspace(c[:, k].min() - 10 * s, c[:, k].max() + 10 * s, m) for k in range(d)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, d)  # (G, d)
    lp = np.empty(len(grid))
    for a in range(0, len(grid), 2_000):  # chunks that stay in cache
        D = ((grid[a : a + 2_000, None, :] - c[None, :, :]) ** 2).sum(-1)  # (g, N)
        lp[a : a + 2_000] = (
            logsumexp(-D / (2 * v), axis=1) - math.log(len(c)) - d / 2 * math.log(2 * math.pi * v)
        )
    f = np.exp(lp) * lp
    for x in reversed(axes):
        f = np.trapezoid(f.reshape(-1, len(x)), x, axis=-1)
    return float(-f.reshape(()))


def exact_mixture_mi(T, y, v):
    """I(X;T) and I(T;Y) in bits of the noisy layer T + N(0, v I), by quadrature."""
    T = np.asarray(T, dtype=float).reshape(len(T), -1)
    H_e = T.shape[1] / 2 * math.log(2 * math.pi * math.e * v)
    H = mixture_entropy(T, v)
    H_c = sum(np.mean(y == c) * mixture_entropy(T[y == c], v) for c in np.unique(y))
    return (H - H_e) / LN2, (H - H_c) / LN2


# ------------------------------------------------------------------------------------------
# binning: discrete tables with exact entropies


@pytest.mark.parametrize("k", [2, 5, 16])
def test_binning_uniform_symbols_give_log2_k(k):
    T = np.repeat(np.arange(k, dtype=np.float32), 7)[:, None]  # k symbols, 7 samples each
    y = np.zeros(len(T), dtype=int)
    r = binning(T, None, y, bins=k)
    assert r["I_XT"] == pytest.approx(math.log2(k), abs=1e-12)
    assert r["I_TY"] == pytest.approx(0.0, abs=1e-12) and r["H_Y"] == 0.0


def test_binning_multi_unit_patterns_and_a_skewed_table():
    patterns = np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0], [1, 1, 1]], dtype=np.float32)
    T = patterns[[0, 0, 0, 0, 1, 1, 2, 3]]  # p = (1/2, 1/4, 1/8, 1/8): H = 1.75 bits
    r = binning(T, None, np.zeros(8, int), bins=2)
    assert r["I_XT"] == pytest.approx(1.75, abs=1e-12)


def test_binning_deterministic_map_and_t_equals_y():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 8, 400)
    y = t % 3  # Y = f(T): I(T;Y) = H(Y)
    r = binning(t[:, None].astype(np.float32), None, y, bins=8, range=[-0.5, 7.5])
    assert r["I_TY"] == pytest.approx(r["H_Y"], abs=1e-12)
    assert r["I_TY"] == pytest.approx(entropy_of(y.tolist()), abs=1e-12)
    r = binning(y[:, None].astype(np.float32), None, y, bins=3)  # T = Y
    assert r["I_XT"] == pytest.approx(r["H_Y"], abs=1e-12)
    assert r["I_TY"] == pytest.approx(r["H_Y"], abs=1e-12)


def test_binning_independent_t_and_y_give_zero():
    t, y = np.meshgrid(np.arange(6), np.arange(4), indexing="ij")  # every (t, y) pair once
    t, y = np.tile(t.ravel(), 3), np.tile(y.ravel(), 3)
    r = binning(t[:, None].astype(np.float32), None, y, bins=6)
    assert r["I_XT"] == pytest.approx(math.log2(6), abs=1e-12)
    assert r["I_TY"] == pytest.approx(0.0, abs=1e-12)
    assert r["H_Y"] == pytest.approx(2.0, abs=1e-12)


def test_binning_miller_madow_adds_the_known_correction():
    T = np.repeat(np.arange(4, dtype=np.float32), [5, 3, 1, 1])[:, None]  # 4 cells, n = 10
    y = np.zeros(10, int)
    plain = binning(T, None, y, bins=4)
    mm = binning(T, None, y, bins=4, bias_correction="miller_madow")
    assert mm["I_XT"] - plain["I_XT"] == pytest.approx(3 / (2 * 10 * LN2), abs=1e-12)
    assert mm["I_TY"] == pytest.approx(0.0, abs=1e-12)  # Y constant: corrections cancel


def test_binning_miller_madow_is_clipped_into_the_ranges_of_an_mi():
    rng = np.random.default_rng(9)
    T = rng.standard_normal((64, 20)).astype(np.float32)  # every row its own cell
    y = np.arange(64) % 4
    r = binning(T, None, y, bias_correction="miller_madow")
    assert r["I_XT"] == r["H_max"] == 6.0 and r["I_TY"] == pytest.approx(r["H_Y"])
    assert r["H_T"] == pytest.approx(6.0 + 63 / (2 * 64 * LN2))  # the corrected entropy


def test_binning_fixed_range_clips_and_reports_the_clipped_share():
    T = np.array([[-3.0], [-1.0], [0.0], [0.5], [1.0], [4.0]], dtype=np.float32)
    codes, n_bins, frac = bin_codes(T, bins=4, range=(-1.0, 1.0))
    assert n_bins == 4 and frac == pytest.approx(2 / 6)
    assert codes.ravel().tolist() == [0, 0, 2, 3, 3, 3]
    r = binning(T, None, np.zeros(6, int), bins=4, range=[-1, 1])
    assert r["frac_out_of_range"] == pytest.approx(2 / 6)
    assert r["I_XT"] == pytest.approx(entropy_of([0, 0, 2, 3, 3, 3]), abs=1e-12)


def test_binning_bin_width_edges_are_multiples_of_the_width_from_lo():
    T = np.array([[0.0], [0.49], [0.5], [1.2], [2.0]], dtype=np.float32)
    codes, n_bins, _ = bin_codes(T, bins=None, bin_width=0.5)
    assert n_bins == 4 and codes.ravel().tolist() == [0, 0, 1, 2, 3]  # max in the last bin
    r = binning(T, None, np.zeros(5, int), bins=None, bin_width=0.5)
    assert r["n_bins"] == 4 and r["I_XT"] == pytest.approx(entropy_of([0, 0, 1, 2, 3]))


def test_binning_quantile_bins_have_equal_mass():
    rng = np.random.default_rng(1)
    T = rng.exponential(size=(4000, 1)).astype(np.float32)  # skewed: equal width would not be
    codes, n_bins, _ = bin_codes(T, bins=8, strategy="quantile")
    counts = np.bincount(codes.ravel(), minlength=8)
    assert n_bins == 8 and np.all(np.abs(counts - 500) <= 1)
    r = binning(T, None, np.zeros(4000, int), bins=8, strategy="quantile")
    assert r["I_XT"] == pytest.approx(3.0, abs=1e-5)  # 8 equal-mass cells


def test_binning_quantile_merges_repeated_edges_of_relu_zeros():
    rng = np.random.default_rng(2)
    T = np.maximum(rng.standard_normal((1000, 4)), 0).astype(np.float32)  # ~50% zeros
    codes, n_bins, _ = bin_codes(T, bins=10, strategy="quantile")
    assert n_bins < 10 and codes.max() == n_bins - 1


# ------------------------------------------------------------------------------------------
# binning: the fast implementation equals the slow reference, and the old default


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"bins": 3},
        {"bins": 10, "range": [-1.0, 1.0]},
        {"bins": None, "bin_width": 0.4},
        {"bins": None, "bin_width": 0.3, "range": [-0.5, 2.0]},
        {"bins": 5, "strategy": "quantile"},
        {"bins": 6, "strategy": "quantile", "range": [-1.0, 1.0]},
        {"bins": 4, "bias_correction": "miller_madow"},
    ],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_binning_equals_the_slow_reference(kw, seed):
    rng = np.random.default_rng(seed)
    T = (rng.standard_normal((300, 3)) * rng.uniform(0.3, 1.5)).astype(np.float32)
    y = rng.integers(0, 4, 300)
    r = binning(T, None, y, **kw)
    ref_kw = {k: v for k, v in kw.items() if k != "bias_correction"}
    if "range" in ref_kw:
        ref_kw["range"] = tuple(ref_kw["range"])
    H_T, I_TY = ref_binning(T, y, bias_correction=kw.get("bias_correction", "none"), **ref_kw)
    assert r["I_XT"] == pytest.approx(H_T, abs=1e-12)
    assert r["I_TY"] == pytest.approx(I_TY, abs=1e-12)
    assert 1 < r["I_XT"] < r["H_max"]  # a case with collisions and distinct rows alike


@pytest.mark.parametrize("shape", [(500, 64), (2000, 7), (50, 1)])
def test_binning_default_is_the_numpy_algorithm_bit_for_bit(shape):
    rng = np.random.default_rng(3)
    T = np.maximum(rng.standard_normal(shape), 0).astype(np.float32)
    y = rng.integers(0, 10, shape[0])
    for bins in (2, 10, 30):
        codes = np.minimum((T - T.min()) * np.float32(bins / (T.max() - T.min())), bins - 1)
        H_T, I_TY = plug_in(hash_rows(codes.astype(np.uint16)), y)  # NumPy codes, NumPy hash
        r = binning(T, None, y, bins=bins)
        assert (r["I_XT"], r["I_TY"]) == (H_T, I_TY)


@pytest.mark.parametrize(
    ("kw", "I_XT", "I_TY"),
    [
        ({"bins": 2}, "0x1.0bc63d6e01ee2p+0", "0x1.04a8fde510580p-3"),
        ({"bins": 3, "range": [0.0, 1.0]}, "0x1.715e2e81a75d6p+3", "0x1.a7b704560ab04p+1"),
        ({"bins": None, "bin_width": 1.5}, "0x1.cedd867eabdf3p+1", "0x1.9dbced48dc790p-2"),
        (
            {"bins": 2, "bias_correction": "miller_madow"},
            "0x1.0f973da0de1dcp+0",
            "0x1.64d866d71fe5bp-4",
        ),
    ],
)
@pytest.mark.parametrize("as_tensor", [False, True])
def test_binning_keeps_the_estimates_of_earlier_versions_bit_for_bit(kw, I_XT, I_TY, as_tensor):
    """Outputs of the float64-GEMM-hash version (commit fcbdbd0), frozen: a rewrite of the
    binning must keep every bit of the numbers users have in their tables."""
    rng = np.random.default_rng(11)
    T = np.maximum(rng.standard_normal((3000, 48)) - 0.8, 0).astype(np.float32)
    y = rng.integers(0, 10, 3000)
    r = binning(torch.from_numpy(T) if as_tensor else T, None, y, **kw)
    assert (r["I_XT"].hex(), r["I_TY"].hex()) == (I_XT, I_TY)


def relu_layer_with_ties(n, d, dtype, seed=0):
    """ReLU-like activations with many equal rows: ~70% zeros, dead units, repeated rows."""
    rng = np.random.default_rng(seed)
    T = np.maximum(rng.standard_normal((n, d)) - 0.5, 0)
    T[:, rng.random(d) < 0.3] = 0  # dead units
    T[n // 2 :] = T[rng.integers(0, n // 2, n - n // 2)]  # half the rows repeat earlier ones
    T[:3] = 0  # all-zero rows
    return T.astype(dtype)


def formula_codes(T, lo, scale, n_bins):
    """clip(floor((T - lo) * scale), 0, n_bins - 1) in the estimator's float type, in NumPy."""
    x = (T.astype(np.result_type(T.dtype, np.float32)) - np.float32(lo)) * np.float32(scale)
    return np.clip(x, 0, n_bins - 1).astype(np.uint64)  # the cast truncates


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(400, 12544), (3000, 9), (2, 3)])
@pytest.mark.parametrize(
    "kw",
    [
        {"bins": 2},
        {"bins": 30},
        {"bins": 65535},
        {"bins": None, "bin_width": 0.05},
        {"bins": 12, "range": (-0.5, 1.0)},
    ],
)
def test_hash_uniform_bins_is_hash_rows_of_the_codes_bit_for_bit(dtype, shape, kw):
    T = relu_layer_with_ties(*shape, dtype)
    lo, scale, n_bins, _ = uniform_grid(T, **kw)
    ref = hash_rows(formula_codes(T, lo, scale, n_bins))
    assert np.array_equal(hash_uniform_bins(T, lo, scale, n_bins), ref)  # int64 wrap-around
    assert np.array_equal(hash_uniform_bins(T, lo, scale, n_bins, chunk=7), ref)  # ragged blocks
    assert np.array_equal(hash_uniform_bins(torch.from_numpy(T), lo, scale, n_bins), ref)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "kw",
    [
        {"bins": 10},
        {"bins": 30},
        {"bins": 65535},
        {"bins": None, "bin_width": 0.2},
        {"bins": 8, "range": [0.0, 1.0]},
    ],
)
def test_binning_wide_layers_with_many_equal_rows_equal_the_unique_rows_reference(dtype, kw):
    T = relu_layer_with_ties(600, 4096, dtype, seed=1)
    y = np.random.default_rng(2).integers(0, 10, 600)
    r = binning(T, None, y, **kw)
    grid = {"range": tuple(kw["range"])} if "range" in kw else {}
    grid |= {k: kw[k] for k in ("bins", "bin_width") if k in kw}
    codes, n_bins, _ = bin_codes(T, **grid)  # NumPy, min and max included
    _, t = np.unique(codes, axis=0, return_inverse=True)  # (n,) one label per distinct row
    t = t.reshape(-1)
    lo, scale, n_bins, _ = uniform_grid(T, **grid)
    fast, k = symbols(hash_uniform_bins(T, lo, scale, n_bins))
    assert k == len(set(t.tolist())) == len(set(zip(fast.tolist(), t.tolist())))  # one partition
    H_T, I_TY = plug_in(t, y)
    assert r["I_XT"] == pytest.approx(H_T, abs=1e-12)
    assert r["I_TY"] == pytest.approx(I_TY, abs=1e-12)
    assert 1 < r["I_XT"] < r["H_max"] - 0.5  # many ties and distinct rows alike


def to_array(a):
    return a.numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def test_binning_reads_every_layout_and_dtype_alike():
    T = relu_layer_with_ties(500, 300, np.float32, seed=4)
    y = np.random.default_rng(5).integers(0, 10, 500)
    frozen = T.copy()
    frozen.flags.writeable = False
    half = T.astype(np.float16)
    same = [
        (T, y, {"bins": 30}),
        (frozen, y, {"bins": 30}),
        (np.asfortranarray(T), y, {"bins": 30}),
        (T[::-1], y[::-1], {"bins": 30}),  # negative strides
        (torch.from_numpy(T), torch.from_numpy(y), {"bins": 30}),
        (T[:, ::2], y, {"bins": 7, "range": [0.0, 2.0]}),
    ]
    for layer, labels, kw in same:
        ref = binning(np.ascontiguousarray(to_array(layer)), None, to_array(labels), **kw)
        assert binning(layer, None, labels, **kw) == ref
    assert binning(half, None, y) == binning(half.astype(np.float32), None, y)  # exact upcast


@pytest.mark.parametrize(
    ("dtype", "work"), [(np.int16, np.float32), (np.uint8, np.float32), (np.int64, np.float64)]
)
def test_binning_converts_other_dtypes_as_numpy_promotes_them_with_float32(dtype, work):
    rng = np.random.default_rng(5)
    T, y = rng.integers(0, 20, (400, 2)).astype(dtype), rng.integers(0, 10, 400)
    for kw in ({"bins": 30}, {"bins": 7, "range": [5, 15]}, {"bins": None, "bin_width": 3}):
        ref = binning(T.astype(work), None, y, **kw)
        assert binning(T, None, y, **kw) == binning(torch.from_numpy(T), None, y, **kw) == ref
    assert 1 < ref["I_XT"] < ref["H_max"]


@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (0,)])
def test_binning_refuses_an_empty_layer_with_its_shape(shape):
    with pytest.raises(ValueError, match=rf"samples and units, got shape \({shape[0]},"):
        binning(np.zeros(shape, np.float32), None, np.zeros(shape[0], int))


def test_hash_uniform_bins_does_not_depend_on_the_thread_count():
    T = relu_layer_with_ties(300, 5000, np.float32, seed=6)
    lo, scale, n_bins, _ = uniform_grid(T, bins=30)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = hash_uniform_bins(T, lo, scale, n_bins)
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(one, hash_uniform_bins(T, lo, scale, n_bins))


def test_hash_uniform_bins_wraps_like_uint64_where_every_product_overflows(monkeypatch):
    d, n_bins = 4096, 65535
    m = np.uint64(2**64 - 1)  # -1 as an int64: every product and partial sum wraps
    monkeypatch.setattr(BINNING, "hash_multipliers", lambda k: np.full(k, m, dtype=np.uint64))
    T = np.ones((4, d), dtype=np.float32)  # codes n_bins - 1
    T[0], T[2, -1], T[3] = 0.0, 0.0, 0.5
    lo, scale, n_bins, _ = uniform_grid(T, bins=n_bins)
    codes = formula_codes(T, lo, scale, n_bins)
    assert codes[1].min() == n_bins - 1
    assert np.array_equal(hash_uniform_bins(T, lo, scale, n_bins), codes @ np.full(d, m))


def layer_at_the_bounds(n, d, dtype, lo=-0.1, hi=0.3, seed=0):
    """ReLU-like layer and labels, with activations above ``hi`` and, in 240 random places, at
    ``lo`` and ``hi`` as NumPy rounds them to ``dtype`` and one ulp either side of those."""
    rng = np.random.default_rng(seed)
    T = (relu_layer_with_ties(n, d, np.float64, seed) * 0.2 - 0.05).astype(dtype)
    edges = np.array([lo, hi]).astype(dtype)  # float32(-0.1) < -0.1 and float32(0.3) > 0.3
    special = np.r_[edges, np.nextafter(edges, dtype(-np.inf)), np.nextafter(edges, dtype(np.inf))]
    T.reshape(-1)[rng.choice(T.size, 40 * len(special), replace=False)] = np.repeat(special, 40)
    return T, rng.integers(0, 10, n)


TENSOR_CASES = [
    {"bins": 30},
    {"bins": 2},
    {"bins": 65535},
    {"bins": None, "bin_width": 0.05},
    {"bins": 12, "range": [-0.1, 0.3]},
    {"bins": None, "bin_width": 0.02, "range": [-0.1, 0.3]},
    {"bins": 30, "bias_correction": "miller_madow"},
    {"bins": 5, "range": [-0.1, 0.3], "bias_correction": "miller_madow"},
    {"bins": 8, "range": [-1.0, 0.3]},  # values outside above only
    {"bins": 8, "range": [-0.1, 10.0]},  # below only
    {"bins": 8, "range": [-1.0, 10.0]},  # none
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(300, 5000), (400, 7)])
@pytest.mark.parametrize("kw", TENSOR_CASES)
def test_binning_of_a_tensor_equals_binning_of_the_array_bit_for_bit(dtype, shape, kw):
    T, y = layer_at_the_bounds(*shape, dtype)
    ref = binning(T, None, y, **kw)
    assert binning(torch.from_numpy(T), None, torch.from_numpy(y), **kw) == ref  # every key
    if "range" in kw:  # values outside on both sides, on one side, on none
        assert 0 < ref["frac_out_of_range"] < 0.1 or kw["range"] == [-1.0, 10.0]


@pytest.mark.parametrize(
    ("dtype", "lo", "hi"),
    [(np.float32, -0.1, 0.3), (np.float64, -0.1, 0.3), (np.float16, -0.7, 0.1)],
)
def test_frac_out_of_range_compares_in_the_layer_dtype_like_numpy(dtype, lo, hi):
    edges = np.array([lo, hi]).astype(dtype)
    T = np.r_[edges, np.nextafter(edges, dtype(-np.inf)), np.nextafter(edges, dtype(np.inf))]
    T = T.astype(dtype)[:, None]  # (6, 1): at lo, at hi, and one ulp below / above each
    y = np.arange(6)
    ref = binning(T, None, y, bins=4, range=[lo, hi])
    assert ref["frac_out_of_range"] == 2 / 6  # the ulp below lo and the ulp above hi
    assert binning(torch.from_numpy(T), None, y, bins=4, range=[lo, hi]) == ref
    T[2] = np.inf  # was the ulp below lo; now above hi, clipped into the last bin
    grid = uniform_grid(T, bins=4, range=(lo, hi))
    assert grid[3] == 2 / 6 and uniform_grid(torch.from_numpy(T), bins=4, range=(lo, hi)) == grid


@pytest.mark.parametrize(
    "kw", [{"bins": 4, "range": [-1, 1]}, {"bins": 4}, {"bins": None, "bin_width": 0.1}]
)
@pytest.mark.parametrize("as_tensor", [False, True])
def test_binning_refuses_nan_activations_with_any_range(kw, as_tensor):
    T = np.random.default_rng(0).standard_normal((50, 3)).astype(np.float32)
    T[7, 1] = np.nan  # its bin is undefined: no code, no cell
    layer = torch.from_numpy(T) if as_tensor else T
    with pytest.raises(ValueError, match=r"activations must be finite.*nan"):
        binning(layer, None, np.zeros(50, int), **kw)


@pytest.mark.parametrize(
    "places",
    [
        [],
        [(0, 0, 2.0)],
        [(-1, -1, -1.0)],
        [(0, 0, 2.0), (-1, 3, -1.0)],
        [(-1, 3, -1.0), (5, 1, np.inf)],
    ],
)
def test_frac_out_of_range_of_a_tensor_finds_values_outside_in_any_block(places):
    T = np.zeros((300, 5000), np.float32)  # row blocks of 209 rows: the last is not the first
    for i, j, v in places:
        T[i, j] = v
    grid = uniform_grid(T, bins=4, range=(-0.5, 1.0))
    assert grid[3] == len(places) / T.size
    assert uniform_grid(torch.from_numpy(T), bins=4, range=(-0.5, 1.0)) == grid


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # NumPy's bound cast
def test_binning_of_tensors_in_other_layouts_and_dtypes_equals_the_arrays():
    T, y = layer_at_the_bounds(200, 60, np.float32)
    half = T.astype(np.float16)
    t = torch.from_numpy(T)
    cases = [
        (torch.from_numpy(half), half, {"bins": 30}),
        (torch.from_numpy(half), half, {"bins": 12, "range": [-0.1, 0.3]}),
        (torch.from_numpy(half), half, {"bins": 4, "range": [-1e6, 1e6]}),  # bounds -> +-inf
        (torch.from_numpy(np.ascontiguousarray(T.T)).T, T, {"bins": 30}),  # column-major
        (t.reshape(200, 6, 10), T, {"bins": None, "bin_width": 0.05}),  # trailing axes flattened
        (t[:, 0], T[:, :1], {"bins": 7}),  # one unit
        (t.clone().requires_grad_(), T, {"bins": 12, "range": [-0.1, 0.3]}),
    ]
    for tensor, array, kw in cases:
        assert binning(tensor, None, y, **kw) == binning(array, None, y, **kw)


def test_binning_keeps_a_tensor_layer_off_numpy_on_the_uniform_path(monkeypatch):
    T, y = layer_at_the_bounds(300, 5000, np.float32)
    refs = [binning(T, None, y, **kw) for kw in TENSOR_CASES]
    numpy = torch.Tensor.numpy

    def small_only(self, *args, **kwargs):  # the n hashes or labels only
        assert self.numel() <= len(T), f"a {tuple(self.shape)} tensor went to NumPy"
        return numpy(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "numpy", small_only)
    monkeypatch.setattr(BINNING, "as_2d", lambda a: pytest.fail("as_2d on the uniform path"))
    tensor, labels = torch.from_numpy(T), torch.from_numpy(y)
    assert [binning(tensor, None, labels, **kw) for kw in TENSOR_CASES] == refs
    with pytest.raises(pytest.fail.Exception, match="as_2d"):  # quantile: on the host
        binning(tensor, None, labels, bins=5, strategy="quantile")


# ------------------------------------------------------------------------------------------
# KDE: closed forms


@pytest.mark.parametrize("k", [2, 4, 10])
def test_kde_well_separated_clusters_give_discrete_entropies(k):
    rng = np.random.default_rng(k)
    centers = rng.standard_normal((k, 5)) * 100.0  # |c_i - c_j|^2 >> 8 noise_var
    y = np.repeat(np.arange(k), 6)
    r = kde(centers[y], None, y, noise_var=0.1)
    for key in ("I_XT_upper", "I_XT_lower", "I_TY_upper", "I_TY_lower"):
        assert r[key] == pytest.approx(math.log2(k), abs=1e-9), key
    assert r["H_Y"] == pytest.approx(math.log2(k))


def test_kde_identical_points_carry_no_information():
    T = np.ones((40, 3))
    y = np.arange(40) % 4
    r = kde(T, None, y, noise_var=0.1)
    for key in KDE_KEYS:
        assert r[key] == pytest.approx(0.0, abs=1e-12), key


MIXTURES = {
    "gaussian v=0.1": (lambda g: g.standard_normal((150, 1)), 0.1),
    "gaussian v=1": (lambda g: g.standard_normal((150, 1)), 1.0),
    "gaussian v=0.01": (lambda g: g.standard_normal((150, 1)), 0.01),
    "two clusters": (lambda g: np.r_[g.normal(-1, 0.2, 75), g.normal(1, 0.2, 75)][:, None], 0.1),
    "grid": (lambda g: np.linspace(-2, 2, 40)[:, None], 0.05),
    "2-d gaussian": (lambda g: g.standard_normal((60, 2)), 0.3),
}


@pytest.mark.parametrize("case", list(MIXTURES))
def test_kde_bounds_bracket_the_exact_mixture_entropy(case):
    make, v = MIXTURES[case]
    T = make(np.random.default_rng(0))
    y = (T[:, 0] > 0).astype(int)
    I_XT, _ = exact_mixture_mi(T, y, v)
    r = kde(T, None, y, noise_var=v)
    assert r["I_XT_lower"] <= I_XT <= r["I_XT_upper"]
    assert r["I_XT_upper"] - r["I_XT_lower"] < T.shape[1] + 1e-9  # gap <= d/2 log2(4) bits


@pytest.mark.parametrize(("d", "v"), [(1, 0.1), (1, 1.0), (2, 0.5)])
def test_kde_gaussian_channel_brackets_the_analytic_information(d, v):
    """T = X + e, X ~ N(0, I_d): I(X; T) = d/2 log2(1 + 1/v) for the population."""
    X = np.random.default_rng(4).standard_normal((2000, d))
    analytic = d / 2 * math.log2(1 + 1 / v)
    r = kde(X, None, np.zeros(2000, int), noise_var=v)
    assert r["I_XT_lower"] < analytic < r["I_XT_upper"]
    if d == 1:  # the sample mixture's exact value is the analytic one, up to sampling
        I_XT = mixture_entropy(X, v, n_grid=20_001) - 0.5 * math.log(2 * math.pi * math.e * v)
        assert I_XT / LN2 == pytest.approx(analytic, abs=0.03)


# ------------------------------------------------------------------------------------------
# KDE: fast implementation equals the pair-loop reference


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("v", [0.05, 0.5])
def test_kde_equals_the_pair_loop_reference(seed, v):
    rng = np.random.default_rng(seed)
    T = rng.standard_normal((45, 3)) * rng.uniform(0.2, 2.0)
    y = rng.integers(0, 3, 45)
    ref = ref_kde(T, y, v)
    for block in (7, 45, 4096):  # uneven last tile, one tile, one oversized tile
        r = kde(T, None, y, noise_var=v, block=block)
        assert r["precision"] == "float64"
        for key in KDE_KEYS:
            assert r[key] == pytest.approx(ref[key], abs=1e-10), (key, block)
    r32 = kde(T.astype(np.float32), None, y, noise_var=v, precision="float32", block=16)
    for key in KDE_KEYS:
        assert r32[key] == pytest.approx(ref[key], abs=2e-4), key


def test_kde_auto_precision_is_float32_for_float32_input_and_float64_when_needed():
    rng = np.random.default_rng(5)
    T = rng.standard_normal((200, 20)).astype(np.float32)
    y = rng.integers(0, 3, 200)
    assert kde(T, None, y)["precision"] == "float32"
    assert kde(T * 1000, None, y, noise_var=0.01)["precision"] == "float64"
    a = kde(T, None, y, precision="float32")
    b = kde(T, None, y, precision="float64")
    for key in KDE_KEYS:
        assert a[key] == pytest.approx(b[key], abs=1e-4)


def test_kde_accepts_torch_tensors_and_keeps_the_numbers():
    rng = np.random.default_rng(6)
    T = rng.standard_normal((120, 8)).astype(np.float32)
    y = rng.integers(0, 5, 120)
    a = kde(torch.from_numpy(T), None, torch.from_numpy(y))
    b = kde(T, None, y)
    assert a == b


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_kde_on_cuda_equals_cpu():  # pragma: no cover - GPU machines only
    rng = np.random.default_rng(7)
    T = torch.from_numpy(rng.standard_normal((3000, 64)))
    y = torch.from_numpy(rng.integers(0, 10, 3000))
    a = kde(T.cuda(), None, y.cuda(), block=1000)
    b = kde(T, None, y)
    for key in KDE_KEYS:
        assert a[key] == pytest.approx(b[key], abs=1e-9)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_binning_on_cuda_equals_the_array_bit_for_bit(dtype, monkeypatch):  # pragma: no cover
    T, y = layer_at_the_bounds(3000, 2000, dtype)
    refs = [binning(T, None, y, **kw) for kw in TENSOR_CASES]
    tensor, labels = torch.from_numpy(T).cuda(), torch.from_numpy(y).cuda()
    cpu = torch.Tensor.cpu

    def small_only(self, *args, **kwargs):  # the n hashes or labels only
        assert self.numel() <= len(T), f"a {tuple(self.shape)} tensor went to the host"
        return cpu(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "cpu", small_only)
    assert [binning(tensor, None, labels, **kw) for kw in TENSOR_CASES] == refs
    lo, scale, n_bins, _ = uniform_grid(T, bins=30)
    ref = hash_uniform_bins(T, lo, scale, n_bins)
    assert np.array_equal(hash_uniform_bins(tensor, lo, scale, n_bins, chunk=7), ref)


# ------------------------------------------------------------------------------------------
# invariances


def _layer(seed=0, n=400, d=6):
    rng = np.random.default_rng(seed)
    T = np.tanh(rng.standard_normal((n, d)) @ rng.standard_normal((d, d))).astype(np.float32)
    y = rng.integers(0, 5, n)
    return T, y


@pytest.mark.parametrize(
    ("estimator", "kw"),
    [(binning, {"bins": 4}), (binning, {"bins": 6, "strategy": "quantile"}), (kde, {})],
)
def test_invariant_to_sample_order_label_names_and_unit_order(estimator, kw):
    T, y = _layer()
    base = estimator(T, None, y, **kw)
    perm = np.random.default_rng(1).permutation(len(T))
    relabel = np.array([7, 3, 11, 0, 5])[y]  # an injective renaming of the labels
    variants = [
        estimator(T[perm], None, y[perm], **kw),
        estimator(T, None, relabel, **kw),
        estimator(T[:, ::-1].copy(), None, y, **kw),
    ]
    for other in variants:
        assert other["I_XT"] == pytest.approx(base["I_XT"], abs=1e-6)
        assert other["I_TY"] == pytest.approx(base["I_TY"], abs=1e-6)
    assert 0.1 < base["I_TY"] < base["H_Y"]  # a case where I_TY is not trivial


def test_kde_is_translation_invariant():
    T, y = _layer(2)
    a, b = kde(T, None, y), kde(T + 50.0, None, y)
    for key in KDE_KEYS:
        assert a[key] == pytest.approx(b[key], abs=1e-4)


# ------------------------------------------------------------------------------------------
# bounds and diagnostics on random layers


@pytest.mark.parametrize("seed", range(4))
def test_bounds_hold_on_random_layers(seed):
    rng = np.random.default_rng(seed)
    n, d = int(rng.integers(50, 600)), int(rng.integers(1, 40))
    T = (rng.standard_normal((n, d)) * rng.uniform(0.05, 3.0)).astype(np.float32)
    if seed % 2:
        T = np.maximum(T, 0)
    y = rng.integers(0, int(rng.integers(2, 11)), n)
    H_max = math.log2(n)
    for v in (0.001, 0.1, 10.0):
        r = kde(T, None, y, noise_var=v)
        assert -1e-9 <= r["I_XT_lower"] <= r["I_XT_upper"] + 1e-9
        assert r["I_XT_upper"] <= H_max + 1e-9
        assert r["I_TY_upper"] <= r["H_Y"] + 1e-9 and r["I_TY_lower"] <= r["H_Y"] + 1e-9
        assert r["I_TY_upper"] >= -1e-9 and r["I_TY_lower"] >= -1e-9
    for kw in (
        {"bins": 2},
        {"bins": 30},
        {"bins": None, "bin_width": 0.2},
        {"range": [-1, 1]},
        {"bins": 3, "bias_correction": "miller_madow"},
    ):
        r = binning(T, None, y, **kw)
        assert 0 <= r["I_XT"] <= H_max + 1e-12
        assert 0 <= r["I_TY"] <= min(r["H_Y"], r["I_XT"]) + 1e-12


def test_diagnostics_flag_saturation_and_give_the_ceilings():
    rng = np.random.default_rng(0)
    T = rng.standard_normal((256, 50)).astype(np.float32)  # every row its own cell
    y = np.arange(256) % 4
    for est in (binning, kde, per_neuron):
        r = est(T, T, y)
        assert r["n_samples"] == 256 and r["H_max"] == 8.0 and r["H_Y"] == pytest.approx(2.0)
        assert isinstance(r["saturated"], bool)
    assert binning(T, None, y)["saturated"] is True
    assert binning(T, None, y, bins=2, range=[50, 100])["saturated"] is False  # one cell
    assert kde(T, None, y, noise_var=1e4)["saturated"] is False  # noise swamps the layer


def test_per_neuron_keeps_its_numbers_and_gains_the_diagnostics():
    rng = np.random.default_rng(8)
    T, X, y = rng.standard_normal((300, 20)), rng.random((300, 64)), rng.integers(0, 10, 300)
    r = per_neuron(T, X, y)
    assert set(r) >= {"I_XT", "I_TY", "units_used", "n_samples", "H_max", "saturated", "H_Y"}
    assert r["units_used"] == 20 and r["n_samples"] == 300


# ------------------------------------------------------------------------------------------
# parameter validation: messages name the key, the rule and the value


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"bins": 30, "bin_width": 0.5}, ["estimator.bins", "estimator.bin_width", "mutually"]),
        ({"bins": None, "bin_width": None}, ["estimator.bins", ">= 2", "None"]),
        ({"bins": 1}, ["estimator.bins", ">= 2", "1"]),
        ({"bins": None, "bin_width": -1.0}, ["estimator.bin_width", "> 0", "-1.0"]),
        ({"range": "observed"}, ["estimator.range", "'layer'", "'observed'"]),
        ({"range": [1, -1]}, ["estimator.range", "lo < hi", "[1, -1]"]),
        ({"range": [0, 1, 2]}, ["estimator.range", "[lo, hi]"]),
        ({"strategy": "kmeans"}, ["estimator.strategy", "uniform, quantile", "'kmeans'"]),
        ({"bias_correction": "jackknife"}, ["estimator.bias_correction", "miller_madow"]),
        ({"bins": None, "bin_width": 0.1, "strategy": "quantile"}, ["estimator.bin_width"]),
        ({"noise_var": 0}, ["estimator.noise_var", "> 0", "0"]),
        ({"noise_var": "big"}, ["estimator.noise_var", "'big'"]),
        ({"precision": "half"}, ["estimator.precision", "float64", "'half'"]),
    ],
)
def test_bad_parameters_are_refused_with_key_rule_and_value(params, words):
    with pytest.raises(ValueError) as err:
        check_params(params)
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_estimators_check_their_parameters_when_called():
    T, y = np.zeros((10, 2), np.float32), np.zeros(10, int)
    with pytest.raises(ValueError, match=r"estimator\.range"):
        binning(T, None, y, range=[2, 1])
    with pytest.raises(ValueError, match=r"estimator\.noise_var"):
        kde(T, None, y, noise_var=-1)
    with pytest.raises(ValueError, match="finite"):
        kde(np.full((10, 2), np.nan), None, y)
