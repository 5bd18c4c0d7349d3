"""Exact mutual information of a quantized layer (Lorenzen, Igel & Nielsen 2022).

A quantized net (``model.quantize``) puts every hidden layer on a grid of at most 2^bits values,
in training and in evaluation. Over a finite set of samples the layer then takes finitely many
rows, and with X uniform over the samples (a deterministic net: H(T|X) = 0) the plug-in
entropies of those rows are not estimates but the mutual information itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from infoflow.errors import UserError
from infoflow.estimators._common import (
    as_2d,
    check_bounds,
    diagnostics,
    entropy_from_counts,
    symbols,
    to_numpy,
)

#: how a probability-vector layer (the softmax output) is counted
SOFTMAX_RULES = ("requantize", "distinct")
#: the width taken when ``estimator.bits`` is null (its config follows ``model.quantize``)
DEFAULT_BITS = 8
#: the widths the grid test accepts (``model.quantize``: 2..16 bits)
MIN_BITS, MAX_BITS = 2, 16
#: a gap between two values of a grid, in units of the grid's step, lies this close to an
#: integer. Fake-quantized float32 values (q - z) * s are exact to ~1e-7 of the layer's span; a
#: gap of 255 steps is then off by < 1e-4 steps. Continuous values miss it almost surely.
LATTICE_TOL = 1e-3
#: a row is a probability vector when its entries are >= 0 and sum to 1 within this (float32
#: softmax rows sum to 1 within ~1e-6)
SIMPLEX_TOL = 1e-4


class NotQuantizedError(UserError, ValueError):
    """The layer is not on a grid of at most 2^bits values: its exact MI is not defined here
    (a user's choice: ``estimator=exact`` on a net that is not quantized)."""


def _check(bits: Any, softmax: Any) -> None:
    if softmax not in SOFTMAX_RULES:
        rules = ", ".join(SOFTMAX_RULES)
        raise ValueError(f"estimator.softmax must be one of {rules}, got {softmax!r}")
    if bits is None:
        return
    rule = f"must be an integer in {MIN_BITS}..{MAX_BITS} (model.quantize's width)"
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise ValueError(f"estimator.bits {rule}, got {bits!r}")
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"estimator.bits {rule}, got {bits!r}")


def is_simplex(T: np.ndarray) -> bool:
    """Whether every row is a probability vector (>= 0, sums to 1): a softmax output layer."""
    if T.shape[1] < 2 or not np.all(T >= 0):
        return False
    return bool(np.all(np.abs(T.sum(axis=1, dtype=np.float64) - 1.0) <= SIMPLEX_TOL))


def distinct_values(T: np.ndarray) -> np.ndarray:
    """The sorted distinct values of an array, compared exactly.

    Floats are deduplicated by their bit patterns (an integer sort is about twice as fast as
    a float sort, and the pooled layer is the estimator's largest array), after adding +0.0,
    which turns -0.0 into 0.0: the one pair of equal floats with different bits (NaN is refused
    before). Other dtypes go to ``np.unique``.
    """
    flat = T.reshape(-1)
    view = {np.dtype(np.float32): np.int32, np.dtype(np.float64): np.int64}.get(flat.dtype)
    if view is None:
        return np.unique(flat)
    bits = np.unique((flat + flat.dtype.type(0.0)).view(view))  # (L,) distinct bit patterns
    return np.sort(bits.view(flat.dtype))  # as floats: negative ones sort in reverse as ints


