"""Binned (plug-in) mutual information of a whole layer, after Shwartz-Ziv & Tishby (2017)."""

from __future__ import annotations

from typing import Any

import numpy as np

from infoflow.estimators._common import as_2d, discrete_mi, hash_rows, to_numpy


def bin_layer(T: np.ndarray, bins: int) -> np.ndarray:
    """Cut every unit of a layer into ``bins`` equal-width bins over the layer's observed range.

    Parameters
    ----------
    T : ndarray of shape (n_samples, n_units)
        Activations.
    bins : int
        Number of bins, >= 2. The edges span ``[T.min(), T.max()]`` of the whole layer, as in
        Shwartz-Ziv & Tishby (2017) and Saxe et al. (2018); the maximum falls in the last bin.

    Returns
    -------
    ndarray of shape (n_samples, n_units), dtype uint16 (or uint32 for more than 65,535 bins)
        Bin index of every activation, in ``0 .. bins - 1``.
    """
    lo, hi = float(T.min()), float(T.max())
    dtype = np.uint16 if bins <= np.iinfo(np.uint16).max else np.uint32
    if hi <= lo:
        return np.zeros(T.shape, dtype=dtype)
    scaled = (T - np.float32(lo)) * np.float32(bins / (hi - lo))  # (n, d) in [0, bins]
    return np.minimum(scaled, bins - 1).astype(dtype)


def binning(T: Any, X: Any, Y: Any, *, bins: int = 30) -> dict[str, float]:
    """Binned estimate of I(X;T) and I(T;Y) in bits, treating a layer as one discrete variable.

    Each unit's activation is cut into ``bins`` equal-width bins over the layer's observed range;
    a sample's T is its whole row of bin indices (hashed to one integer). Entropies are plug-in
    (maximum-likelihood) estimates over the ``n`` evaluation samples. This follows Shwartz-Ziv &
    Tishby (2017), "Opening the black box of deep neural networks via information".

    Parameters
    ----------
    T : array-like of shape (n_samples, ...)
        Activations of one layer (NumPy array or torch tensor); trailing axes are flattened.
    X : array-like of shape (n_samples, ...)
        Inputs. Unused: the network is deterministic, so I(X;T) = H(T) provided every input is
        distinct, as it is for images.
    Y : array-like of shape (n_samples,)
        Discrete labels.
    bins : int, default 30
        Number of equal-width bins per unit, >= 2.

    Returns
    -------
    dict
        ``I_XT`` = H(T), ``I_TY`` = H(T) - H(T|Y) = H(T) + H(Y) - H(T,Y), the plug-in ``H_T``
        and ``H_Y``, and ``n_samples``; all information in bits.

    Notes
    -----
    Limits: ``I_XT <= log2(n_samples)``, reached as soon as every sample falls in its own cell,
    which is common for wide layers and many bins (the estimate then says nothing about
    compression); ``I_TY <= H(Y)``. The estimate depends on ``bins`` and on the binning range,
    as Saxe et al. (2018) showed.
    """
    if bins < 2:
        raise ValueError(f"estimator.bins must be >= 2, got {bins}")
    T = as_2d(T)
    y = to_numpy(Y).reshape(-1)
    if len(T) != len(y):
        raise ValueError(f"T has {len(T)} samples but Y has {len(y)}")
    t = hash_rows(bin_layer(T, bins))  # (n,) one symbol per sample
    H_T, H_Y, I_TY = discrete_mi(t, y)
    return {"I_XT": H_T, "I_TY": I_TY, "H_T": H_T, "H_Y": H_Y, "n_samples": len(y)}
