"""Binned (plug-in) mutual information of a whole layer, after Shwartz-Ziv & Tishby (2017)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from infoflow.estimators._common import (
    as_2d,
    check_bounds,
    check_params,
    diagnostics,
    entropy_from_counts,
    hash_multipliers,
    miller_madow,
    parse_range,
    symbols,
    to_numpy,
)

# Largest number of bins per unit: bin indices are stored as uint32.
MAX_BINS = 2**32 - 1

# Activations per row block of the codes and the hash: the (rows, units) temporaries of a wide
# layer stay small (4 MiB of float32 codes, 8 MiB of int64) instead of the layer's size.
_BLOCK_ELEMS = 2**20

# Tensor dtypes binned as they are, with the NumPy type of their elements.
_FLOATS = {torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64}


def _code_dtype(n_bins: int) -> type:
    return np.uint16 if n_bins <= np.iinfo(np.uint16).max else np.uint32


def _layer(T: Any) -> torch.Tensor:
    """Activations as a float16/32/64 tensor of shape (n_samples, n_units).

    A tensor stays on its device (a view where the reshape allows); a NumPy array shares its
    memory (a copy if read-only or with negative strides). Other dtypes are converted, as NumPy
    promotes them against float32: bool and small integers to float32, larger ones to float64.
    """
    if isinstance(T, torch.Tensor) and T.dtype in _FLOATS:
        T = T.detach()
    else:
        a = to_numpy(T)
        if a.dtype not in (np.float16, np.float32, np.float64):
            work = np.result_type(a.dtype, np.float32)
            a = a.astype(work if work in (np.float32, np.float64) else np.float64)
        elif not a.flags.writeable or min(a.strides, default=0) < 0:
            a = a.copy()
        T = torch.from_numpy(a)
    if T.ndim == 0 or T.numel() == 0:
        raise ValueError(f"activations must have samples and units, got shape {tuple(T.shape)}")
    return T[:, None] if T.ndim == 1 else T.reshape(len(T), -1)  # (n, d)


def _count_outside(T: torch.Tensor, lo: float, hi: float) -> int:
    """Number of activations below ``lo`` or above ``hi``, in row blocks on ``T``'s device.

    Compared as NumPy compares an array with a Python float: in the layer's dtype, the bound
    rounded to it (``float32(-0.1)`` is not below ``-0.1``). The rounded bound is exact in that
    dtype, so the comparison is exact on any device.
    """
    with np.errstate(over="ignore"):  # a bound beyond the dtype's range rounds to +-inf
        lo_t, hi_t = (float(np.array(v).astype(_FLOATS[T.dtype])) for v in (lo, hi))
    count = torch.zeros((), dtype=torch.int64, device=T.device)
    for block in T.split(max(1, _BLOCK_ELEMS // T.shape[1])):  # (b, d)
        count += torch.count_nonzero(block < lo_t) + torch.count_nonzero(block > hi_t)
    return int(count)


def uniform_grid(
    T: Any,
    *,
    bins: int | None = 30,
    bin_width: float | None = None,
    range: tuple[float, float] | None = None,
) -> tuple[float, float, int, float]:
    """Equal-width bins shared by all units: ``code = clip(floor((t - lo) * scale), 0, n - 1)``.

    Parameters
    ----------
    T : ndarray or tensor of shape (n_samples, n_units)
        Activations; a tensor is reduced on its own device. NaN is refused, and so is +-inf
        with the observed range; a fixed range clips +-inf into the end bins.
    bins : int or None
        Number of bins over the range (None when ``bin_width`` is given).
    bin_width : float or None
        Fixed width; the bin count is ``ceil((hi - lo) / bin_width)`` (at least 1).
    range : (lo, hi) or None
        Fixed range, or None for the layer's observed ``[min, max]``.

    Returns
    -------
    lo : float
        Left edge of bin 0.
    scale : float
        Bins per activation unit (``bins / (hi - lo)`` or ``1 / bin_width``); 0 for a constant
        layer, whose samples all fall in bin 0.
    n_bins : int
        Bins per unit.
    frac_out_of_range : float
        Share of activations outside a fixed range, clipped into the end bins (0 otherwise).
    """
    T = _layer(T)  # (n, d)
    t_min, t_max = (float(v) for v in torch.aminmax(T))  # NaN if any activation is NaN
    if math.isnan(t_min) or (range is None and not math.isfinite(t_min + t_max)):
        raise ValueError(f"activations must be finite, got min {t_min}, max {t_max}")
    if range is None:
        (lo, hi), frac_out = (t_min, t_max), 0.0
    else:
        lo, hi = range
        inside = lo <= t_min and t_max <= hi  # nothing to count (e.g. tanh in [-1, 1])
        frac_out = 0.0 if inside else _count_outside(T, lo, hi) / T.numel()
    if bin_width is None:
        assert bins is not None
        n_bins = bins
        scale = bins / (hi - lo) if hi > lo else 0.0
    else:
        ratio = (hi - lo) / bin_width if hi > lo else 1.0  # inf for a subnormal width
        if ratio > MAX_BINS:  # compared as a float: ceil(inf) would raise OverflowError
            raise ValueError(
                f"estimator.bin_width gives {ratio:.6g} bins per unit over [{lo}, {hi}], more "
                f"than {MAX_BINS}; use a width >= {(hi - lo) / MAX_BINS:.3g}, got {bin_width!r}"
            )
        n_bins_f = math.ceil(ratio)
        n_bins, scale = max(int(n_bins_f), 1), (1.0 / bin_width if hi > lo else 0.0)
    return lo, scale, n_bins, frac_out


def hash_uniform_bins(
    T: Any, lo: float, scale: float, n_bins: int, chunk: int | None = None
) -> np.ndarray:
    """``hash_rows`` of the equal-width bin codes, computed in torch on ``T``'s device.

    Bit-identical to ``hash_rows(codes)`` with ``codes = clip(floor((T - lo) * scale), 0,
    n_bins - 1)`` computed in float32 (float64 for a float64 ``T``; float16 is upcast exactly),
    ``lo`` and ``scale`` rounded to float32: the same symbols, estimates and collision bound.
    Each step of the codes is one IEEE operation rounded to the work type, as in NumPy, on any
    device. The hash ``sum_k m_k c_k mod 2**64`` is an int64 multiply-and-sum: torch's int64
    arithmetic wraps modulo 2**64 on CPU and CUDA alike, so it has the bits of ``hash_rows``'
    uint64 arithmetic, and integer addition makes it independent of the block size, the order
    of the sum and the thread count. Only the ``n`` hashes come to the host.

    Parameters
    ----------
    T : ndarray or tensor of shape (n_samples, n_units)
        Activations (see :func:`_layer` for the dtypes).
    lo, scale, n_bins
        The grid of :func:`uniform_grid`.
    chunk : int or None
        Rows per block; None for about ``2**20`` activations per block.

    Returns
    -------
    ndarray of shape (n_samples,), dtype uint64
    """
    T = _layer(T)  # (n, d)
    (n, d), dev = T.shape, T.device
    work = torch.float64 if T.dtype == torch.float64 else torch.float32
    lo32, scale32 = float(np.float32(lo)), float(np.float32(scale))
    cmax = float(np.asarray(n_bins - 1).astype(_FLOATS[work]))  # the clip bound in work's type
    mult = torch.from_numpy(hash_multipliers(d).view(np.int64)).to(dev)  # (d,) same bits
    rows = min(chunk or max(1, _BLOCK_ELEMS // d), n)
    codes = torch.empty((rows, d), dtype=work, device=dev)  # reused: no allocation per block
    ints = torch.empty((rows, d), dtype=torch.int64, device=dev)
    out = torch.empty(n, dtype=torch.int64, device=dev)
    for start in range(0, n, rows):
        block = T[start : start + rows]  # (b, d)
        b = len(block)
        torch.sub(block.to(work), lo32, out=codes[:b])  # (b, d); .to copies float16 only
        codes[:b].mul_(scale32).clamp_(0, cmax)
        c = ints[:b].copy_(codes[:b]).mul_(mult)  # truncation = floor on values >= 0; wraps
        torch.sum(c, dim=1, out=out[start : start + b])  # (b,) modulo 2**64
    return out.cpu().numpy().view(np.uint64)


def quantile_edges(
    T: np.ndarray, bins: int, range: tuple[float, float] | None
) -> tuple[np.ndarray, np.ndarray, float]:
    """The values binned (T, or T clipped to a fixed range), the inner edges of ``bins``
    equal-mass bins at the quantiles of all of them pooled (repeated edges merged) and the
    share of values outside a fixed range. ``np.quantile`` sorts a copy of the values (and a
    fixed range clips into another): memory of one or two layers, see estimators/cost.py."""
    if range is None:
        values, frac_out = T, 0.0
    else:
        lo, hi = range
        frac_out = float((np.count_nonzero(T < lo) + np.count_nonzero(T > hi)) / T.size)
        values = np.clip(T, lo, hi)
    probs = np.linspace(0.0, 1.0, bins + 1)[1:-1]
    inner = np.unique(np.quantile(values, probs)).astype(values.dtype)  # (<= bins - 1,)
    return values, inner, frac_out


def hash_quantile_bins(values: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """``hash_rows`` of ``bucketize(values, inner, right=True)``, in row blocks: bit for bit
    (integer products and sums modulo 2**64 do not depend on the blocks, see
    :func:`hash_uniform_bins`), with temporaries of ~``_BLOCK_ELEMS`` codes instead of the
    layer's int64 codes and their uint64 copy (5 and 1 GiB for 10,000 x 65,536).

    Parameters
    ----------
    values : ndarray of shape (n_samples, n_units)
    inner : ndarray of shape (k,)
        Sorted inner edges; a value's code is the number of edges at or below it.

    Returns
    -------
    ndarray of shape (n_samples,), dtype uint64
    """
    n, d = values.shape
    edges = torch.from_numpy(inner)
    mult = torch.from_numpy(hash_multipliers(d).view(np.int64))  # (d,) same bits
    out = torch.empty(n, dtype=torch.int64)
    rows = max(1, _BLOCK_ELEMS // max(d, 1))
    for start in range(0, n, rows):
        block = torch.from_numpy(np.ascontiguousarray(values[start : start + rows]))  # (b, d)
        codes = torch.bucketize(block, edges, right=True)  # (b, d) int64
        torch.sum(codes.mul_(mult), dim=1, out=out[start : start + rows])  # wraps mod 2**64
    return out.numpy().view(np.uint64)


def bin_codes(
    T: np.ndarray,
    *,
    bins: int | None = 30,
    bin_width: float | None = None,
    range: tuple[float, float] | None = None,
    strategy: str = "uniform",
) -> tuple[np.ndarray, int, float]:
    """Bin index of every activation of a layer, one set of edges shared by all its units.

    Parameters
    ----------
    T : ndarray of shape (n_samples, n_units)
        Activations.
    bins : int or None
        Number of bins (``strategy='uniform'``: equal width; ``'quantile'``: equal mass).
        None when ``bin_width`` is given.
    bin_width : float or None
        Fixed bin width in activation units (Saxe et al. 2018 for ReLU layers); the edges are
        ``lo + k * bin_width`` and their count follows from the range.
    range : (lo, hi) or None
        Fixed binning range; None takes the layer's observed ``[min, max]``. Activations outside
        a fixed range are clipped into the first or last bin.
    strategy : {'uniform', 'quantile'}
        ``quantile``: inner edges at the ``k / bins`` quantiles of all the layer's activations
        pooled over units (after clipping to a fixed range); repeated edges, e.g. from the many
        zeros of a ReLU layer, are merged, so fewer than ``bins`` bins may result.

    Returns
    -------
    codes : ndarray of shape (n_samples, n_units), unsigned integers
        Bin indices in ``0 .. n_bins - 1``; a value on an inner edge belongs to the upper bin.
    n_bins : int
        Number of bins per unit in effect.
    frac_out_of_range : float
        Fraction of activations outside a fixed range (0 for the observed range).
    """
    if strategy == "quantile":
        assert bins is not None
        values, inner, frac_out = quantile_edges(T, bins, range)
        codes = torch.bucketize(
            torch.from_numpy(np.ascontiguousarray(values)), torch.from_numpy(inner), right=True
        )  # (n, d) int64: number of inner edges <= value
        n_bins = len(inner) + 1
        return codes.numpy().astype(_code_dtype(n_bins)), n_bins, frac_out
    lo, scale, n_bins, frac_out = uniform_grid(T, bins=bins, bin_width=bin_width, range=range)
    scaled = (T - np.float32(lo)) * np.float32(scale)  # (n, d), in [0, n_bins] in range
    np.clip(scaled, 0, n_bins - 1, out=scaled)
    return scaled.astype(_code_dtype(n_bins)), n_bins, frac_out


def binning(
    T: Any,
    X: Any,
    Y: Any,
    *,
    bins: int | None = 30,
    bin_width: float | None = None,
    range: str | tuple[float, float] | list[float] = "layer",
    strategy: str = "uniform",
    bias_correction: str = "none",
) -> dict[str, Any]:
    """Binned estimate of I(X;T) and I(T;Y) in bits, treating a layer as one discrete variable.

    Each unit's activation is cut into bins (one set of edges for the whole layer); a sample's
    T is its whole row of bin indices (hashed to one integer). Entropies are plug-in
    (maximum-likelihood) estimates over the ``n`` evaluation samples, optionally with the
    Miller-Madow bias correction. This follows Shwartz-Ziv & Tishby (2017), "Opening the black
    box of deep neural networks via information", with the range and width choices discussed
    by Saxe et al. (2018), "On the information bottleneck theory of deep learning".

    Parameters
    ----------
    T : array-like of shape (n_samples, ...)
        Activations of one layer (NumPy array or torch tensor on any device); trailing axes
        are flattened.
    X : array-like of shape (n_samples, ...)
        Inputs. Unused: the network is deterministic, so T is a function of X, H(T|X) = 0 and
        I(X;T) = H(T).
    Y : array-like of shape (n_samples,)
        Discrete labels.
    bins : int or None, default 30
        Number of bins per unit, >= 2; must be None when ``bin_width`` is set.
    bin_width : float or None, default None
        Fixed bin width (edges ``lo + k * bin_width``); mutually exclusive with ``bins``.
    range : 'layer' or [lo, hi], default 'layer'
        'layer': the layer's observed [min, max] at this evaluation; [lo, hi]: a fixed range
        (e.g. [-1, 1] for tanh, as Shwartz-Ziv & Tishby), values outside clipped to the end bins.
    strategy : {'uniform', 'quantile'}, default 'uniform'
        Equal-width bins, or equal-mass bins at the quantiles of the layer's pooled activations.
    bias_correction : {'none', 'miller_madow'}, default 'none'
        'miller_madow' adds ``(m - 1) / (2 n ln 2)`` bits to every plug-in entropy (m occupied
        cells), i.e. to H(T), H(Y) and H(T,Y).

    Returns
    -------
    dict
        ``I_XT`` = H(T); ``I_TY`` = H(T) + H(Y) - H(T,Y) = H(T) - sum_y p(y) H(T|Y=y); ``H_T``
        (with Miller-Madow: the corrected, unclipped H(T));
        ``n_bins`` (bins per unit in effect); ``frac_out_of_range`` (share of activations
        clipped into the end bins of a fixed range); and the diagnostics ``n_samples``,
        ``H_max``, ``saturated``, ``H_Y`` of :func:`infoflow.estimators._common.diagnostics`.
        All information in bits.

    Notes
    -----
    Limits: ``0 <= I_XT <= log2(n_samples)``, the ceiling reached as soon as every sample
    falls in its own cell, which is common for wide layers and many bins (the estimate then
    says nothing about compression); ``0 <= I_TY <= min(H(Y), I_XT)``. Miller-Madow
    estimates, which can leave these ranges by up to ``(n_cells - 1) / (2 n ln 2)``, are
    clipped into them (``H_T`` keeps the corrected value). The estimate depends on ``bins`` /
    ``bin_width`` and on the range, as Saxe et al. (2018) showed: with the observed range, one
    large activation widens every bin.

    Where it runs: uniform (the default) in torch on the layer's device (min/max, out-of-range
    count, bin codes and row hash, block by block; a CUDA layer is never copied to the host),
    bit-identical to the same layer as a NumPy array; only the ``n`` hashes and labels come to
    the host for the counts. Quantile: on the host (NumPy).
    """
    check_params(
        {
            "bins": bins,
            "bin_width": bin_width,
            "range": range,
            "strategy": strategy,
            "bias_correction": bias_correction,
        }
    )
    fixed = parse_range(range)
    y = to_numpy(Y).reshape(-1)
    T = _layer(T) if strategy == "uniform" else as_2d(T)  # (n, d) tensor on its device / array
    if len(T) != len(y):
        raise ValueError(f"T has {len(T)} samples but Y has {len(y)}")
    if strategy == "uniform":
        lo, scale, n_bins, frac_out = uniform_grid(T, bins=bins, bin_width=bin_width, range=fixed)
        t_hash = hash_uniform_bins(T, lo, scale, n_bins)  # (n,) one symbol per sample, host
    else:  # quantile: the codes hashed block by block, never the whole (n, d) of them
        assert bins is not None
        values, inner, frac_out = quantile_edges(T, bins, fixed)
        n_bins = len(inner) + 1
        t_hash = hash_quantile_bins(values, inner)  # (n,) = hash_rows(bin_codes(...)[0])
    t_sym, k_t = symbols(t_hash)
    y_sym, k_y = symbols(y)
    counts_T = np.bincount(t_sym, minlength=k_t)
    counts_Y = np.bincount(y_sym, minlength=k_y)
    counts_TY = np.bincount(t_sym * k_y + y_sym, minlength=k_t * k_y)
    H_T = entropy_from_counts(counts_T)
    H_Y = entropy_from_counts(counts_Y)
    H_TY = entropy_from_counts(counts_TY)
    diag = diagnostics(H_T, counts_Y)
    if bias_correction == "miller_madow":
        H_T += miller_madow(counts_T)
        I_TY = H_T + H_Y + miller_madow(counts_Y) - H_TY - miller_madow(counts_TY)
        I_XT = min(H_T, diag["H_max"])  # into the ranges of an MI over N samples
        I_TY = min(max(I_TY, 0.0), H_Y, I_XT)
        diag = diagnostics(I_XT, counts_Y)
    else:
        I_XT, I_TY = H_T, max(H_T + H_Y - H_TY, 0.0)
    out = {
        "I_XT": I_XT,
        "I_TY": I_TY,
        "H_T": H_T,
        "n_bins": n_bins,
        "frac_out_of_range": frac_out,
        **diag,
    }
    return check_bounds("binning", out)
