"""Matrix-based Renyi alpha-entropy mutual information (Giraldo, Rao & Principe 2015).

L. G. Sanchez Giraldo, M. Rao, J. C. Principe (2015), "Measures of entropy from data using
infinitely divisible kernels", IEEE Trans. Inf. Theory 61(1):535-548: the entropy of a sample
is read from the eigenvalues of its normalised Gram matrix, the joint entropy from the Hadamard
product of two Gram matrices. Used for the information planes of deep nets by Yu, Wickstrom,
Jenssen & Principe (2020), "Understanding convolutional neural networks with information
theory: an initial exploration", IEEE TNNLS, and Wickstrom, Lokse, Kampffmeyer, Yu, Principe &
Jenssen (2019), "Information plane analysis of deep neural networks via matrix-based Renyi's
entropy and tensor kernels", arXiv:1909.11396.
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


def kernel_width(Z: torch.Tensor, width: float, width_rule: str, n: int) -> float:
    """The RBF kernel width sigma for the samples ``Z`` of shape (N, d).

    * ``silverman``: ``sigma = width * sqrt(tr Cov(Z)) * n ** (-1 / (4 + d))``, the
      covariance of the samples estimated on (those of the batches). Silverman's
      rule of thumb for a d-dimensional Gaussian kernel density, ``s * n^(-1/(4+d))``, with the
      spread ``s`` taken as the root of the total variance ``tr Cov = d * (mean per-unit
      variance)``: it scales with the layer's dimension as the distances between samples do
      (``E |z_i - z_j|^2 = 2 tr Cov``), so the typical kernel value ``exp(-|z_i - z_j|^2 /
      (2 sigma^2)) ~ exp(-1 / width^2)`` is the same on a 10-unit and on a 10,000-unit layer.
      The width moves with a common scaling of Z, so estimates are invariant to it.
    * ``fixed``: ``sigma = width`` in activation units (as in Yu et al. 2020's fixed widths).

    A layer without spread gets sigma = 1 (every sample equal: all entropies are 0 anyway).
    """
    if width_rule == "fixed":
        return float(width)
    total_var = float(Z.double().var(0, unbiased=False).sum()) if len(Z) else 0.0
    return _silverman(total_var, Z.shape[1], width, n)


def _silverman(total_var: float, d: int, width: float, n: int) -> float:
    """The Silverman width of :func:`kernel_width` from the total variance tr Cov of d units."""
    if total_var <= 0:
        return 1.0
    return float(width * math.sqrt(total_var) * n ** (-1.0 / (4 + d)))


def _grams(Z: torch.Tensor, sigma: float) -> torch.Tensor:
    """RBF Gram matrices ``exp(-|z_i - z_j|^2 / (2 sigma^2))`` of (k, b, d) batches: (k, b, b).

    Exact in both limits of the width: where ``2 sigma^2`` rounds to 0 in Z's dtype (sigma below
    ~1e-23 in float32, e.g. ``estimator.width=1e-30``) a positive distance over it is -inf
    (kernel 0) and a zero one (the diagonal, equal rows) 0/0 = NaN, which is the kernel 1 of
    equal points, so NaN exponents are set to 0: K tends to the identity (each distinct sample
    its own cluster) instead of a NaN matrix that ``eigvalsh`` cannot diagonalise. An infinite
    sigma gives -0 exponents, K = 1.
    """
    sq = Z.square().sum(-1)  # (k, b)
    D = torch.baddbmm(sq[:, None, :] + sq[:, :, None], Z, Z.transpose(1, 2), alpha=-2.0)
    return _kernel(D, sigma)  # (k, b, b)


def _kernel(D: torch.Tensor, sigma: float) -> torch.Tensor:
    """``exp(-D / (2 sigma^2))`` of squared distances D (k, b, b), in place (see :func:`_grams`):
    rounding negatives clipped, an exact zero diagonal, 0/0 read as the kernel 1."""
    D.clamp_(min=0.0).diagonal(dim1=1, dim2=2).zero_()  # exact zero self-distance  # (k, b, b)
    try:
        two_var = 2.0 * sigma**2
    except OverflowError:  # a Python float ** raises where * would give inf (sigma > 1e154)
        two_var = math.inf
    E = D.div_(-two_var)  # (k, b, b) exponents, in place
    return torch.exp(E.nan_to_num_(nan=0.0))  # only 0/0 is NaN here: equal points, kernel 1


def _input_side(
    X: torch.Tensor,
    alpha: float,
    width: float,
    width_rule: str,
    batch_size: int,
    batches: int | None,
    seed: int,
    work: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """The X side of :func:`renyi`: batch indices (k, b), X's Gram matrices (k, b, b), their
    entropies S(X) (k,) and X's kernel width."""
    idx = batch_indices(len(X), batch_size, batches, seed).to(X.device)  # (k, b)
    sigma_X, K_X = _batch_grams(X, idx, width, width_rule, work)  # float, (k, b, b)
    return idx, K_X, entropies(K_X, alpha), sigma_X


