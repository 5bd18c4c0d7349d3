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

from infoflow.estimators._common import LN2, check_params, diagnostics
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
    d = Z.shape[1]
    total_var = float(Z.double().var(0, unbiased=False).sum()) if len(Z) else 0.0
    if total_var <= 0:
        return 1.0
    return float(width * math.sqrt(total_var) * n ** (-1.0 / (4 + d)))


def _grams(Z: torch.Tensor, sigma: float) -> torch.Tensor:
    """RBF Gram matrices ``exp(-|z_i - z_j|^2 / (2 sigma^2))`` of (k, b, d) batches: (k, b, b)."""
    sq = Z.square().sum(-1)  # (k, b)
    D = torch.baddbmm(sq[:, None, :] + sq[:, :, None], Z, Z.transpose(1, 2), alpha=-2.0)
    D.clamp_(min=0.0).diagonal(dim1=1, dim2=2).zero_()  # exact zero self-distance  # (k, b, b)
    return torch.exp(D / (-2.0 * sigma**2))


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
    return idx, K_X, _entropy(power_sums(K_X, alpha), alpha), sigma_X


def _batch_grams(
    A: torch.Tensor, idx: torch.Tensor, width: float, width_rule: str, work: torch.dtype
) -> tuple[float, torch.Tensor]:
    """(kernel width, Gram matrices (k, b, b)) of ``A``'s rows in the batches ``idx`` (k, b):
    only the batches' rows, centred on their mean (smaller rounding in the distances)."""
    k, b = idx.shape
    Ab = A[idx.reshape(-1)].to(work)  # (k b, d)
    if not bool(torch.isfinite(Ab).all()):
        raise ValueError("activations and inputs must be finite, got NaN or inf")
    Ab = Ab - Ab.mean(0)
    sigma = kernel_width(Ab, width, width_rule, b)
    return sigma, _grams(Ab.view(k, b, -1), sigma)


def power_sums(A: torch.Tensor, alpha: float) -> torch.Tensor:
    """``sum_i lambda_i^alpha`` of trace-normalised PSD matrices ``A`` of shape (..., n, n).

    Eigenvalues from ``torch.linalg.eigvalsh`` on A's device in A's dtype (float32 for float32
    layers: within 1e-4 bits of float64 at alpha = 1.01, measured on n = 256 and 1,024 ReLU
    Gram matrices, at 1.6x the speed), rounding negatives clipped to 0, sums in float64.
    For alpha = 2 no eigenvalues are needed: ``sum lambda^2 = |A|_F^2 / tr(A)^2``. Zero rows and
    columns (padding) add zero eigenvalues, which add nothing.
    """
    tr = A.diagonal(dim1=-2, dim2=-1).double().sum(-1)  # (...)
    if alpha == 2:
        return A.double().square().sum((-2, -1)) / tr.square()
    lam = torch.linalg.eigvalsh(A).double().clamp(min=0.0) / tr[..., None]  # (..., n)
    return lam.pow(alpha).sum(-1)


def _entropy(power_sum: torch.Tensor, alpha: float) -> torch.Tensor:
    """Renyi alpha-entropy in bits from ``sum_i lambda_i^alpha``."""
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
        float32, see :func:`power_sums`).
    X : tensor or ndarray of shape (n_samples, ...)
        Inputs (required: I(X;T) compares the two kernels).
    Y : tensor or ndarray of shape (n_samples,)
        Discrete labels.
    alpha : float, default 1.01
        Renyi order, > 0 and != 1 (Yu et al. 2020: 1.01, close to Shannon). alpha = 2 needs no
        eigenvalues (Frobenius norms): O(n^2) per batch instead of O(n^3).
    width : float, default 1.0
        Kernel width: with ``width_rule='silverman'`` a factor on the rule's sigma (larger =
        coarser: fewer samples told apart, lower I(X;T)); with ``'fixed'`` sigma itself.
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
    clipped there against rounding. Invariant to the order of the samples within a batch
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
        S_T, S_XT = _entropy(power_sums(torch.stack([K_T, K_T * K_X], 1), alpha), alpha).unbind(1)
        L = labels[idx]  # (k, b) the batches' labels
        counts = torch.zeros((k, max(n_classes, 1)), dtype=torch.long, device=dev)
        counts.scatter_add_(1, L, torch.ones_like(L))  # (k, C)
        # the class blocks together are K_T o K_Y, of trace b
        S_TY = _entropy(_block_power_sums(_class_blocks(K_T, L, counts), b, alpha), alpha)  # (k,)
        S_Y = _entropy((counts.double() / b).pow(alpha).sum(1), alpha)  # (k,)
        I_XT = (S_X + S_T - S_XT).clamp(min=0.0)
        I_XT = torch.minimum(I_XT, torch.minimum(S_X, S_T))  # (k,)
        I_TY = (S_T + S_Y - S_TY).clamp(min=0.0)
        I_TY = torch.minimum(I_TY, torch.minimum(S_T, S_Y))  # (k,)
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
    return out


def _block_power_sums(blocks: torch.Tensor, n: int, alpha: float) -> torch.Tensor:
    """``sum lambda^alpha`` of ``K_T o K_Y / n`` from its class blocks of shape (k, C, m, m)."""
    if alpha == 2:
        return blocks.double().square().sum((-3, -2, -1)) / n**2
    lam = torch.linalg.eigvalsh(blocks).double().clamp(min=0.0) / n  # (k, C, m)
    return lam.pow(alpha).sum((-2, -1))