def grid_codes(T: np.ndarray, bits: int) -> tuple[np.ndarray, int, int]:
    """Integer codes of a layer on a uniform grid, one grid per layer (pooled over its units,
    as a per-tensor quantizer puts it).

    The test: the layer holds at most ``2**bits`` distinct values, and they lie on a uniform
    lattice ``lo + k * step`` (every gap between consecutive distinct values is an integer
    multiple of the smallest, within :data:`LATTICE_TOL` of a step, and the values span at
    most ``2**bits`` points). A value's code is then ``k = rint((t - lo) / step)``: equal
    floats give equal codes (the same arithmetic), and two distinct values, at least one step
    apart, give codes at least 1 apart, so codes and values are in one-to-one correspondence.

    Returns
    -------
    codes : ndarray of shape (n_samples, n_units), int64
        Grid indices in ``0 .. radix - 1``.
    n_levels : int
        Distinct values in the layer.
    radix : int
        Grid points from the smallest value to the largest (codes are below it).

    Raises
    ------
    NotQuantizedError
        Naming the layer's width, what was found, and what would make it exact.
    """
    levels = distinct_values(T)  # (L,) sorted distinct values
    n, d = T.shape
    hint = (
        "estimator=exact needs a quantized net (model.quantize=8, which puts every hidden layer "
        "on a grid of at most 256 values, in one evaluation batch: probe.batch_size at least "
        "the probe samples) or another estimator"
    )
    if len(levels) > 2**bits:
        raise NotQuantizedError(
            f"a layer of {d} units over {n} samples takes {len(levels)} distinct values, more "
            f"than 2^{bits} = {2**bits} (estimator.bits={bits}): it is not quantized; {hint}"
        )
    lo = levels[0].astype(np.float64)
    if len(levels) == 1:
        return np.zeros((n, d), dtype=np.int64), 1, 1
    gaps = np.diff(levels.astype(np.float64))  # (L - 1,) all > 0
    step = gaps.min()
    ratios = gaps / step
    off = float(np.abs(ratios - np.rint(ratios)).max())
    radix = int(np.rint(ratios).sum()) + 1  # grid points from the smallest to the largest
    if off > LATTICE_TOL or radix > 2**bits:
        raise NotQuantizedError(
            f"a layer of {d} units over {n} samples takes {len(levels)} distinct values that "
            f"are not on one uniform grid of at most 2^{bits} points (gaps are off a common "
            f"step by up to {off:.3g} steps; the values span {radix} steps); {hint}"
        )
    codes = np.rint((T.astype(np.float64) - lo) / step).astype(np.int64)  # (n, d)
    return codes, len(levels), radix


def requantize_codes(T: np.ndarray, bits: int) -> tuple[np.ndarray, int, int]:
    """Lorenzen et al.'s treatment of the softmax output: ``round((p - lo) 2^bits / (hi - lo))``
    over the layer's observed [lo, hi] (``IB/util/binning.py: quantized``, ``bounds="layer"``),
    2^bits + 1 levels; returns the codes, the number of levels used and the radix."""
    T = T.astype(np.float64)
    lo, hi = float(T.min()), float(T.max())
    if hi == lo:
        hi = lo + 1e-9  # as theirs: one level
    codes = np.rint((T - lo) * 2**bits / (hi - lo)).astype(np.int64)  # (n, d) in 0..2^bits
    return codes, len(np.unique(codes)), 2**bits + 1