def _batch_grams(
    A: torch.Tensor, idx: torch.Tensor, width: float, width_rule: str, work: torch.dtype
) -> tuple[float, torch.Tensor]:
    """(kernel width, Gram matrices (k, b, b)) of ``A``'s rows in the batches ``idx`` (k, b):
    only the batches' rows, centred on their mean (smaller rounding in the distances). Wider
    than ``_common.WIDE_UNITS`` units: in column blocks (:func:`_wide_batch_grams`)."""
    if A.shape[1] > _common.WIDE_UNITS:
        return _wide_batch_grams(A, idx, width, width_rule, work)
    k, b = idx.shape
    rows = A[idx.reshape(-1)]  # (k b, d)
    Ab = rows.to(work)
    if not bool(torch.isfinite(Ab).all()):
        raise ValueError("activations and inputs must be finite, got NaN or inf")
    Ab = Ab - Ab.mean(0)
    # squared distances must stay finite (inf - inf would be NaN in the Gram matrix): float32
    # rows beyond ~1e19 are taken in float64, and rows too large even for it are refused
    if not _distances_fit(Ab) and work == torch.float32:
        Ab = rows.to(torch.float64)
        Ab = Ab - Ab.mean(0)
    if not _distances_fit(Ab):
        raise ValueError(
            "activations and inputs must have squared distances below the float64 range "
            f"(~1e308), got values up to {float(rows.abs().max())!r}"
        )
    sigma = kernel_width(Ab, width, width_rule, b)
    return sigma, _grams(Ab.view(k, b, -1), sigma)


def _wide_batch_grams(
    A: torch.Tensor, idx: torch.Tensor, width: float, width_rule: str, work: torch.dtype
) -> tuple[float, torch.Tensor]:
    """:func:`_batch_grams` of a wide ``A`` (N, d), accumulated over blocks of its columns.

    The centring (each unit's mean over the batches' rows), the total variance of the
    Silverman width, the squared norms and the products ``z_i . z_j`` are all sums over units,
    so blocks of ``_common.BLOCK_ELEMS // (k b)`` columns give them exactly up to the order of
    the float sums; the memory is a block's few temporaries and the (k, b, b) sums, never the
    (k b, d) rows nor a float64 copy of them. float32 sums that overflow are redone in float64,
    as :func:`_batch_grams` does.
    """
    k, b = idx.shape
    rows = idx.reshape(-1)  # (k b,)
    sums = _column_sums(A, rows, k, work)
    if sums is None and work == torch.float32:  # squared distances beyond float32
        sums = _column_sums(A, rows, k, torch.float64)
    if sums is None:
        top = max(float(A[rows, c0 : c0 + 4096].abs().max()) for c0 in range(0, A.shape[1], 4096))
        raise ValueError(
            "activations and inputs must have squared distances below the float64 range "
            f"(~1e308), got values up to {top!r}"
        )
    D, sq, total_var = sums  # (k, b, b) -2 z_i . z_j, (k, b) |z_i|^2, float
    if width_rule == "fixed":
        sigma = float(width)
    else:
        sigma = _silverman(total_var, A.shape[1], width, b)
    D.add_(sq[:, None, :]).add_(sq[:, :, None])  # (k, b, b) squared distances
    return sigma, _kernel(D, sigma)


