"""Pairwise-distance bounds on the entropy of T + Gaussian noise (Kolchinsky & Tracey 2017).

The information-plane estimator of Saxe et al. (2018), "On the information bottleneck theory
of deep learning", as in their reference code (github.com/artemyk/ibsgd, ``kde.py``): the
layer's activations T are seen through additive Gaussian noise e ~ N(0, noise_var * I), so that
T + e is a mixture of N Gaussians, one per evaluation sample, whose entropy has the upper and
lower bounds of Kolchinsky & Tracey (2017), "Estimating mixture entropy with pairwise
distances", Entropy 19(7):361.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from infoflow.estimators._common import LN2, check_params, diagnostics

# Exponents are clamped here before exp: exp(-4 * cutoff) stays a normal number, which keeps
# subnormal arithmetic (10x slower on x86) out of the loop. A pair beyond the cutoff then adds
# exp(-cutoff) instead of less to a sum that is >= 1: a relative bias below N * 4.6e-10 in
# float32 (N = 10,000: < 7e-6 bits), nil in float64.
EXP_CUTOFF = {torch.float32: 21.5, torch.float64: 170.0}

# precision="auto" takes float32 when max_i |t_i - mean|^2 / (2 noise_var) <= this. The float32
# Gram-matrix distances lose ~2**-24 of the squared norms; measured against float64 on tight
# clusters at large radius (d = 512, N = 4000) the error was 1.1e-5 bits at a ratio of 5e4 and
# grows about linearly with it. Trained MNIST-like layers (ratio ~ 3e3 at noise_var 0.1) are
# far below; float32 then agrees with float64 to < 1e-6 bits.
FLOAT32_MAX_RATIO = 5e4


def _as_tensor(a: Any, device: torch.device | None = None) -> torch.Tensor:
    """A torch tensor view of ``a`` (a NumPy array is wrapped, not copied, when possible)."""
    t = a.detach() if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))
    return t if device is None else t.to(device)


def pick_dtype(
    T: torch.Tensor, input_dtype: torch.dtype, noise_var: float, precision: str
) -> torch.dtype:
    """The dtype of the pairwise work: float64, or float32 where it is accurate enough.

    ``auto`` keeps float64 input in float64, and takes float32 for other input when
    ``max_i |t_i|^2 / (2 noise_var) <= FLOAT32_MAX_RATIO`` for the centred activations ``T``
    (the rounding of float32 distances grows with that ratio).
    """
    if precision == "float64" or (precision == "auto" and input_dtype == torch.float64):
        return torch.float64
    if precision == "float32":
        return torch.float32
    r2 = float(T.square().sum(1).max()) if len(T) else 0.0  # T (N, d) already centred
    return torch.float32 if r2 / (2.0 * noise_var) <= FLOAT32_MAX_RATIO else torch.float64


def kernel_sums(
    W: torch.Tensor, onehot: torch.Tensor, block: int = 2048
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-class sums of ``exp(-|w_i - w_j|^2)`` and of its fourth power.

    The pairwise work is done in square tiles of ``block`` rows and columns over the upper
    triangle only (the kernel is symmetric), so memory is O(block^2) and never O(N^2). Every
    term is at most 1 and the ``j = i`` term is exactly 1, so each sum is >= 1 and needs no
    max-shift: plain sums are the streaming log-sum-exp.

    Parameters
    ----------
    W : tensor of shape (N, d)
        Points, already scaled so that the exponent is the plain squared distance.
    onehot : tensor of shape (N, C), same dtype as ``W``
        One-hot labels.
    block : int
        Tile side.

    Returns
    -------
    S_lo, S_hi : tensors of shape (N, C), float64
        ``S_lo[i, c] = sum_{j: y_j = c} exp(-|w_i - w_j|^2)`` and ``S_hi`` the same with
        ``exp(-4 |w_i - w_j|^2)``.
    """
    n, n_classes = W.shape[0], onehot.shape[1]
    cutoff = EXP_CUTOFF[W.dtype]
    sq = W.square().sum(1)  # (N,)
    onehot_t = onehot.T.contiguous()  # (C, N)
    # accumulated in W's dtype: each tile adds one partial sum per entry (<= N / block of them)
    S = torch.zeros(2, n_classes, n, dtype=W.dtype, device=W.device)  # lo, hi
    buffers: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
    starts = list(range(0, n, block))
    for i0 in starts:
        i1 = min(i0 + block, n)
        for j0 in starts[starts.index(i0) :]:
            j1 = min(j0 + block, n)
            shape = (i1 - i0, j1 - j0)
            if shape not in buffers:  # reused: no page faults on fresh tiles
                buffers[shape] = (
                    torch.empty(shape, dtype=W.dtype, device=W.device),
                    torch.empty((2, *shape), dtype=W.dtype, device=W.device),
                )
            A, K = buffers[shape]
            torch.addmm(-sq[None, j0:j1], W[i0:i1], W[j0:j1].T, alpha=2.0, out=A)  # (bi, bj)
            A.sub_(sq[i0:i1, None]).clamp_(min=-cutoff, max=0.0)  # (bi, bj) -|wi - wj|^2
            if i0 == j0:
                A.diagonal().zero_()  # exact zero self-distance despite rounding
            torch.exp(A, out=K[0])  # (bi, bj) exp(-d^2)
            torch.mul(K[0], K[0], out=K[1])
            K[1].mul_(K[1])  # (bi, bj) exp(-4 d^2)
            # one-hot products as (C, b) @ (b, b): 3x faster on CPU than (b, b) @ (b, C)
            rows = torch.matmul(onehot_t[:, j0:j1], K.transpose(1, 2))  # (2, C, bi)
            S[:, :, i0:i1] += rows  # sums over the tile's columns
            if j0 != i0:  # the mirrored tile (j, i): sums over the tile's rows
                S[:, :, j0:j1] += torch.matmul(onehot_t[:, i0:i1], K)  # (2, C, bj)
    S = S.double()
    S_lo, S_hi = S[0].T, S[1].T  # (N, C)
    return S_lo, S_hi