def distinct_codes(T: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Each value's index among the layer's distinct values (exact float comparison)."""
    levels, inverse = np.unique(T, return_inverse=True)
    return inverse.reshape(T.shape).astype(np.int64), len(levels), len(levels)


def label_symbols(y: np.ndarray) -> tuple[np.ndarray, int]:
    """Labels as symbols 0..k-1: small non-negative integers as they are (no sort; empty
    symbols add nothing to an entropy), anything else relabelled by :func:`symbols`."""
    if y.dtype.kind in "iub" and len(y) and 0 <= y.min() and y.max() < 2**16:
        return y.astype(np.int64), int(y.max()) + 1
    return symbols(y)


def row_symbols(codes: np.ndarray, radix: int) -> tuple[np.ndarray, int]:
    """One symbol per distinct row of integer codes in ``0 .. radix - 1``, exactly.

    Rows are packed into int64 keys in mixed radix (``b`` bits per code), as many units per
    key as fit in 63 bits; between chunks the key is replaced by its rank among the distinct
    keys so far (below n), so nothing overflows and nothing is hashed: two rows get the same
    symbol exactly when all their codes are equal. About 10x faster than
    ``np.unique(codes, axis=0)``, which compares rows as byte strings.
    """
    n, d = codes.shape
    b = max(1, (radix - 1).bit_length())
    key = np.zeros(n, dtype=np.int64)
    key_bits, j, k = 0, 0, 1
    while j < d:
        take = max(1, min(d - j, (63 - key_bits) // b))
        for c in range(j, j + take):
            key = (key << b) | codes[:, c]  # (n,) exact: key_bits + take * b <= 63
        j += take
        uniq, key = np.unique(key, return_inverse=True)  # rank: key < k <= n
        key, k = key.reshape(-1).astype(np.int64), len(uniq)
        key_bits = (k - 1).bit_length()
    return key, k


def exact(
    T: Any,
    X: Any,
    Y: Any,
    *,
    bits: int | None = 8,
    softmax: str = "requantize",
) -> dict[str, Any]:
    """I(X;T) and I(T;Y) in bits of a quantized layer, computed exactly over the samples.

    With X uniform over the n samples and a deterministic net, T is a function of X, so
    I(X;T) = H(T) and I(T;Y) = H(T) - sum_y p(y) H(T | Y=y), with the plug-in (empirical)
    distributions of T's distinct rows: on a quantized layer these are the true values for the
    samples, not estimates (Lorenzen, Igel & Nielsen 2022, "Information bottleneck: exact
    analysis of (quantized) neural networks", ICLR).

    Parameters
    ----------
    T : array-like of shape (n_samples, ...)
        One layer's activations (NumPy array or torch tensor); trailing axes are flattened.
    X : array-like
        Inputs. Unused: I(X;T) = H(T) for a deterministic net.
    Y : array-like of shape (n_samples,)
        Discrete labels.
    bits : int or None, default 8
        The quantizer's width (``model.quantize``): a layer may hold at most 2^bits distinct
        values, on one uniform grid. Between 2 and 16; None (``model.quantize=null``, an
        unquantized net) is taken as 8.
    softmax : {'requantize', 'distinct'}, default 'requantize'
        How a layer whose rows are probability vectors (the softmax output, ``probe.output``)
        is counted. The quantized net quantizes its logits, not the softmax of them, so the
        output takes finitely many values but not on a grid. ``requantize`` does what
        Lorenzen et al.'s code does: map the output to 2^bits + 1 levels over its observed
        range, ``round((p - min) 2^bits / (max - min))``, then count. ``distinct`` counts the
        distinct rows of the float softmax itself (exact for that float function of the
        quantized logits).

    Returns
    -------
    dict
        ``I_XT``, ``I_TY`` (bits); ``H_T`` (= I_XT); ``n_levels`` (distinct values of the
        layer, or levels used after requantizing); ``n_codes`` (distinct rows);
        ``requantized`` (True for a softmax layer under ``softmax='requantize'``); and the
        diagnostics ``n_samples``, ``H_max``, ``saturated``, ``H_Y``.

    Raises
    ------
    NotQuantizedError
        A layer that is not a probability vector and not on a grid of at most 2^bits values
        (a continuous layer: its "exact" I(X;T) would be log2 n, the sample count).

    Notes
    -----
    No two different rows can share a symbol: a layer's values are replaced by their grid
    index (one-to-one with the values, :func:`grid_codes`), and rows of indices are packed
    into integers exactly (:func:`row_symbols`), never hashed. Cost: a sort of the layer's
    values and one of n integer keys per 63 bits of row; 3-4 ms for 4,096 samples of 10 units
    on a loaded 2-core machine.
    A tanh layer is quantized over the range of the batch it is computed in: a probe pass in
    several batches puts the batches on different grids, which the grid test refuses.
    """
    _check(bits, softmax)
    bits = DEFAULT_BITS if bits is None else int(bits)
    y = to_numpy(Y).reshape(-1)
    T = as_2d(T)  # (n, d)
    if len(T) != len(y):
        raise ValueError(f"T has {len(T)} samples but Y has {len(y)}")
    if not np.all(np.isfinite(T)):
        raise NotQuantizedError("activations must be finite: a quantized layer has no NaN or inf")
    simplex = is_simplex(T)
    if simplex and softmax == "requantize":
        codes, n_levels, radix = requantize_codes(T, bits)
    elif simplex:
        codes, n_levels, radix = distinct_codes(T)
    else:
        codes, n_levels, radix = grid_codes(T, bits)
    t_sym, k_t = row_symbols(codes, radix)
    y_sym, k_y = label_symbols(y)
    counts_T = np.bincount(t_sym, minlength=k_t)
    counts_Y = np.bincount(y_sym, minlength=k_y)
    H_T = entropy_from_counts(counts_T)
    # H(T|Y) = sum_y p(y) H(T|Y=y), each class's rows counted on their own
    H_T_given_Y = sum(
        counts_Y[c] / len(y) * entropy_from_counts(np.bincount(t_sym[y_sym == c]))
        for c in range(k_y)
        if counts_Y[c]
    )
    out = {
        "I_XT": H_T,
        "I_TY": max(H_T - H_T_given_Y, 0.0),
        "H_T": H_T,
        "n_levels": int(n_levels),
        "n_codes": int(k_t),
        "requantized": bool(simplex and softmax == "requantize"),
        **diagnostics(H_T, counts_Y),
    }
    return check_bounds("exact", out)
