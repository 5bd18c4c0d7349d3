"""Shared pieces of the estimators: array conversion, plug-in entropies, row hashing."""

from __future__ import annotations

from typing import Any

import numpy as np

LN2 = np.log(2.0)

# Fixed odd 64-bit multipliers for row hashing: a fixed seed keeps estimates reproducible.
_HASH_RNG_SEED = 0x1F0F10


def to_numpy(a: Any) -> np.ndarray:
    """Return ``a`` as a NumPy array, moving a torch tensor to the host if needed."""
    if hasattr(a, "detach"):  # torch.Tensor, without importing torch here
        a = a.detach()
        if a.device.type != "cpu":
            a = a.cpu()
        return a.numpy()
    return np.asarray(a)


def as_2d(T: Any) -> np.ndarray:
    """Activations as a float array of shape (n_samples, n_units)."""
    T = to_numpy(T)
    if T.ndim == 1:
        T = T[:, None]
    return T.reshape(T.shape[0], -1)


def entropy_from_counts(counts: np.ndarray) -> float:
    """Plug-in (maximum-likelihood) entropy in bits of a histogram of counts."""
    counts = counts[counts > 0]
    n = counts.sum()
    p = counts / n
    return float(-(p * np.log2(p)).sum())


def hash_rows(codes: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Hash each row of a non-negative integer matrix to one uint64.

    A random linear hash modulo 2**64 (odd multipliers), so that two different rows collide
    with probability about 2**-63; with 10**4 rows the chance of any collision is < 1e-11.

    Parameters
    ----------
    codes : ndarray of shape (n_samples, n_units)
        Integer symbols, e.g. bin indices.
    chunk : int
        Rows per block, which bounds the uint64 temporary to ``chunk * n_units * 8`` bytes.

    Returns
    -------
    ndarray of shape (n_samples,), dtype uint64
    """
    n, d = codes.shape
    rng = np.random.default_rng(_HASH_RNG_SEED)
    mult = rng.integers(0, 2**63, size=d, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    out = np.empty(n, dtype=np.uint64)
    for start in range(0, n, chunk):
        block = codes[start : start + chunk].astype(np.uint64)
        out[start : start + chunk] = block @ mult  # (chunk,) wraps modulo 2**64
    return out


def symbols(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Relabel arbitrary symbols as 0..k-1; return (labels, k)."""
    uniq, inv = np.unique(values, return_inverse=True)
    return inv.reshape(-1), len(uniq)


def discrete_mi(t: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Plug-in H(T), H(Y) and I(T;Y) in bits for two discrete symbol arrays of equal length."""
    t_sym, k_t = symbols(t)
    y_sym, k_y = symbols(y)
    H_T = entropy_from_counts(np.bincount(t_sym, minlength=k_t))
    H_Y = entropy_from_counts(np.bincount(y_sym, minlength=k_y))
    H_TY = entropy_from_counts(np.bincount(t_sym * k_y + y_sym, minlength=k_t * k_y))
    return H_T, H_Y, max(H_T + H_Y - H_TY, 0.0)
