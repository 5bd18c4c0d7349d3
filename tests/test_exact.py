"""estimator=exact: equal to an independent count on hand-made discrete layers, invariant to the
order of the samples, and refusing layers that are not on a grid."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

from infoflow.estimators import exact
from infoflow.estimators.exact import NotQuantizedError
from infoflow.spec import JobSpec


def entropy(counter: Counter) -> float:
    n = sum(counter.values())
    return -sum(c / n * math.log2(c / n) for c in counter.values())


def by_count(T: np.ndarray, Y: np.ndarray) -> tuple[float, float]:
    """I(X;T) = H(T), I(T;Y) = H(T) + H(Y) - H(T,Y) from Python tuples: another formula for
    I(T;Y) than exact's, and no NumPy sorting."""
    rows = [tuple(r) for r in T.tolist()]
    h_t = entropy(Counter(rows))
    h_y = entropy(Counter(Y.tolist()))
    h_ty = entropy(Counter(zip(rows, Y.tolist())))
    return h_t, h_t + h_y - h_ty


def grid_layer(rng, n=300, d=3, levels=5, step=0.25, lo=-0.5):
    """A layer on the grid lo + k step, k < levels: many ties between rows."""
    return (lo + step * rng.integers(0, levels, size=(n, d))).astype(np.float32)


@pytest.mark.parametrize("seed", range(5))
def test_equals_an_independent_count_on_a_grid_with_ties(seed):
    rng = np.random.default_rng(seed)
    T = grid_layer(rng)
    Y = rng.integers(0, 3, size=len(T))
    out = exact(T, None, Y)
    h_t, i_ty = by_count(T, Y)
    assert out["I_XT"] == pytest.approx(h_t, abs=1e-12)
    assert out["I_TY"] == pytest.approx(i_ty, abs=1e-12)
    assert out["n_codes"] == len({tuple(r) for r in T.tolist()}) < len(T)  # ties: can fail
    assert out["n_levels"] == 5 and not out["requantized"]


def test_one_class_carries_no_label_information():
    T = grid_layer(np.random.default_rng(0))
    out = exact(T, None, np.zeros(len(T), dtype=int))
    assert out["I_TY"] == 0.0 and out["H_Y"] == 0.0
    assert out["I_XT"] == pytest.approx(by_count(T, np.zeros(len(T)))[0], abs=1e-12)
    assert out["I_XT"] > 1


def test_a_single_distinct_row_carries_nothing():
    T = np.full((64, 4), 0.5, dtype=np.float32)
    Y = np.arange(64) % 2
    out = exact(T, None, Y)
    assert (out["I_XT"], out["I_TY"], out["n_codes"], out["n_levels"]) == (0.0, 0.0, 1, 1)


def test_rows_that_tell_every_sample_apart_give_log2_n_and_h_y():
    codes = np.array([[a, b] for a in range(8) for b in range(8)], dtype=np.float64)  # 64 rows
    Y = np.arange(64) % 3
    out = exact(codes * 0.125, None, Y, bits=3)
    assert out["I_XT"] == pytest.approx(6.0, abs=1e-12)
    assert out["I_TY"] == pytest.approx(out["H_Y"], abs=1e-12)
    assert out["saturated"]


def test_the_order_of_the_samples_changes_nothing():
    rng = np.random.default_rng(3)
    T = grid_layer(rng, n=500, d=4, levels=7)
    Y = rng.integers(0, 2, size=len(T))
    perm = rng.permutation(len(T))
    a, b = exact(T, None, Y), exact(T[perm], None, Y[perm])
    assert (a["I_XT"], a["I_TY"]) == (b["I_XT"], b["I_TY"])


def test_torch_and_numpy_input_agree():
    rng = np.random.default_rng(4)
    T = grid_layer(rng)
    Y = rng.integers(0, 2, size=len(T))
    a = exact(torch.from_numpy(T), None, torch.from_numpy(Y))
    assert a == exact(T, None, Y)


def test_fake_quantized_activations_are_counted_by_their_integer_levels():
    """What a quantized layer holds: torch's fake quantization of continuous values, per
    tensor. Its exact MI is that of the integer levels q, counted independently."""
    rng = np.random.default_rng(5)
    x = torch.from_numpy(rng.normal(size=(1000, 3)).astype(np.float32)) * 0.3  # few levels
    scale, zero = 0.05, 128
    T = torch.fake_quantize_per_tensor_affine(x, scale, zero, 0, 255)  # (1000, 3) floats
    q = torch.clamp(torch.round(x / scale) + zero, 0, 255).to(torch.int64).numpy()
    Y = (x[:, 0] > 0).numpy().astype(int)
    out = exact(T, None, Y)
    h_t, i_ty = by_count(q, Y)
    assert out["I_XT"] == pytest.approx(h_t, abs=1e-12) and out["I_TY"] == pytest.approx(i_ty)
    assert 3 < h_t < math.log2(1000)  # ties: not every sample apart (can fail)


