"""Sliced mutual information (Goldfeld & Greenewald 2021), with equal-mass binning in 1-D.

Z. Goldfeld, K. Greenewald (2021), "Sliced mutual information: a scalable measure of
statistical dependence", NeurIPS: ``SI(X;T) = E_{theta, phi} I(theta^T X; phi^T T)`` over
independent uniform directions on the unit spheres; estimated by averaging a 1-D estimator over
m random pairs of directions (error O(m^-1/2) from the directions, plus the 1-D estimator's).
Used to study deep nets by Wongso, Ghosh & Motani (2023), "Using sliced mutual information to
study memorization and generalization in deep neural networks", AISTATS.

The 1-D base estimator here is the plug-in mutual information of **equal-mass (quantile)
bins** of each projection, with the Miller-Madow correction. Why this one:

* in one dimension binning has no curse of dimensionality: with N = 10,000 samples and 16
  bins a cell of the 2-D joint table holds ~39 samples on average, so the plug-in estimate has
  a first-order bias of ~(bins - 1)^2 / (2 N ln 2) = 0.016 bits, which Miller-Madow removes;
* equal-mass bins are invariant to any increasing transform of a projection, so the estimate
  does not depend on the scale of the layer (tanh or ReLU, 10 or 10,000 units): the resolution
  is set by ``bins``, not by the activations' units; the marginal entropies are log2(bins) and
  the ceiling of every slice's I(X;T) is log2(bins) (of at most N bins: min(bins, N) are used),
  far from what a projection carries;
* it handles a discrete Y directly (I(T;Y) projects T only, as the definition asks) and ties
  (dead ReLU rows project to equal values, which get equal bins);
* it vectorises over slices: one matrix product for all projections, one sort per row for the
  edges, one comparison per edge for the codes and one ``bincount`` for every slice's joint
  tables, O(m N (d + log N + bins)); X's side is computed once per input tensor and reused
  for every layer and evaluation (:mod:`infoflow.estimators._memo`).

k-NN (KSG) estimators are less biased for smooth densities but need a neighbour search per
slice (no batched form in torch) and are not defined for ties; a Gaussian (correlation)
estimator sees only linear dependence.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

import infoflow.estimators._common as _common
from infoflow.estimators._common import LN2, check_bounds, check_params, diagnostics
from infoflow.estimators._memo import input_side


def _as_tensor(a: Any, device: torch.device | None = None) -> torch.Tensor:
    t = a.detach() if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))
    return t if device is None else t.to(device)


def directions(d: int, slices: int, seed: int) -> torch.Tensor:
    """``slices`` independent uniform unit vectors in R^d as columns, shape (d, slices), float64.

    Drawn on the host from a generator seeded with ``seed``: the same directions on every
    device, at every epoch and for every layer of that width.
    """
    gen = torch.Generator().manual_seed(seed)
    G = torch.randn((d, slices), generator=gen, dtype=torch.float64)  # (d, m)
    return G / G.norm(dim=0, keepdim=True).clamp(min=1e-300)


def projections(Z: torch.Tensor, slices: int, seed: int, work: torch.dtype) -> torch.Tensor:
    """``Z @ directions(d, slices, seed)`` transposed: the projections of the rows of ``Z``
    (N, d) on the seeded directions, in ``work`` on Z's device, shape (slices, N).

    Wider than ``_common.WIDE_UNITS`` units: by :func:`_wide_projections`, in row blocks of the
    directions, without the (d, slices) float64 directions or a converted copy of Z.
    """
    if Z.shape[1] > _common.WIDE_UNITS:
        return _wide_projections(Z, slices, seed, work)
    phi = directions(Z.shape[1], slices, seed).to(Z.device, work)  # (d, m)
    return (Z.to(work) @ phi).T.contiguous()  # (m, N)


def _wide_projections(Z: torch.Tensor, slices: int, seed: int, work: torch.dtype) -> torch.Tensor:
    """:func:`projections` accumulated over blocks of units: the same directions up to rounding.

    The directions' Gaussian draws come from the same generator, block after block of a
    multiple of 16 rows: torch's CPU normal sampler fills whole groups of 16 values, so the
    blocks concatenate to the very draws of :func:`directions` (tests/test_estimators_wide.py
    checks it). The products with the unnormalised draws are summed in ``work`` and divided by
    the directions' norms, summed over the blocks in float64, at the end (projection is
    linear). A block of Z is a view where Z is already in ``work``, and a block of draws holds
    ``_common.BLOCK_ELEMS / 4`` values (8,192 units of 128 slices: the product is then as fast
    as one whole product; 416 units ran 1.7x slower); a Z to convert is taken in blocks of at
    most ``_common.BLOCK_ELEMS`` of its values.
    """
    n, d = Z.shape
    rows = (_common.BLOCK_ELEMS // 4) // slices  # units per block
    if Z.dtype != work:
        rows = min(rows, _common.BLOCK_ELEMS // max(n, 1))
    rows = 16 * max(1, rows // 16)  # a multiple of 16: the draws of directions()
    gen = torch.Generator().manual_seed(seed)
    P = torch.zeros((n, slices), dtype=work, device=Z.device)  # (N, m)
    norm2 = torch.zeros(slices, dtype=torch.float64)  # (m,) on the host, as the draws
    for r0 in range(0, d, rows):
        r = min(rows, d - r0)
        G = torch.randn((r, slices), generator=gen, dtype=torch.float64)  # (r, m)
        norm2 += G.square().sum(0)
        P.addmm_(Z[:, r0 : r0 + r].to(work), G.to(Z.device, work))  # (N, m)
    norm = norm2.sqrt().clamp(min=1e-300)  # (m,) as directions() clamps; ~sqrt(d) here
    return P.div_(norm.to(Z.device, work)).T.contiguous()  # (m, N)


# Up to this many bins, a value's bin is found by comparing it with every edge (one
# vectorised pass per edge, into uint8): 5x faster than a binary search (searchsorted) of
# (128, 10,000) values against 15 edges on the host.
COMPARE_BINS = 64


def quantile_codes(P: torch.Tensor, bins: int) -> torch.Tensor:
    """Equal-mass bin index of every value of every row of ``P`` (m, N), shape (m, N).

    The inner edges of row s are its order statistics at ranks ``r_k = floor(k N / bins)``,
    k = 1..bins-1, and a value's bin is the number of edges at or below it
    (``searchsorted(edges, value, right=True)``), so equal values share a bin and each bin holds
    N / bins values when there are no ties. One sort of values per row gives the edges (and
    the check that every value is finite: a ``ValueError`` names a NaN or inf); on the
    host it is NumPy's (a vectorised sort: on a (128, 10,000) float32 array 6x faster than an
    argsort, and 15x faster than torch's CPU sort). Codes are uint8 for up to
    ``COMPARE_BINS`` bins, else int64.
    """
    n = P.shape[1]
    cpu = P.device.type == "cpu"
    if n == 0:
        return torch.zeros(P.shape, dtype=torch.uint8, device=P.device)
    S = torch.from_numpy(np.sort(P.numpy(), axis=1)) if cpu else P.sort(1).values  # (m, N)
    # both sorts put -inf first and +inf and NaN last: the two ends tell whether every value is
    # finite, without another pass over P
    if not bool(torch.isfinite(S[:, [0, -1]]).all()):
        raise ValueError("activations and inputs must be finite, got NaN or inf")
    ranks = (torch.arange(1, bins, device=P.device) * n) // bins  # (bins - 1,), each < N
    edges = S[:, ranks].contiguous()  # (m, bins - 1)
    if bins > COMPARE_BINS:
        return torch.searchsorted(edges, P.contiguous(), right=True)  # (m, N)
    if cpu:  # NumPy's comparisons into uint8 are 3x faster than torch's here
        return torch.from_numpy(_codes_numpy(P.numpy(), edges.numpy()))
    return _codes_torch(P, edges)


def _codes_numpy(P: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``#{k: edges[s, k] <= P[s, j]}`` for (m, N) values and (m, K) edges, uint8, K < 256."""
    codes = np.zeros(P.shape, dtype=np.uint8)  # (m, N)
    for k in range(edges.shape[1]):  # one vectorised comparison per edge
        codes += P >= edges[:, k : k + 1]
    return codes


