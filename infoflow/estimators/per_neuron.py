"""The seed notebook's estimator: per-unit binned MI, averaged over the first units of a layer."""

from __future__ import annotations

from typing import Any

import numpy as np

from infoflow.estimators._common import (
    LN2,
    as_2d,
    check_bounds,
    check_params,
    diagnostics,
    symbols,
    to_numpy,
)


def digitize_columns(A: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``np.digitize(A[:, j], edges[j]) - 1`` for every column j at once.

    Parameters
    ----------
    A : ndarray of shape (n, k)
    edges : ndarray of shape (k, n_edges), each row non-decreasing

    Returns
    -------
    ndarray of shape (n, k), dtype int64, values in ``-1 .. n_edges - 1``
    """
    # digitize with increasing bins and right=False is searchsorted(edges, a, side="right")
    return (A[:, :, None] >= edges[None, :, :]).sum(axis=2, dtype=np.int64) - 1  # (n, k)


def mi_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Plug-in MI in nats between a[:, j] and b[:, j] for every column j (integer symbols).

    Equals ``sklearn.metrics.mutual_info_score(a[:, j], b[:, j])`` column by column.
    """
    n, k = a.shape
    a = a - a.min(axis=0)  # (n, k) symbols from 0
    b = b - b.min(axis=0)
    ka = int(a.max()) + 1
    kb = int(b.max()) + 1
    cells = ka * kb
    joint = (a * kb + b) + np.arange(k)[None, :] * cells  # (n, k) one cell id per column
    counts = np.bincount(joint.ravel(), minlength=k * cells).reshape(k, ka, kb).astype(float)
    p_ab = counts / n  # (k, ka, kb)
    p_a = p_ab.sum(axis=2, keepdims=True)
    p_b = p_ab.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p_ab > 0, p_ab * np.log(p_ab / (p_a * p_b)), 0.0)
    return np.clip(terms.sum(axis=(1, 2)), 0.0, None)  # (k,)


def per_neuron(T: Any, X: Any, Y: Any, *, bins: int = 30, max_units: int = 50) -> dict[str, float]:
    """The seed notebook's per-neuron binned MI, in bits.

    For unit ``n < min(n_units, max_units)``: I(X_n; T_n) between input pixel n and unit n, and
    I(T_n; Y) between unit n and the label; each averaged over the units. Every variable is cut
    into ``bins`` equal-width bins over its own observed range with ``np.digitize`` (so the
    maximum lands in an extra bin), except that for I(X_n; T_n) the unit is digitized with the
    pixel's bin edges, exactly as the notebook's ``estimate_mutual_info`` does; activations
    outside the pixel's range fall into the two outer bins. MI is the plug-in estimate of
    ``sklearn.metrics.mutual_info_score``, converted from nats to bits.

    Parameters
    ----------
    T : array-like of shape (n_samples, ...)
        Activations of one layer, flattened to (n_samples, n_units).
    X : array-like of shape (n_samples, ...)
        Inputs, flattened to (n_samples, n_pixels); pixel n pairs with unit n.
    Y : array-like of shape (n_samples,)
        Integer labels.
    bins : int, default 30
        Bins per variable, >= 2.
    max_units : int, default 50
        Units averaged over (the notebook's 50).

    Returns
    -------
    dict
        ``I_XT`` and ``I_TY`` (means over units, bits), ``units_used``, and the diagnostics
        ``n_samples``, ``H_max``, ``saturated``, ``H_Y`` (see ``_common.diagnostics``; a
        per-unit I_XT is far below H_max, so ``saturated`` is rarely set here).

    Notes
    -----
    This is not the information plane of Shwartz-Ziv & Tishby: it measures single units
    against single pixels, so it ignores the dependence between units. It is kept to reproduce
    the seed experiment; prefer ``binning`` or ``kde`` for the layer as a whole.
    """
    check_params({"bins": bins})
    if not (isinstance(max_units, (int, np.integer)) and max_units >= 1):
        raise ValueError(f"estimator.max_units must be an integer >= 1, got {max_units!r}")
    T = as_2d(T)
    Xf = as_2d(X)
    y = to_numpy(Y).reshape(-1)
    k = min(T.shape[1], max_units, Xf.shape[1])
    T, Xf = T[:, :k], Xf[:, :k]  # (n, k)

    def edges(A: np.ndarray) -> np.ndarray:  # (k, bins + 1), np.linspace per column
        return np.linspace(A.min(axis=0), A.max(axis=0), bins + 1, axis=1)

    x_edges = edges(Xf)
    x_b = digitize_columns(Xf, x_edges)  # pixel binned on its own range
    t_on_x = digitize_columns(T, x_edges)  # unit binned with the pixel's edges (notebook)
    t_b = digitize_columns(T, edges(T))  # unit binned on its own range
    y_sym, k_y = symbols(y)
    y_cols = np.broadcast_to(y_sym[:, None], t_b.shape)
    I_XT = mi_columns(x_b, t_on_x) / LN2
    I_TY = mi_columns(t_b, y_cols) / LN2
    I_XT_mean = float(I_XT.mean())
    out = {
        "I_XT": I_XT_mean,
        "I_TY": float(I_TY.mean()),
        "units_used": k,
        **diagnostics(I_XT_mean, np.bincount(y_sym, minlength=k_y)),
    }
    return check_bounds("per_neuron", out)