def test_continuous_activations_are_refused_with_the_layer_and_what_was_found():
    rng = np.random.default_rng(6)
    with pytest.raises(NotQuantizedError, match=r"5 units over 100 samples takes 500 distinct"):
        exact(rng.normal(size=(100, 5)), None, np.zeros(100))
    # few values, but not on one grid: the lattice test
    with pytest.raises(NotQuantizedError, match=r"not on one uniform grid"):
        exact(rng.normal(size=(10, 2)), None, np.zeros(10))


def test_a_grid_wider_than_2_bits_is_refused_and_accepted_with_more_bits():
    T = (np.arange(300, dtype=np.float32) * 0.01)[:, None]  # 300 levels of one grid
    Y = np.arange(300) % 2
    with pytest.raises(NotQuantizedError, match=r"300 distinct values, more than 2\^8 = 256"):
        exact(T, None, Y, bits=8)
    assert exact(T, None, Y, bits=9)["I_XT"] == pytest.approx(math.log2(300))
    # two grids side by side (two batches on their own ranges): refused
    two = np.concatenate([np.arange(0, 1, 1 / 8), 0.03 + np.arange(0, 1, 1 / 8)])[:, None]
    with pytest.raises(NotQuantizedError, match="not on one uniform grid"):
        exact(two, None, np.zeros(len(two)))


def test_the_softmax_output_is_requantized_as_lorenzen_et_al_or_counted_as_is():
    rng = np.random.default_rng(7)
    logits = 0.1 * rng.integers(-40, 40, size=(400, 2))  # quantized logits: a grid
    p = torch.softmax(torch.from_numpy(logits).float(), dim=1).numpy()  # (400, 2), not a grid
    Y = rng.integers(0, 2, size=400)
    req = exact(p, None, Y)
    lo, hi = p.min(), p.max()
    theirs = np.round((p.astype(np.float64) - lo) * 256 / (hi - lo)).astype(int)  # quantized()
    assert req["requantized"] and req["I_XT"] == pytest.approx(by_count(theirs, Y)[0], abs=1e-12)
    assert req["I_TY"] == pytest.approx(by_count(theirs, Y)[1], abs=1e-12)
    dis = exact(p, None, Y, softmax="distinct")
    assert not dis["requantized"]
    assert dis["I_XT"] == pytest.approx(by_count(p, Y)[0], abs=1e-12)
    assert dis["I_XT"] >= req["I_XT"]  # requantizing can only merge rows


@pytest.mark.parametrize(
    "params, match",
    [
        ({"bits": 1}, "estimator.bits must be an integer in 2..16"),
        ({"bits": True}, "estimator.bits"),
        ({"bits": 17}, "estimator.bits"),
        ({"softmax": "round"}, "estimator.softmax must be one of requantize, distinct"),
        ({"bits": None, "softmax": "round"}, "estimator.softmax"),
    ],
)
def test_bad_parameters_name_the_key(params, match):
    with pytest.raises(ValueError, match=match):
        exact(np.zeros((4, 2)), None, np.zeros(4), **params)


def test_the_config_takes_its_width_from_model_quantize(compose_cfg):
    cfg = compose_cfg("estimator=exact", "data=tishby", "model=ib_net", "+model.quantize=4")
    spec = JobSpec.of(cfg)
    assert spec.node("estimator.bits") == 4 and spec.node("estimator.softmax") == "requantize"
    # model.quantize: null in the option: bits null, which exact takes as its 8-bit default
    assert JobSpec.of(compose_cfg("estimator=exact")).node("estimator.bits") is None


@pytest.mark.parametrize("radix, d", [(2, 70), (256, 10), (257, 3), (65537, 20)])
def test_row_symbols_partition_rows_exactly_as_a_row_by_row_comparison(radix, d):
    """Packed keys (chunks of 63 bits, ranks between chunks) against np.unique over rows."""
    from infoflow.estimators.exact import row_symbols

    rng = np.random.default_rng(radix)
    base = rng.integers(0, radix, size=(60, d))
    codes = base[rng.integers(0, 60, size=2000)]  # many repeated rows
    codes[::7, -1] = rng.integers(0, radix, size=len(codes[::7]))  # rows differing in one unit
    sym, k = row_symbols(codes, radix)
    uniq, inverse = np.unique(codes, axis=0, return_inverse=True)
    assert k == len(uniq)
    # the same partition: a one-to-one map between the two labellings
    pairs = set(zip(sym.tolist(), inverse.reshape(-1).tolist()))
    assert len(pairs) == k


def test_minus_zero_is_zero_and_negative_levels_keep_their_order():
    """Values are deduplicated by their bits: -0.0 and 0.0 (equal floats, other bits) are one
    level, and negative levels sort as floats, not as their integer bit patterns."""
    from infoflow.estimators.exact import distinct_values

    T = np.array([[-0.0, 0.0], [-0.5, 0.5], [-1.0, 0.0]], dtype=np.float32)
    assert distinct_values(T).tolist() == [-1.0, -0.5, 0.0, 0.5]
    Y = np.array([0, 1, 1])
    assert exact(T, None, Y)["n_levels"] == 4
    assert exact(T.astype(np.float64), None, Y) == exact(T, None, Y)