def _bounds_from_sums(
    S: torch.Tensor, labels: torch.Tensor, counts: torch.Tensor
) -> tuple[float, float]:
    """I(X;T) and I(T;Y) in bits from the kernel sums of one pairwise-distance estimator.

    With ``H(T+e) = H(e) - mean_i ln(mean_j k_ij)`` and the class mixtures alike,
    ``I(X;T) = ln N - mean_i ln S_i`` and
    ``I(T;Y) = ln N - sum_c p_c ln N_c - mean_i ln S_i + mean_i ln S_i[y_i]`` (nats); H(e) and
    every dimension-dependent constant cancel.
    """
    n = float(len(labels))
    S_all = S.sum(1)  # (N,)
    S_own = S.gather(1, labels[:, None]).squeeze(1)  # (N,) sums over the sample's own class
    p = counts.double() / n  # (C,)
    nz = counts > 0
    mean_log_all = S_all.log().mean()
    I_XT = math.log(n) - float(mean_log_all)
    I_TY = (
        math.log(n)
        - float((p[nz] * counts[nz].double().log()).sum())
        - float(mean_log_all)
        + float(S_own.log().mean())
    )
    return I_XT / LN2, I_TY / LN2


def kde(
    T: Any,
    X: Any,
    Y: Any,
    *,
    noise_var: float = 0.1,
    precision: str = "auto",
    block: int = 2048,
) -> dict[str, Any]:
    """KDE (pairwise-distance) upper and lower bounds on I(X;T) and I(T;Y) in bits.

    T + e, with e ~ N(0, noise_var I), is a mixture of N equal-weight Gaussians centred on the
    activations t_i. With ``D_ij = |t_i - t_j|^2``, Kolchinsky & Tracey (2017) bound its
    entropy by pairwise divergences between the components:

    * upper (KL divergence ``D_ij / 2 noise_var``):
      ``H_up = H(e) - (1/N) sum_i ln((1/N) sum_j exp(-D_ij / (2 noise_var)))``;
    * lower (Bhattacharyya distance ``D_ij / 8 noise_var``):
      ``H_lo = H(e) - (1/N) sum_i ln((1/N) sum_j exp(-D_ij / (8 noise_var)))``,

    with ``H(e) = (d/2) ln(2 pi e noise_var)``. As in Saxe et al. (2018):
    ``I(X;T) = H(T+e) - H(T+e|X) = H(T+e) - H(e)`` (the net is deterministic, so given X only
    the noise is left) and ``I(T;Y) = H(T+e) - sum_y p(y) H(T+e|Y=y)``, the class-conditional
    entropies being bounds of the class-y mixtures. Each is computed from the upper and from
    the lower entropy bound.

    Parameters
    ----------
    T : tensor or ndarray of shape (n_samples, ...)
        Activations; trailing axes are flattened. A tensor is processed on its own device.
    X : array-like
        Inputs. Unused (see above).
    Y : tensor or ndarray of shape (n_samples,)
        Discrete labels.
    noise_var : float, default 0.1
        Variance of the added noise, per unit, in squared activation units (Saxe et al. used
        0.1 on MNIST). It sets the scale below which differences between activations are
        treated as noise: the estimates depend on it strongly.
    precision : {'auto', 'float32', 'float64'}, default 'auto'
        dtype of the O(N^2 d) pairwise work (logs and means are always float64). 'auto' takes
        float32 unless the activations are large against the noise (see :func:`pick_dtype`);
        float32 differs from float64 by < 1e-4 bits there.
    block : int, default 2048
        Tile side of the pairwise computation (memory ~ 3 * block^2 values).

    Returns
    -------
    dict
        ``I_XT``, ``I_TY``: the upper estimates (as plotted by Saxe et al.);
        ``I_XT_upper``, ``I_XT_lower``: upper and lower bounds on I(X;T) of the noisy layer;
        ``I_TY_upper``, ``I_TY_lower``: I(T;Y) computed from the upper and from the lower
        entropy bounds (a difference of bounds, so an estimate, not a bound);
        ``precision``: the dtype used; and the diagnostics ``n_samples``, ``H_max``,
        ``saturated``, ``H_Y``. All information in bits.

    Notes
    -----
    Proven ranges: ``0 <= I_XT_lower <= I_XT_upper <= log2 N`` and
    ``I_TY_upper, I_TY_lower <= H(Y)``. The upper bound is exact for well-separated
    components (it then equals log2 of the number of distinct clusters); both bounds tend to
    0 as noise_var grows. The O(N^2 d) work runs in tiles in torch; ~1-2 s for N = 10,000,
    d = 512 on two CPU cores.
    """
    check_params({"noise_var": noise_var, "precision": precision})
    if not (isinstance(block, int) and block >= 1):
        raise ValueError(f"block must be an integer >= 1, got {block!r}")
    with torch.no_grad():
        T = _as_tensor(T)
        T = T.reshape(T.shape[0], -1)  # (N, d)
        y = _as_tensor(Y, T.device).reshape(-1)  # (N,)
        if len(T) != len(y):
            raise ValueError(f"T has {len(T)} samples but Y has {len(y)}")
        if not bool(torch.isfinite(T).all()):
            raise ValueError("activations must be finite, got NaN or inf in T")
        _, labels = torch.unique(y, return_inverse=True)  # (N,) in 0..C-1
        counts = torch.bincount(labels)  # (C,)
        T64 = T.double()
        T64 = T64 - T64.mean(0)  # (N, d) centred: distances unchanged, rounding smaller
        dtype = pick_dtype(T64, T.dtype, noise_var, precision)
        W = (T64 / math.sqrt(8.0 * noise_var)).to(dtype)  # (N, d) |w_i - w_j|^2 = D_ij / 8v
        onehot = torch.nn.functional.one_hot(labels, len(counts)).to(dtype)  # (N, C)
        S_lo, S_hi = kernel_sums(W, onehot, block)
        I_XT_lo, I_TY_lo = _bounds_from_sums(S_lo, labels, counts)
        I_XT_hi, I_TY_hi = _bounds_from_sums(S_hi, labels, counts)
        counts_np = counts.cpu().numpy()
    return {
        "I_XT": I_XT_hi,
        "I_TY": I_TY_hi,
        "I_XT_upper": I_XT_hi,
        "I_XT_lower": I_XT_lo,
        "I_TY_upper": I_TY_hi,
        "I_TY_lower": I_TY_lo,
        "precision": str(dtype).removeprefix("torch."),
        **diagnostics(I_XT_hi, counts_np),
    }