def _column_sums(
    A: torch.Tensor, rows: torch.Tensor, k: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, float] | None:
    """``-2 Z Z^T`` per batch (k, b, b), ``|z_i|^2`` (k, b) and tr Cov(Z) of the centred batch
    rows Z = A[rows] in ``dtype``, summed over column blocks; None where a squared norm is
    beyond ``dtype``'s range (a quarter of its largest number, as :func:`_distances_fit`)."""
    n_rows, d = len(rows), A.shape[1]
    cols = max(1, _common.BLOCK_ELEMS // n_rows)
    D = torch.zeros((k, n_rows // k, n_rows // k), dtype=dtype, device=A.device)
    sq = torch.zeros((k, n_rows // k), dtype=dtype, device=A.device)
    total_var = torch.zeros((), dtype=torch.float64, device=A.device)
    for c0 in range(0, d, cols):
        Z = A[rows, c0 : c0 + cols].to(dtype)  # (k b, c) a copy: the gather
        if not bool(torch.isfinite(Z).all()):
            raise ValueError("activations and inputs must be finite, got NaN or inf")
        Z.sub_(Z.mean(0))  # (k b, c) each unit centred on the batches' rows
        total_var += Z.double().var(0, unbiased=False).sum()
        Zb = Z.view(k, n_rows // k, -1)  # (k, b, c)
        sq += Zb.square().sum(-1)
        D.baddbmm_(Zb, Zb.transpose(1, 2), alpha=-2.0)  # (k, b, b)
    if not bool(sq.amax() <= torch.finfo(dtype).max / 4):  # False for inf and NaN
        return None
    return D, sq, float(total_var)


def _distances_fit(Z: torch.Tensor) -> bool:
    """Whether every squared distance between rows of the centred Z is finite in Z's dtype."""
    return bool(Z.square().sum(-1).amax() <= torch.finfo(Z.dtype).max / 4)


def power_sums(A: torch.Tensor, alpha: float) -> torch.Tensor:
    """``sum_i lambda_i^alpha`` of trace-normalised PSD matrices ``A`` of shape (..., n, n).

    Eigenvalues from ``torch.linalg.eigvalsh`` on A's device in A's dtype (float32 for float32
    layers: within 1e-4 bits of float64 at alpha = 1.01, measured on n = 256 and 1,024 ReLU
    Gram matrices, at 1.6x the speed), rounding negatives clipped to 0, sums in float64.
    For alpha = 2 no eigenvalues are needed: ``sum lambda^2 = |A|_F^2 / tr(A)^2``. Zero rows and
    columns (padding) add zero eigenvalues, which add nothing. The entropies of :func:`renyi`
    come from :func:`entropies`, which also handles the orders where this sum loses its
    precision (near 1) or underflows (large alpha).
    """
    tr = A.diagonal(dim1=-2, dim2=-1).double().sum(-1)  # (...)
    if alpha == 2:
        return A.double().square().sum((-2, -1)) / tr.square()
    lam = _eigvalsh(A).double().clamp(min=0.0) / tr[..., None]  # (..., n)
    return lam.pow(alpha).sum(-1)


def _eigvalsh(A: torch.Tensor) -> torch.Tensor:
    """``torch.linalg.eigvalsh(A)``, retried in float64 where A's dtype does not converge.

    A finite symmetric Gram matrix practically always converges; should it not (float32 LAPACK
    on a pathological spectrum), float64 is the precision that can, and a failure there is
    refused as a ValueError naming the setting to change instead of a raw ``LinAlgError``.
    """
    try:
        return torch.linalg.eigvalsh(A)
    except torch.linalg.LinAlgError as err:
        failure = err
    if A.dtype != torch.float64:
        try:
            return torch.linalg.eigvalsh(A.double())
        except torch.linalg.LinAlgError as err:
            failure = err
    raise ValueError(
        "renyi: the eigenvalues of a Gram matrix did not converge, even in float64 (a kernel "
        "width extreme for the data?); try another estimator.width, got: "
        f"{str(failure).splitlines()[0]}"
    ) from failure


# Orders closer to 1 than this take the form of :func:`_stable_entropy`. The plain form
# log(sum p^alpha) / (1 - alpha) divides the rounding of the sum (float32 eigenvalues sum to
# their trace within ~1e-6) by 1 - alpha: at alpha = 1.01 that is within 1e-4 bits of float64,
# but at alpha = 1 + 1e-10 it gave -238 to -2043 bits. The plain form is kept where it is
# accurate so that estimates at the usual orders (1.01 above all) stay the same bit for bit.
PLAIN_MIN_GAP = 0.01


def entropy_of(p: torch.Tensor, alpha: float, dims: int | tuple[int, ...] = -1) -> torch.Tensor:
    """Renyi alpha-entropy in bits of non-negative weights ``p`` that sum to ~1 over ``dims``.

    ``S = log2(sum p^alpha) / (1 - alpha)``, with ``0 <= S <= log2 #{p > 0}`` for every order.
    For ``|alpha - 1| >= PLAIN_MIN_GAP`` the plain sum is used (the numbers of earlier
    versions) wherever its result lies in that range; elsewhere, and for every order closer to
    1, :func:`_stable_entropy`, which cannot leave it.

    Parameters
    ----------
    p : tensor of shape (..., n) or (..., C, m), float64
        Trace-normalised eigenvalues (rounding negatives clipped to 0) or label frequencies.
    alpha : float
        The Renyi order, in (0, 1e6] and != 1.
    dims : int or tuple of int
        The axes summed over.

    Returns
    -------
    tensor of the batch shape, float64, bits
    """
    if abs(alpha - 1.0) >= PLAIN_MIN_GAP:
        S = _entropy(p.pow(alpha).sum(dims), alpha)
        ceiling = (p > 0).sum(dims).double().log2()
        ok = (S >= 0) & (S <= ceiling)  # False for NaN and inf (alpha ~ 500: sum underflowed)
        if bool(ok.all()):
            return S
        return torch.where(ok, S, _stable_entropy(p, alpha, dims))
    return _stable_entropy(p, alpha, dims)


def _stable_entropy(p: torch.Tensor, alpha: float, dims: int | tuple[int, ...]) -> torch.Tensor:
    """The Renyi entropy of ``q = p / sum p`` in bits in a form accurate for every order.

    ``q`` has an exact unit sum (the plain form's error near alpha = 1 came from ``sum p != 1``
    divided by 1 - alpha). Within 0.5 of 1, ``sum q^alpha = 1 + sum_i q_i expm1((alpha - 1)
    ln q_i)``, taken through ``log1p``: the terms share one sign (no cancellation) and keep
    their relative precision however close alpha is to 1, so S tends to the Shannon entropy of
    q (von Neumann's of the matrix) with no 0/0. Farther from 1, a log-sum-exp of
    ``alpha ln q`` shifted by its largest term: no sum of underflowed powers (alpha = 500:
    0.1^500 = 0 in float64) becomes log(0), and S tends to the min-entropy -log2 max q.
    Either way ``0 <= S <= log2 #{q > 0}`` up to float64 rounding.
    """
    total = p.sum(dims, keepdim=True)
    q = p / total.clamp(min=torch.finfo(p.dtype).tiny)  # unit sum
    log_q = q.log()  # -inf where q = 0: those weights add nothing in either form
    if abs(alpha - 1.0) <= 0.5:
        t = torch.where(q > 0, (alpha - 1.0) * log_q, 0.0)  # ln q^(alpha - 1), |t| < 373
        log_sum = torch.log1p((q * torch.expm1(t)).sum(dims))  # ln sum q^alpha
    else:
        log_sum = torch.logsumexp(alpha * log_q, dim=dims)
    return log_sum / ((1.0 - alpha) * LN2)


def entropies(A: torch.Tensor, alpha: float) -> torch.Tensor:
    """Renyi alpha-entropies in bits of trace-normalised PSD matrices ``A`` (..., n, n): (...).

    From the eigenvalues of :func:`power_sums` through :func:`entropy_of` (alpha = 2: from the
    Frobenius norm, whose ``sum lambda^2 >= 1 / n`` and ``<= 1`` hold exactly for a Gram matrix
    with unit diagonal and entries in [0, 1], so ``0 <= S_2 <= log2 n`` up to rounding).
    """
    if alpha == 2:
        return _entropy(power_sums(A, alpha), alpha)
    tr = A.diagonal(dim1=-2, dim2=-1).double().sum(-1)  # (...)
    p = _eigvalsh(A).double().clamp(min=0.0) / tr[..., None]  # (..., n)
    return entropy_of(p, alpha, -1)


def _entropy(power_sum: torch.Tensor, alpha: float) -> torch.Tensor:
    """Renyi alpha-entropy in bits from ``sum_i lambda_i^alpha`` (the plain form)."""
    return power_sum.log() / ((1.0 - alpha) * LN2)


def _class_blocks(K: torch.Tensor, labels: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """The class-diagonal blocks of Gram matrices, zero-padded: shape (k, C, m, m).

    ``K`` (k, b, b) holds a Gram matrix per batch, ``labels`` (k, b) the batches' labels in
    0..C-1 and ``counts`` (k, C) their counts; m is the largest count. ``K * [y_i = y_j]``
    (the Hadamard product with the labels' delta kernel) is block diagonal, so its eigenvalues
    are those of the blocks: C eigenproblems of the class sizes instead of one of size b
    (b^3 / C^2 of the work for balanced classes).
    """
    k, b = labels.shape
    order = torch.argsort(labels, dim=1, stable=True)  # (k, b) samples grouped by class
    starts = torch.cumsum(counts, 1) - counts  # (k, C)
    m = int(counts.max())
    rank = torch.arange(m, device=K.device)  # (m,)
    pos = starts[:, :, None] + rank  # (k, C, m) position in the sorted order
    valid = rank < counts[:, :, None]  # (k, C, m)
    member = order.gather(1, pos.clamp(max=b - 1).flatten(1)).view(pos.shape)  # (k, C, m)
    idx = torch.where(valid, member, b)  # (k, C, m); b = the padding index
    K_pad = torch.nn.functional.pad(K, (0, 1, 0, 1))  # (k, b + 1, b + 1), zero last row/column
    batch = torch.arange(k, device=K.device)[:, None, None, None]  # (k, 1, 1, 1)
    return K_pad[batch, idx[..., :, None], idx[..., None, :]]  # (k, C, m, m)


def batch_indices(n: int, batch_size: int, batches: int | None, seed: int) -> torch.Tensor:
    """Sample indices of the batches, shape (k, b): a seeded random partition of the N samples.

    Batches are random subsets (so a split stored in class order still gives batches with
    every class); ``b = min(batch_size, N)`` and ``k = N // b`` full batches, or ``batches``
    of them when fewer. The same seed gives the same batches at every epoch and layer.
    """
    b = min(batch_size, n)
    k = n // b if batches is None else min(batches, n // b)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[: k * b].view(k, b)


def renyi(
    T: Any,
    X: Any,
    Y: Any,
    *,
    alpha: float = 1.01,
    width: float = 1.0,
    width_rule: str = "silverman",
    batch_size: int = 256,
    batches: int | None = 4,
    seed: int = 0,
) -> dict[str, Any]:
    """Matrix-based Renyi alpha-entropy estimates of I(X;T) and I(T;Y) in bits.

    For a batch of n samples with RBF Gram matrix ``K`` (``K_ii = 1``), ``A = K / n`` has unit
    trace and non-negative eigenvalues ``lambda_i``; its entropy is
    ``S_alpha(A) = 1 / (1 - alpha) log2 sum_i lambda_i^alpha`` (Giraldo et al. 2015), which
    tends to the Shannon entropy of the eigenvalues as alpha -> 1. The joint entropy of two
    variables is that of the Hadamard product ``A o B / tr(A o B)``, and
    ``I(A; B) = S(A) + S(B) - S(A o B)``. X and T get RBF kernels of their own width
    (:func:`kernel_width`, applied to each with its own dimension); Y gets the delta kernel
    ``[y_i = y_j]``, so ``S(Y)`` is the Renyi entropy of the batch's label frequencies.

    Parameters
    ----------
    T : tensor or ndarray of shape (n_samples, ...)
        Activations; trailing axes are flattened. A tensor is processed on its own device
        (Gram matrices and ``torch.linalg.eigvalsh`` there; float64 for float64 input, else
        float32, see :func:`power_sums`). Wider than 16,384 units (``_common.WIDE_UNITS``),
        the Gram matrices are summed over column blocks (:func:`_wide_batch_grams`): the memory
        beyond the layer stays ~100 MiB at any width (85 MiB measured at 10,000 x 65,536).
    X : tensor or ndarray of shape (n_samples, ...)
        Inputs (required: I(X;T) compares the two kernels); wide inputs alike.
    Y : tensor or ndarray of shape (n_samples,)
        Discrete labels.
    alpha : float, default 1.01
        Renyi order in (0, 1e6], != 1 (Yu et al. 2020: 1.01, close to Shannon; from 1e6 on
        the entropy is the min-entropy to 1e-6 relative, see ``_common.MAX_ALPHA``).
        alpha = 2 needs no eigenvalues (Frobenius norms): O(n^2) per batch instead of O(n^3).
        Orders within 0.01 of 1 are computed in a form that tends to the Shannon (von Neumann)
        entropy as alpha -> 1, large orders one that tends to the min-entropy (see
        :func:`entropy_of`); orders below 1 weigh the smallest eigenvalues, where float32
        rounding (~1e-7 of the largest) sits, so they are the least precise for float32 layers.
    width : float, default 1.0
        Kernel width, any finite number > 0: with ``width_rule='silverman'`` a factor on the
        rule's sigma (larger = coarser: fewer samples told apart, lower I(X;T)); with
        ``'fixed'`` sigma itself. Both limits are exact: a width whose sigma^2 underflows gives
        the identity Gram matrix (I_XT = log2 batch_size, saturated), one whose sigma^2
        overflows the all-ones matrix (every entropy 0).
    width_rule : {'silverman', 'fixed'}, default 'silverman'
        See :func:`kernel_width`.
    batch_size : int, default 256
        Samples per Gram matrix (>= 2); each batch costs three n x n eigenproblems, O(n^3).
        I(X;T) can be at most log2(batch_size).
    batches : int or None, default 4
        Batches averaged (random, disjoint); None = every full batch of the split.
    seed : int, default 0
        Seeds the partition into batches.

    Returns
    -------
    dict
        ``I_XT``, ``I_TY``: means over batches; ``I_XT_se``, ``I_TY_se``: their standard errors
        (std over batches / sqrt(batches), NaN for one batch); ``H_T``, ``H_X``: Renyi entropies
        of T and X; ``I_XT_max`` = ``H_X``, the most I(X;T) can be (reached when T tells apart
        every sample X does); ``saturated``: ``I_XT >= 0.99 I_XT_max``; ``sigma_T``,
        ``sigma_X``: the kernel widths; ``n_samples`` (samples used: batches x batch size),
        ``H_max`` = log2 n_samples, ``H_Y`` (plug-in label entropy).

    Notes
    -----
    ``0 <= I <= min(S(A), S(B)) <= log2 n`` per batch (Giraldo et al. 2015, Prop. 4.1-4.2),
    clipped there against rounding; each entropy lies in ``[0, log2 n]`` by construction
    (:func:`entropy_of`), so ``0 <= I_XT <= min(H_X, log2 batch_size) <= H_max``. I_TY is at
    most the batch's label entropy S_Y, which for alpha > 1 is at most its Shannon entropy, and
    the mean of those over batches at most ``H_Y``; below 1 it is held to the Shannon entropy
    (see the code). Invariant to the order of the samples within a batch
    (one batch: exactly), to rotations and translations of T, and, with the Silverman rule,
    to a common scaling of T. Not bound by the data-processing inequality across layers:
    each layer gets its own kernel width.
    """
    check_params(
        {
            "alpha": alpha,
            "width": width,
            "width_rule": width_rule,
            "batch_size": batch_size,
            "batches": batches,
            "seed": seed,
        }
    )
    if X is None:
        raise ValueError("renyi needs the inputs X for I(X;T), got None")
    with torch.no_grad():
        T = _as_tensor(T)
        T = T.reshape(T.shape[0], -1)  # (N, d)
        dev = T.device
        X_in, X = X, _as_tensor(X, dev)
        X = X.reshape(X.shape[0], -1)  # (N, d_x)
        y = _as_tensor(Y, dev).reshape(-1)  # (N,)
        if not len(T) == len(X) == len(y):
            raise ValueError(f"T, X and Y have {len(T)}, {len(X)} and {len(y)} samples")
        _, labels = torch.unique(y, return_inverse=True)  # (N,) in 0..C-1
        n_classes = int(labels.max()) + 1 if len(labels) else 0
        work = torch.float64 if T.dtype == torch.float64 else torch.float32
        # X's batches, kernel width, Gram matrices and entropies are the same for every layer
        # and evaluation: computed once per input tensor
        idx, K_X, S_X, sigma_X = input_side(
            X_in,
            ("renyi", len(X), alpha, width, width_rule, batch_size, batches, seed, work, dev),
            lambda: _input_side(X, alpha, width, width_rule, batch_size, batches, seed, work),
        )  # (k, b), (k, b, b), (k,), float
        k, b = idx.shape
        sigma_T, K_T = _batch_grams(T, idx, width, width_rule, work)  # float, (k, b, b)
        S_T, S_XT = entropies(torch.stack([K_T, K_T * K_X], 1), alpha).unbind(1)  # (k,) each
        L = labels[idx]  # (k, b) the batches' labels
        counts = torch.zeros((k, max(n_classes, 1)), dtype=torch.long, device=dev)
        counts.scatter_add_(1, L, torch.ones_like(L))  # (k, C)
        # the class blocks together are K_T o K_Y, of trace b
        S_TY = _block_entropies(_class_blocks(K_T, L, counts), b, alpha)  # (k,)
        freq = counts.double() / b  # (k, C)
        S_Y = entropy_of(freq, alpha, 1)  # (k,)
        # every entropy lies in [0, log2 b] (entropy_of), so the clipped I's do too
        I_XT = (S_X + S_T - S_XT).clamp(min=0.0)
        I_XT = torch.minimum(I_XT, torch.minimum(S_X, S_T))  # (k,)
        I_TY = (S_T + S_Y - S_TY).clamp(min=0.0)
        if alpha < 1:
            # Renyi entropies fall with the order: below 1 the labels' S_Y exceeds their Shannon
            # entropy, so the order-alpha I(T;Y), whose own ceiling is S_Y, could exceed H_Y,
            # the ceiling every estimator's I_TY shares; it is held to the batch's Shannon
            # label entropy (whose mean over batches is at most H_Y: concavity). For
            # alpha > 1, S_Y is already at most that.
            shannon = -torch.where(freq > 0, freq * freq.log2(), 0.0).sum(1)  # (k,)
            S_Y_cap = torch.minimum(S_Y, shannon)
        else:
            S_Y_cap = S_Y
        I_TY = torch.minimum(I_TY, torch.minimum(S_T, S_Y_cap))  # (k,)
        used = counts.sum(0).cpu().numpy()
    out = {
        "I_XT": float(I_XT.mean()),
        "I_TY": float(I_TY.mean()),
        "I_XT_se": float(I_XT.std() / math.sqrt(k)) if k > 1 else math.nan,
        "I_TY_se": float(I_TY.std() / math.sqrt(k)) if k > 1 else math.nan,
        "H_T": float(S_T.mean()),
        "H_X": float(S_X.mean()),
        "sigma_T": sigma_T,
        "sigma_X": sigma_X,
        **diagnostics(float(I_XT.mean()), used),
    }
    out["I_XT_max"] = out["H_X"]
    out["saturated"] = bool(out["I_XT"] >= 0.99 * out["I_XT_max"])
    return check_bounds("renyi", out)


def _block_entropies(blocks: torch.Tensor, n: int, alpha: float) -> torch.Tensor:
    """Renyi entropies in bits of ``K_T o K_Y / n`` from its class blocks (k, C, m, m): (k,)."""
    if alpha == 2:
        return _entropy(blocks.double().square().sum((-3, -2, -1)) / n**2, alpha)
    lam = _eigvalsh(blocks).double().clamp(min=0.0) / n  # (k, C, m)
    return entropy_of(lam, alpha, (-2, -1))