def _codes_torch(P: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """:func:`_codes_numpy` in torch, on P's device."""
    codes = torch.zeros(P.shape, dtype=torch.uint8, device=P.device)  # (m, N)
    for k in range(edges.shape[1]):
        codes += P >= edges[:, k : k + 1]
    return codes


def _input_codes(X: torch.Tensor, slices: int, bins: int, seed: int, work: torch.dtype):
    """The equal-mass codes of X's ``slices`` projections, shape (slices, N): the X side."""
    P_X = projections(X, slices, 2 * seed, work)  # (m, N)
    return quantile_codes(P_X, bins)  # a NaN or inf in a row of X reaches every slice


def _input_side(
    X: torch.Tensor, slices: int, bins: int, seed: int, work: torch.dtype, n_classes: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """X's codes (slices, N) and, where the three-way tables fit (:data:`MAX_TRIPLE_CELLS`),
    every value's cell offset ``(s * bins + code) * bins * n_classes`` in them, int32 (m, N):
    the part of each layer's cells that X alone fixes."""
    code_X = _input_codes(X, slices, bins, seed, work)  # (m, N)
    if slices * bins * bins * n_classes > MAX_TRIPLE_CELLS:
        return code_X, None
    return code_X, _triple_base(code_X, bins, n_classes)


def _triple_base(code_X: torch.Tensor, bins: int, C: int) -> torch.Tensor:
    """``(s * bins + code_X[s, j]) * bins * C`` for every value, int32, shape (m, N)."""
    rows = torch.arange(code_X.shape[0], device=code_X.device, dtype=torch.int32)[:, None] * bins
    return (rows + code_X.to(torch.int32)).mul_(bins * C)  # (m, N)


def _entropies(counts: torch.Tensor, n: int, miller_madow: bool) -> torch.Tensor:
    """Plug-in entropies in bits of the tables ``counts`` (m, k) (+ Miller-Madow), shape (m,)."""
    p = counts.double() / n
    H = -(p * torch.where(p > 0, p.log2(), 0.0)).sum(1)  # (m,)
    return _miller_madow(H, counts, n) if miller_madow else H


def _miller_madow(H: torch.Tensor, counts: torch.Tensor, n: int) -> torch.Tensor:
    """``H + (occupied cells - 1) / (2 n ln 2)``: the plug-in entropies H (m,) of the tables
    ``counts`` (m, k), Miller-Madow corrected."""
    return H + ((counts > 0).sum(1) - 1).double() / (2.0 * n * LN2)


def _offsets(a: torch.Tensor, b: torch.Tensor, ka: int, kb: int) -> torch.Tensor:
    """Cell ``s * ka * kb + a * kb + b`` of every value in the stacked (m, ka, kb) tables:
    int32 where the cells fit (7x faster to form and count than int64 on the host)."""
    m = a.shape[0]
    dtype = torch.int32 if m * ka * kb < 2**31 else torch.int64
    offset = torch.arange(m, device=a.device, dtype=dtype)[:, None] * (ka * kb)  # (m, 1)
    return (offset + a.to(dtype) * kb + b.to(dtype)).reshape(-1)  # (m N,)


def mi_of_codes(a: torch.Tensor, b: torch.Tensor, ka: int, kb: int, mm: bool) -> torch.Tensor:
    """Plug-in I(a_s; b_s) in bits for every row s of two code arrays (m, N), shape (m,).

    One ``bincount`` over the offsets ``s * ka * kb + a * kb + b`` gives every row's joint
    table. ``b`` may be one row (shape (1, N)) shared by every slice (the labels).
    """
    m, n = a.shape
    joint = torch.bincount(_offsets(a, b, ka, kb), minlength=m * ka * kb).view(m, ka, kb)
    return _mi_of_table(joint, n, mm)


def _mi_of_table(joint: torch.Tensor, n: int, mm: bool) -> torch.Tensor:
    """``H(a) + H(b) - H(a, b)`` in bits of the stacked joint tables (m, ka, kb), shape (m,).

    At most ``min(H(a), H(b))`` of the plug-in margins. The plug-in MI is (up to rounding);
    Miller-Madow adds ``(m_a + m_b - m_ab - 1) / (2 N ln 2)``, a first-order bias term that
    assumes several samples per occupied cell and is not bounded by the margins: with as many
    bins as samples every cell holds one sample and it added (N - 1) / (2 N ln 2) = 0.72 bits
    above log2 N (digits, bins=400: I_XT 9.21 > H_max 8.49), and where a slice determines the
    label it adds (C - 1) / (2 N ln 2) above H(Y). So the correction is taken only up to the
    margins' entropy: the information the sample's own table can carry, which is also the
    population's ceiling for equal-mass margins (log2 bins). Slices below the cap, all of
    them on the defaults' tables, keep their numbers bit for bit.
    """
    m = joint.shape[0]
    a, b, ab = joint.sum(2), joint.sum(1), joint.view(m, -1)  # (m, ka), (m, kb), (m, ka kb)
    H_a, H_b, H_ab = (_entropies(c, n, False) for c in (a, b, ab))  # plug-in, (m,) each
    if mm:
        mi = _miller_madow(H_a, a, n) + _miller_madow(H_b, b, n) - _miller_madow(H_ab, ab, n)
    else:
        mi = H_a + H_b - H_ab
    return torch.minimum(mi, torch.minimum(H_a, H_b))


# The three-way tables (slice, X's bin, T's bin, label) are counted in one pass while they
# hold at most this many cells (for 128 slices, 16 bins and 10 classes: 327,680).
MAX_TRIPLE_CELLS = 2**24


def slice_mis(
    code_X: torch.Tensor,
    code_T: torch.Tensor,
    labels: torch.Tensor,
    bins: int,
    C: int,
    mm: bool,
    base_X: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """I(X_s; T_s) and I(T_s; Y) in bits for every slice s, each of shape (m,).

    ``code_X``, ``code_T`` (m, N) are the slices' bins, ``labels`` (N,) the classes 0..C-1.
    One ``bincount`` of the (slice, X bin, T bin, label) cells gives both joint tables as its
    margins (exact integer sums) when they fit in ``MAX_TRIPLE_CELLS``; else two. ``base_X``:
    X's part of the cells (:func:`_triple_base`), when the caller kept it.
    """
    m, n = code_T.shape
    if m * bins * bins * C > MAX_TRIPLE_CELLS:
        return (
            mi_of_codes(code_X, code_T, bins, bins, mm),
            mi_of_codes(code_T, labels[None, :], bins, C, mm),
        )
    if base_X is None:
        base_X = _triple_base(code_X, bins, C)
    # cell s * bins * bins * C + x * bins * C + t * C + y, in place: int32 (< 2^24 cells)
    cells = code_T.to(torch.int32).mul_(C).add_(labels.to(torch.int32)).add_(base_X)  # (m, N)
    joint = torch.bincount(cells.view(-1), minlength=m * bins * bins * C)
    joint = joint.view(m, bins, bins, C)  # (m, X bin, T bin, label)
    return _mi_of_table(joint.sum(3), n, mm), _mi_of_table(joint.sum(1), n, mm)


def sliced(
    T: Any,
    X: Any,
    Y: Any,
    *,
    slices: int = 128,
    bins: int = 16,
    bias_correction: str = "miller_madow",
    seed: int = 0,
) -> dict[str, Any]:
    """Sliced mutual information SI(X;T) and SI(T;Y) in bits (Goldfeld & Greenewald 2021).

    ``SI(X;T)`` is the mean over ``slices`` random pairs of unit directions (theta for X, phi
    for T) of ``I(theta^T X; phi^T T)``; ``SI(T;Y)`` the mean over directions phi of
    ``I(phi^T T; Y)`` (T projected, the label kept whole). Each 1-D mutual information is the
    plug-in estimate of ``bins`` equal-mass bins per projection (see the module docstring for
    why), Miller-Madow corrected by default.

    Parameters
    ----------
    T : tensor or ndarray of shape (n_samples, ...)
        Activations; trailing axes are flattened. A tensor is processed on its own device.
        Wider than 16,384 units (``_common.WIDE_UNITS``), projected in blocks of units
        (:func:`_wide_projections`): no (units, slices) float64 directions are held.
    X : tensor or ndarray of shape (n_samples, ...)
        Inputs (required for I(X;T)); wide inputs alike.
    Y : tensor or ndarray of shape (n_samples,)
        Discrete labels.
    slices : int, default 128
        Random direction pairs averaged (>= 1). The directions' Monte Carlo error falls as
        slices^-1/2 (the column ``I_XT_se``); the cost is linear (one (N, d) x (d, slices)
        product per variable).
    bins : int, default 16
        Equal-mass bins per projection (>= 2): the base estimator's resolution. N samples make
        at most N bins, so ``min(bins, N)`` are used (more would only add empty bins) and a
        slice's I(X;T) is at most log2 of that (``I_XT_max``); more bins resolve finer
        dependence at a plug-in bias of ~(bins - 1)^2 / (2 N ln 2) bits (removed to first
        order by Miller-Madow). The tables hold slices x bins^2 cells: keep bins well below N.
    bias_correction : {'miller_madow', 'none'}, default 'miller_madow'
        Miller-Madow correction of the three plug-in entropies of each slice, taken at most up
        to the slice's ceiling ``min(H(a), H(b))`` of its plug-in margins (see
        :func:`_mi_of_table`).
    seed : int, default 0
        Seeds the directions (the same at every epoch and for every layer of a width).

    Returns
    -------
    dict
        ``I_XT``, ``I_TY``: the sliced estimates (means over slices, clipped at 0);
        ``I_XT_se``, ``I_TY_se``: standard errors over slices; ``I_XT_max`` =
        log2(min(bins, N)), the bins in effect; ``saturated``: ``I_XT >= 0.99 I_XT_max``; and
        ``n_samples``, ``H_max``, ``H_Y``. Every slice's I(X;T) is at most min(H(a), H(b)) <=
        I_XT_max <= H_max and its I(T;Y) at most the plug-in H_Y, so the means are too.

    Notes
    -----
    Invariant to sample order, to translations and common scalings of T (equal-mass bins),
    but not to rotations of T beyond the average over directions (a finite set of slices).
    Sliced MI is not the MI of the layer and does not follow the data-processing inequality
    across layers (a deeper layer can align its dependence on X with more directions); it is
    0 if and only if X and T are independent (Goldfeld & Greenewald 2021).
    """
    check_params({"slices": slices, "bins": bins, "bias_correction": bias_correction, "seed": seed})
    if X is None:
        raise ValueError("sliced needs the inputs X for I(X;T), got None")
    mm = bias_correction == "miller_madow"
    with torch.no_grad():
        T = _as_tensor(T)
        T = T.reshape(T.shape[0], -1)  # (N, d)
        dev = T.device
        X_in, X = X, _as_tensor(X, dev)
        X = X.reshape(X.shape[0], -1)  # (N, d_x)
        y = _as_tensor(Y, dev).reshape(-1)  # (N,)
        n = len(T)
        if not n == len(X) == len(y):
            raise ValueError(f"T, X and Y have {n}, {len(X)} and {len(y)} samples")
        _, labels = torch.unique(y, return_inverse=True)  # (N,) in 0..C-1
        n_classes = int(labels.max()) + 1 if n else 1
        work = torch.float64 if T.dtype == torch.float64 else torch.float32
        # N samples make at most N equal-mass bins: with more, the edges at ranks
        # floor(k N / bins) repeat and the extra bins stay empty, the same cells as N bins (so
        # the same estimates) but log2(bins) would overstate the ceiling (bins=400 on 360
        # samples: 8.64 > H_max 8.49) and the tables grow as bins^2 for nothing
        bins = min(bins, max(n, 1))
        # X's codes are the same for every layer and evaluation: computed once per input tensor
        code_X, base_X = input_side(
            X_in,
            ("sliced", slices, bins, seed, work, dev, n_classes),
            lambda: _input_side(X, slices, bins, seed, work, n_classes),
        )  # (m, N) each
        P_T = projections(T, slices, 2 * seed + 1, work)  # (m, N)
        # a NaN or inf anywhere in a row of T reaches every projection of that row
        code_T = quantile_codes(P_T, bins)  # (m, N)
        I_XT, I_TY = slice_mis(code_X, code_T, labels, bins, n_classes, mm, base_X)  # (m,) each
        counts = torch.bincount(labels, minlength=n_classes).cpu().numpy()
    root_m = math.sqrt(slices)
    I_XT_mean = max(float(I_XT.mean()), 0.0)
    out = {
        "I_XT": I_XT_mean,
        "I_TY": max(float(I_TY.mean()), 0.0),
        "I_XT_se": float(I_XT.std()) / root_m if slices > 1 else math.nan,
        "I_TY_se": float(I_TY.std()) / root_m if slices > 1 else math.nan,
        **diagnostics(I_XT_mean, counts),
        "I_XT_max": math.log2(bins),  # the bins in effect: min(bins, N)
    }
    out["saturated"] = bool(I_XT_mean >= 0.99 * out["I_XT_max"])
    return check_bounds("sliced", out)
