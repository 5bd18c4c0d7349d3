"""The input side of renyi and sliced, computed once per input tensor and reused.

Every test compares against a fresh computation (the memo cleared), so a stale entry shows as a
wrong number, and checks the memo's bookkeeping (hits, invalidation, release).
"""

from __future__ import annotations

import gc
import importlib

import numpy as np
import pytest
import torch

from infoflow.estimators import _memo, renyi, sliced
from infoflow.estimators.sliced import (
    COMPARE_BINS,
    _codes_torch,
    mi_of_codes,
    quantile_codes,
    slice_mis,
)

ESTIMATORS = {
    "renyi": (renyi, {"batch_size": 64, "batches": 3}),
    "sliced": (sliced, {"slices": 16, "bins": 8}),
}


def _net(seed: int = 0, n: int = 400):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, 1, 6, 6, generator=g)  # (n, 1, 6, 6)
    W1, W2 = torch.randn(36, 20, generator=g), torch.randn(20, 8, generator=g)
    T1 = torch.relu(X.flatten(1) @ W1)  # (n, 20)
    T2 = torch.tanh(T1 @ W2)  # (n, 8)
    Y = (T2[:, 0] > 0).long() + 2 * (T2[:, 1] > 0).long()  # (n,)
    return X, [T1, T2], Y


def _fresh(est, T, X, Y, **kw):
    _memo.clear()
    return est(T, X, Y, **kw)


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_reused_input_side_gives_the_fresh_numbers_on_every_layer(name):
    est, kw = ESTIMATORS[name]
    X, layers, Y = _net()
    expected = [_fresh(est, T, X, Y, **kw) for T in layers]
    _memo.clear()
    first = [est(T, X, Y, **kw) for T in layers]  # the second layer reuses X's side
    again = [est(T, X, Y, **kw) for T in layers]  # a later evaluation too
    assert first == expected and again == expected
    assert len(_memo._entries) == 1


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_other_parameters_do_not_share_an_entry(name):
    est, kw = ESTIMATORS[name]
    X, (T, _), Y = _net()
    other = {**kw, "seed": 3}
    expected = _fresh(est, T, X, Y, **other)
    _memo.clear()
    est(T, X, Y, **kw)
    assert est(T, X, Y, **other) == expected
    assert len(_memo._entries) == 2


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_an_in_place_write_to_the_inputs_is_seen(name):
    est, kw = ESTIMATORS[name]
    X, (T, _), Y = _net()
    _memo.clear()
    before = est(T, X, Y, **kw)
    X[:, :, :3] = X[:, :, :3].flip(0)  # same object, other content: half of each image moved
    expected = est(T, X.clone(), Y, **kw)  # a new tensor: computed afresh
    assert est(T, X, Y, **kw) == expected != before
    X.view(-1)[:7].mul_(0.5)  # a write through a view moves the same version counter
    assert est(T, X, Y, **kw) == est(T, X.clone(), Y, **kw)


def test_numpy_and_inference_inputs_are_not_kept_and_entries_go_with_their_tensor():
    est, kw = ESTIMATORS["sliced"]
    X, (T, _), Y = _net()
    _memo.clear()
    est(T, X.numpy(), Y, **kw)
    with torch.inference_mode():
        Xi = X.clone()
    est(T, Xi, Y, **kw)
    assert len(_memo._entries) == 0
    Xc = X.clone()
    est(T, Xc, Y, **kw)
    assert len(_memo._entries) == 1
    del Xc
    gc.collect()
    assert len(_memo._entries) == 0


def test_the_memo_keeps_at_most_its_bound():
    est, kw = ESTIMATORS["sliced"]
    X, (T, _), Y = _net()
    _memo.clear()
    inputs = [X.clone() for _ in range(_memo.MAX_ENTRIES + 3)]
    for Xc in inputs:
        est(T, Xc, Y, **kw)
    assert len(_memo._entries) == _memo.MAX_ENTRIES
    assert next(iter(_memo._entries))[0] == id(inputs[3])  # the oldest went first


def test_compared_and_searched_codes_agree_with_ties():
    rng = np.random.default_rng(2)
    P = torch.from_numpy(np.round(rng.standard_normal((20, 3001)), 1)).float()  # many ties
    for bins in (2, 16, COMPARE_BINS, COMPARE_BINS + 1, 200):
        codes = quantile_codes(P, bins).long()
        for row, got in zip(P.numpy(), codes.numpy()):
            edges = np.sort(row)[(np.arange(1, bins) * 3001) // bins]
            assert np.array_equal(got, np.searchsorted(edges, row, side="right"))
        if bins <= COMPARE_BINS:  # the comparisons a GPU runs, here on the host
            ranks = (torch.arange(1, bins) * P.shape[1]) // bins
            edges = P.sort(1).values[:, ranks].contiguous()
            assert torch.equal(_codes_torch(P, edges).long(), codes)


def test_one_triple_table_equals_two_pair_tables(monkeypatch):
    g = torch.Generator().manual_seed(0)
    cx, ct = torch.randint(0, 8, (2, 12, 999), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 5, (999,), generator=g)
    for mm in (True, False):
        pair = (mi_of_codes(cx, ct, 8, 8, mm), mi_of_codes(ct, y[None, :], 8, 5, mm))
        triple = slice_mis(cx, ct, y, 8, 5, mm)
        assert all(torch.equal(a, b) for a, b in zip(pair, triple))
        module = importlib.import_module("infoflow.estimators.sliced")  # not the function
        monkeypatch.setattr(module, "MAX_TRIPLE_CELLS", 10)
        assert all(torch.equal(a, b) for a, b in zip(pair, slice_mis(cx, ct, y, 8, 5, mm)))
        monkeypatch.undo()
