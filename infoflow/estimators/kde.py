"""Entropy of T + Gaussian noise: pairwise-distance bounds and a Monte Carlo point estimate.

The information-plane estimator of Saxe et al. (2018), "On the information bottleneck theory
of deep learning", as in their reference code (github.com/artemyk/ibsgd, ``kde.py``): the
layer's activations T are seen through additive Gaussian noise e ~ N(0, noise_var * I), so that
T + e is a mixture of N Gaussians, one per evaluation sample, whose entropy has the upper and
lower bounds of Kolchinsky & Tracey (2017), "Estimating mixture entropy with pairwise
distances", Entropy 19(7):361. Between them, the Monte Carlo estimate of the same entropy by
sample propagation (Goldfeld et al. 2019, "Estimating information flow in deep neural
networks", ICML): draw points of the mixture and average their negative log density.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

import infoflow.estimators._common as _common
from infoflow.estimators._common import LN2, check_bounds, check_params, diagnostics

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

# noise_scale=neighbour: nearest-neighbour distances are measured from this many random samples
# (to all N): the median of 1,024 draws is within ~3% of the population median (its standard
# error is ~1.25 / sqrt(1024) of the spread near the median), at a tenth of the pairwise work.
NN_QUERIES = 1024

# Monte Carlo: noise is drawn for this many mixture points at a time, from one generator seeded
# with ``seed`` on the host, so the draws do not depend on ``block`` or on the device.
MC_ROWS = 512


def _as_tensor(a: Any, device: torch.device | None = None) -> torch.Tensor:
    """A torch tensor view of ``a`` (a NumPy array is wrapped, not copied, when possible)."""
    t = a.detach() if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))
    return t if device is None else t.to(device)


def pick_dtype(
    T: torch.Tensor | None,
    input_dtype: torch.dtype,
    noise_var: float,
    precision: str,
    r2: float | None = None,
) -> torch.dtype:
    """The dtype of the pairwise work: float64, or float32 where it is accurate enough.

    ``auto`` keeps float64 input in float64, and takes float32 for other input when
    ``max_i |t_i|^2 / (2 noise_var) <= FLOAT32_MAX_RATIO`` for the centred activations ``T``
    (the rounding of float32 distances grows with that ratio). ``float32`` is float32 unless
    that ratio overflows it (beyond ``FLOAT_HEADROOM``: a noise variance ~1e-38 of the
    layer's spread, where float32 could only give NaN), then float64. ``r2``: that largest
    squared norm where the caller has it (a wide layer's, from its row blocks; ``T`` unused).
    """
    if precision == "float64" or (precision == "auto" and input_dtype == torch.float64):
        return torch.float64
    if r2 is None:
        r2 = _max_sq_norm(T)
    if precision == "float32":
        fits = r2 / (2.0 * noise_var) <= torch.finfo(torch.float32).max / FLOAT_HEADROOM
        return torch.float32 if fits else torch.float64
    return torch.float32 if r2 / (2.0 * noise_var) <= FLOAT32_MAX_RATIO else torch.float64


# The pairwise and Monte Carlo work sums a few squared scaled norms |t|^2 / 2v (distances up to
# 4 max|t|^2, a drawn point's norm up to twice a centre's): they must stay this far below the
# dtype's largest number.
FLOAT_HEADROOM = 16.0


def _max_sq_norm(T: torch.Tensor) -> float:
    """``max_i |t_i|^2`` of the centred activations T (N, d); 0 without samples."""
    return float(T.square().sum(1).max()) if len(T) else 0.0


def check_noise(
    v: float, T: torch.Tensor | None, noise_var: float, noise_scale: str, r2: float | None = None
) -> None:
    """Refuse a noise variance ``v`` that float64 cannot work with against the layer ``T``.

    ``v`` (= ``noise_var`` times the scale of ``noise_scale``) must be a positive, finite
    number with ``max_i |t_i - mean|^2 / (2 v) <= 1.8e308 / FLOAT_HEADROOM``: below that the
    scaled distances overflow to inf and every estimate would be NaN (noise_var = 1e-310 on a
    unit-scale layer), at v = 0 (a product that underflowed) the kernel is undefined. The
    admissible range is data-dependent (the layer's spread), so this is checked here, not in
    ``check_params``; a ValueError names ``estimator.noise_var``, the rule and the value.
    ``r2``: ``max_i |t_i - mean|^2`` where the caller has it (``T`` unused).
    """
    if r2 is None:
        r2 = _max_sq_norm(T)
    limit = torch.finfo(torch.float64).max / FLOAT_HEADROOM  # of |t|^2 / 2v
    if not (0.0 < v < math.inf) or r2 / (2.0 * v) > limit:
        smallest = r2 / (2.0 * limit)
        raise ValueError(
            f"estimator.noise_var with estimator.noise_scale={noise_scale} must give a noise "
            "variance v that is finite, > 0 and, against the layer's largest squared distance "
            f"from its mean ({r2:.3g}), at least {smallest:.3g} (so that |t|^2 / 2v stays "
            f"within float64), got noise_var={noise_var!r}, v={v!r}"
        )


# Layers of more values than this (a float64 copy of 1 GiB; 10,000 x 13,421 units) take the
# row-block path of a wide layer even when they have at most ``_common.WIDE_UNITS`` units: the
# whole-layer path holds ~33 bytes per value (1,042 MiB measured for 2,000 x 16,384), 5 GiB
# for a CIFAR ResNet stem's 10,000 x 16,384. The 10,000 x 12,544 maps of the study's CNN
# stay below it, on the path they were computed with.
WIDE_VALUES = 2**27


def _is_wide(T: torch.Tensor) -> bool:
    """Whether kde takes the row-block path for the layer T (N, d)."""
    return T.shape[1] > _common.WIDE_UNITS or T.numel() > WIDE_VALUES


def _sq_norms(W: torch.Tensor) -> torch.Tensor:
    """``|w_i|^2`` of the rows of W (N, d), shape (N,): through one whole-array square on the
    whole-layer path (as before), in row blocks on a wide layer's (:func:`_is_wide`; no
    temporary as large as the layer: 5 GiB for a float64 10,000 x 65,536)."""
    if not _is_wide(W) or len(W) == 0:
        return W.square().sum(1)
    rows = max(1, _common.BLOCK_ELEMS // W.shape[1])
    return torch.cat([block.square().sum(1) for block in W.split(rows)])  # (N,)


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
    sq = _sq_norms(W)  # (N,)
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


def noise_variance(T: torch.Tensor, noise_var: float, noise_scale: str, seed: int) -> float:
    """The noise variance in squared activation units that ``noise_scale`` makes of ``noise_var``.

    * ``absolute``: ``noise_var`` itself (Saxe et al. 2018).
    * ``variance``: ``noise_var`` times the layer's mean per-unit variance: a per-unit
      signal-to-noise ratio, the same on a tanh layer and on a ReLU layer of the same width.
    * ``neighbour``: ``noise_var`` times the median squared distance from a sample to its
      nearest distinct neighbour (over :data:`NN_QUERIES` random samples): the noise is
      measured against the gaps between the layer's points, so one setting means the same
      resolution at any scale and any width (noise_var = 1: the nearest neighbour's
      component overlaps with weight exp(-1/2) in the upper bound's kernel).

    A layer with no spread (all rows equal) carries no information at any noise level; it gets
    ``noise_var`` itself.

    Parameters
    ----------
    T : tensor of shape (N, d), float64, centred
    noise_var : float
    noise_scale : {'absolute', 'variance', 'neighbour'}
    seed : int
        Seeds the choice of the neighbour queries.
    """
    if noise_scale == "absolute":
        return noise_var
    if noise_scale == "variance":
        s2 = float(T.square().mean())  # mean over units of the per-unit variance (T centred)
        return noise_var * s2 if s2 > 0 else noise_var
    n = len(T)
    gen = torch.Generator().manual_seed(seed)
    queries = torch.randperm(n, generator=gen)[: min(n, NN_QUERIES)].to(T.device)  # (q,)
    W = T.to(torch.float32)  # the distances' rounding is below the duplicate threshold
    sq = _sq_norms(W)  # (N,)
    Q, sq_q = W[queries], sq[queries]  # (q, d), (q,)
    nearest = torch.full((len(queries),), math.inf, dtype=torch.float64, device=T.device)
    for j0 in range(0, n, 8192):
        D = torch.addmm(sq[None, j0 : j0 + 8192], Q, W[j0 : j0 + 8192].T, alpha=-2.0)  # (q, b)
        D.add_(sq_q[:, None])  # (q, b) squared distances
        # equal rows (the query itself, dead ReLU samples) differ only by rounding
        same = D <= 1e-4 * (sq_q[:, None] + sq[None, j0 : j0 + 8192]) + 1e-30
        D = D.masked_fill(same, math.inf)
        nearest = torch.minimum(nearest, D.min(1).values.double())
    nearest = nearest[torch.isfinite(nearest)]
    if len(nearest) == 0:
        return noise_var
    return noise_var * float(torch.quantile(nearest, 0.5))


def mc_log_sums(
    U: torch.Tensor,
    onehot: torch.Tensor,
    labels: torch.Tensor,
    n_draws: int,
    seed: int,
    block: int = 2048,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Log kernel sums at points drawn from the mixture, for the Monte Carlo entropy.

    With the centres scaled as ``u_i = t_i / sqrt(2 v)``, a draw is ``s = u_j + zeta``,
    ``zeta ~ N(0, I / 2)`` (i.e. ``t_j + e``, ``e ~ N(0, v I)``), and
    ``-ln p(s) + ln phi(e) = ln N - ln A``, ``A = sum_i exp(-(|s - u_i|^2 - |zeta|^2))``:
    the noise's own density is divided out with the same draw (a control variate that removes
    the d/2 ln(2 pi e v) terms and their variance exactly). The ``i = j`` term is 1. Sums run
    over tiles of ``block`` centres with a streaming log-sum-exp (terms can exceed 1).

    Parameters
    ----------
    U : tensor of shape (N, d)
        Scaled, centred activations.
    onehot : tensor of shape (N, C), dtype of U
    labels : tensor of shape (N,), int64
    n_draws : int
        Points drawn; component j of the k-th draw cycles through a seeded permutation of the
        N samples (n_draws = N: each component once).
    seed : int
    block : int

    Returns
    -------
    log_all, log_own : tensors of shape (n_draws,), float64
        ``ln A`` over all centres and over the centres of the drawn component's class.
    comp : tensor of shape (n_draws,), int64
        The drawn components.
    """
    n, d = U.shape
    gen = torch.Generator().manual_seed(seed)
    comp = torch.randperm(n, generator=gen)[torch.arange(n_draws) % n].to(U.device)  # (M,)
    step = _draw_rows(d)
    cutoff = EXP_CUTOFF[U.dtype]
    sq = _sq_norms(U)  # (N,)
    log_all = torch.empty(n_draws, dtype=torch.float64, device=U.device)
    log_own = torch.empty_like(log_all)
    for q0 in range(0, n_draws, step):
        rows = comp[q0 : q0 + step]  # (b,)
        zeta = torch.randn((len(rows), d), generator=gen, dtype=torch.float64) * math.sqrt(0.5)
        zeta = zeta.to(U.device, U.dtype)  # (b, d)
        S = U[rows] + zeta  # (b, d) the drawn points
        a = S.square().sum(1) - zeta.square().sum(1)  # (b,) |s|^2 - |zeta|^2
        top = torch.full((len(rows),), -math.inf, dtype=U.dtype, device=U.device)  # (b,)
        sums = torch.zeros((len(rows), onehot.shape[1]), dtype=U.dtype, device=U.device)
        for j0 in range(0, n, block):
            j1 = min(j0 + block, n)
            E = torch.addmm(-sq[None, j0:j1], S, U[j0:j1].T, alpha=2.0)  # (b, bj)
            E.sub_(a[:, None])  # (b, bj) -(|s - u_i|^2 - |zeta|^2)
            own = (rows >= j0) & (rows < j1)  # the drawn component's own term is exactly 0
            E[own.nonzero().squeeze(1), rows[own] - j0] = 0.0
            new_top = torch.maximum(top, E.max(1).values)  # (b,)
            sums.mul_(torch.exp(top - new_top)[:, None])
            E.sub_(new_top[:, None]).clamp_(min=-cutoff).exp_()  # (b, bj)
            sums.add_(E @ onehot[j0:j1])  # (b, C)
            top = new_top
        sums64, top64 = sums.double(), top.double()
        log_all[q0 : q0 + len(rows)] = top64 + sums64.sum(1).log()
        own_sum = sums64.gather(1, labels[rows][:, None]).squeeze(1)  # (b,)
        log_own[q0 : q0 + len(rows)] = top64 + own_sum.log()
    return log_all, log_own, comp


def _draw_rows(d: int) -> int:
    """Mixture points drawn per block: :data:`MC_ROWS`, or on a layer wider than
    ``_common.WIDE_UNITS`` units as many multiples of 16 as fit ``_common.BLOCK_ELEMS``
    values (64 of 65,536 units). The draws are the same either way: torch's CPU normal sampler
    fills whole groups of 16 values, so blocks of a multiple of 16 rows concatenate to the
    draws of larger blocks (tests/test_estimators_wide.py compares the two)."""
    if d <= _common.WIDE_UNITS:
        return MC_ROWS
    return min(MC_ROWS, 16 * max(1, _common.BLOCK_ELEMS // (16 * d)))


def _wide_scaled(
    T: torch.Tensor, noise_var: float, noise_scale: str, seed: int, precision: str
) -> tuple[torch.Tensor, float, torch.dtype]:
    """``W = (T - mean) / sqrt(8 v)`` of a wide layer T (N, d) in the work dtype, with v and
    that dtype: what :func:`kde` makes of a smaller layer through float64 copies of it, here
    block by block into the one (N, d) array W (a layer :func:`_is_wide` calls wide).

    The column means (float64, column blocks), the largest squared norm and the mean square
    of the centred rows (float64, row blocks) replace the whole-layer reductions; each value
    of W is then computed as there, so W differs only through the order of those sums. With
    ``noise_scale='neighbour'`` the centred layer is first written into W in float32 for the
    nearest-neighbour gaps (as :func:`noise_variance` casts it), then overwritten.
    """
    n, d = T.shape
    mean = torch.empty(d, dtype=torch.float64, device=T.device)  # (d,)
    cols = max(1, _common.BLOCK_ELEMS // max(n, 1))
    for c0 in range(0, d, cols):
        block = T[:, c0 : c0 + cols]  # (N, c) a view
        if not bool(torch.isfinite(block).all()):
            raise ValueError("activations must be finite, got NaN or inf in T")
        mean[c0 : c0 + cols] = block.double().mean(0)
    rows = max(1, _common.BLOCK_ELEMS // d)
    r2, total = 0.0, 0.0
    for block in T.split(rows):
        norms = (block.double() - mean).square().sum(1)  # (r,)
        r2, total = max(r2, float(norms.max())), total + float(norms.sum())
    W = None
    if noise_scale == "neighbour":
        W = _fill_centred(torch.empty((n, d), dtype=torch.float32, device=T.device), T, mean)
        v = noise_variance(W, noise_var, noise_scale, seed)
    elif noise_scale == "variance":
        s2 = total / (n * d) if n else 0.0  # the mean per-unit variance
        v = noise_var * s2 if s2 > 0 else noise_var
    else:
        v = noise_var
    check_noise(v, None, noise_var, noise_scale, r2=r2)
    dtype = pick_dtype(None, T.dtype, v, precision, r2=r2)
    if W is not None and W.dtype != dtype:
        W = None  # freed before its float64 successor is made
    if W is None:
        W = torch.empty((n, d), dtype=dtype, device=T.device)
    return _fill_centred(W, T, mean, math.sqrt(8.0 * v)), v, dtype


def _fill_centred(
    out: torch.Tensor, T: torch.Tensor, mean: torch.Tensor, scale: float = 1.0
) -> torch.Tensor:
    """``out = ((T - mean) / scale)`` in out's dtype, computed in float64 per row block."""
    rows = max(1, _common.BLOCK_ELEMS // max(T.shape[1], 1))
    for r0 in range(0, len(T), rows):
        centred = T[r0 : r0 + rows].double() - mean  # (r, d)
        out[r0 : r0 + rows] = centred.div_(scale)  # rounded to out's dtype as .to() does
    return out


def _mc_estimates(
    log_all: torch.Tensor, log_own: torch.Tensor, comp_labels: torch.Tensor, counts: torch.Tensor
) -> tuple[float, float, float]:
    """I(X;T), its standard error and I(T;Y) in bits from the Monte Carlo log sums.

    Per draw, ``ln N - ln A`` estimates ``H(T+e) - H(e)``, and
    ``ln N - ln A - ln N_y + ln A_y`` estimates ``H(T+e) - H(T+e | Y)``.
    """
    n = float(counts.sum())
    x = math.log(n) - log_all  # (M,)
    y = x - counts.double()[comp_labels].log() + log_own  # (M,)
    se = float(x.std()) / math.sqrt(len(x)) if len(x) > 1 else math.nan
    return float(x.mean()) / LN2, se / LN2, float(y.mean()) / LN2


def kde(
    T: Any,
    X: Any,
    Y: Any,
    *,
    noise_var: float = 0.1,
    noise_scale: str = "absolute",
    mc_samples: int | None = None,
    seed: int = 0,
    precision: str = "auto",
    block: int = 2048,
) -> dict[str, Any]:
    """KDE (pairwise-distance) bounds and a Monte Carlo estimate of I(X;T) and I(T;Y) in bits.

    T + e, with e ~ N(0, v I), is a mixture of N equal-weight Gaussians centred on the
    activations t_i. With ``D_ij = |t_i - t_j|^2``, Kolchinsky & Tracey (2017) bound its
    entropy by pairwise divergences between the components:

    * upper (KL divergence ``D_ij / 2v``):
      ``H_up = H(e) - (1/N) sum_i ln((1/N) sum_j exp(-D_ij / (2v)))``;
    * lower (Bhattacharyya distance ``D_ij / 8v``):
      ``H_lo = H(e) - (1/N) sum_i ln((1/N) sum_j exp(-D_ij / (8v)))``,

    with ``H(e) = (d/2) ln(2 pi e v)``. As in Saxe et al. (2018):
    ``I(X;T) = H(T+e) - H(T+e|X) = H(T+e) - H(e)`` (the net is deterministic, so given X only
    the noise is left) and ``I(T;Y) = H(T+e) - sum_y p(y) H(T+e|Y=y)``, the class-conditional
    entropies being bounds of the class-y mixtures. Each is computed from the upper and from
    the lower entropy bound.

    The point estimate is the sample-propagation estimator of Goldfeld et al. (2019): the
    mixture's entropy is the mean of ``-ln p(t_j + e)`` over draws of the mixture
    (see :func:`mc_log_sums`); it converges to the exact I(X;T) of the noisy layer, which the
    bounds bracket.

    Parameters
    ----------
    T : tensor or ndarray of shape (n_samples, ...)
        Activations; trailing axes are flattened. A tensor is processed on its own device.
    X : array-like
        Inputs. Unused (see above).
    Y : tensor or ndarray of shape (n_samples,)
        Discrete labels.
    noise_var : float, default 0.1
        The noise level, > 0 and finite. With ``noise_scale='absolute'`` the variance v of the
        added noise per unit in squared activation units (Saxe et al. used 0.1 on MNIST);
        otherwise a fraction of the layer's own spread (see ``noise_scale``). It sets the
        scale below which differences between activations are treated as noise: the
        estimates depend on it strongly. The variance it gives must also fit float64 against
        the layer's spread (:func:`check_noise`: ~1e-307 of the squared spread or less is
        refused when called, naming the smallest admissible value).
    noise_scale : {'absolute', 'variance', 'neighbour'}, default 'absolute'
        What ``noise_var`` is relative to (:func:`noise_variance`): ``variance``, the layer's
        mean per-unit variance; ``neighbour``, the median squared distance to the nearest
        distinct sample, which means the same resolution on a tanh layer and on a wide ReLU
        layer. The variance in effect is the column ``noise_var_used``.
    mc_samples : int or None, default None
        Draws of the Monte Carlo estimate: None = one per sample (N); 0 = no Monte Carlo
        estimate (its columns are NaN). Cost O(mc_samples N d).
    seed : int, default 0
        Seeds the Monte Carlo noise and the neighbour queries: the same seed gives the same
        numbers on every device (the draws are made on the host).
    precision : {'auto', 'float32', 'float64'}, default 'auto'
        dtype of the O(N^2 d) pairwise work (logs and means are always float64). 'auto' takes
        float32 unless the activations are large against the noise (see :func:`pick_dtype`);
        float32 differs from float64 by < 1e-4 bits there. 'float32' falls back to float64
        only where the scaled activations overflow float32; the column says which was used.
    block : int, default 2048
        Tile side of the pairwise computation (memory ~ 3 * block^2 values).

    Returns
    -------
    dict
        ``I_XT``, ``I_TY``: the upper estimates (as plotted by Saxe et al.);
        ``I_XT_upper``, ``I_XT_lower``: upper and lower bounds on I(X;T) of the noisy layer;
        ``I_TY_upper``, ``I_TY_lower``: I(T;Y) computed from the upper and from the lower
        entropy bounds (a difference of bounds, so an estimate, not a bound);
        ``I_XT_mc``, ``I_TY_mc``: the Monte Carlo estimates, ``I_XT_mc`` clipped into
        ``[I_XT_lower, I_XT_upper]`` (where the exact value lies) and ``I_TY_mc`` into
        ``[0, H_Y]``; ``I_XT_mc_se``: the standard error of the unclipped ``I_XT_mc``;
        ``noise_var_used``: v; ``precision``: the dtype used; and the diagnostics
        ``n_samples``, ``H_max``, ``saturated``, ``H_Y``. All information in bits.

    Notes
    -----
    Proven ranges: ``0 <= I_XT_lower <= I_XT_upper <= log2 N`` and
    ``I_TY_upper, I_TY_lower <= H(Y)``. The upper bound is exact for well-separated
    components (it then equals log2 of the number of distinct clusters); both bounds tend to
    0 as v grows. The O(N^2 d) work runs in tiles in torch; ~1-2 s for the bounds at
    N = 10,000, d = 512 on two CPU cores, about as much again for the Monte Carlo estimate.
    A layer wider than 16,384 units or of more than 2^27 values (:func:`_is_wide`) is
    centred and scaled block by block into one (N, d) array in the work dtype, the only copy
    of the layer held (:func:`_wide_scaled`); O(N^2 d) stays: minutes for 10,000 x 65,536
    (``estimators.cost_warning`` says so before a job trains).
    """
    check_params(
        {
            "noise_var": noise_var,
            "noise_scale": noise_scale,
            "mc_samples": mc_samples,
            "seed": seed,
            "precision": precision,
        }
    )
    if not (isinstance(block, int) and block >= 1):
        raise ValueError(f"block must be an integer >= 1, got {block!r}")
    with torch.no_grad():
        T = _as_tensor(T)
        T = T.reshape(T.shape[0], -1)  # (N, d)
        y = _as_tensor(Y, T.device).reshape(-1)  # (N,)
        if len(T) != len(y):
            raise ValueError(f"T has {len(T)} samples but Y has {len(y)}")
        wide = _is_wide(T)
        if not wide and not bool(torch.isfinite(T).all()):
            raise ValueError("activations must be finite, got NaN or inf in T")
        _, labels = torch.unique(y, return_inverse=True)  # (N,) in 0..C-1
        counts = torch.bincount(labels)  # (C,)
        if wide:  # no float64 copy of the layer: one (N, d) array in the work dtype
            W, v, dtype = _wide_scaled(T, noise_var, noise_scale, seed, precision)
        else:
            T64 = T.double()
            T64 = T64 - T64.mean(0)  # (N, d) centred: distances unchanged, rounding smaller
            v = noise_variance(T64, noise_var, noise_scale, seed)
            check_noise(v, T64, noise_var, noise_scale)
            dtype = pick_dtype(T64, T.dtype, v, precision)
            W = (T64 / math.sqrt(8.0 * v)).to(dtype)  # (N, d) |w_i - w_j|^2 = D_ij / 8v
        onehot = torch.nn.functional.one_hot(labels, len(counts)).to(dtype)  # (N, C)
        S_lo, S_hi = kernel_sums(W, onehot, block)
        I_XT_lo, I_TY_lo = _bounds_from_sums(S_lo, labels, counts)
        I_XT_hi, I_TY_hi = _bounds_from_sums(S_hi, labels, counts)
        n_draws = len(T) if mc_samples is None else mc_samples
        I_XT_mc = I_TY_mc = se = math.nan
        if n_draws > 0 and len(T) > 0:
            if wide:  # sqrt(8v) = 2 sqrt(2v) exactly and x2 commutes with rounding: U = 2W
                U = W.mul_(2.0)  # (N, d) in place: W is not needed any more
            else:
                U = (T64 / math.sqrt(2.0 * v)).to(dtype)  # (N, d) |u_i - u_j|^2 = D_ij / 2v
            log_all, log_own, comp = mc_log_sums(U, onehot, labels, n_draws, seed, block)
            I_XT_mc, se, I_TY_mc = _mc_estimates(log_all, log_own, labels[comp], counts)
        counts_np = counts.cpu().numpy()
    out = {
        "I_XT": I_XT_hi,
        "I_TY": I_TY_hi,
        "I_XT_upper": I_XT_hi,
        "I_XT_lower": I_XT_lo,
        "I_TY_upper": I_TY_hi,
        "I_TY_lower": I_TY_lo,
        "I_XT_mc": min(max(I_XT_mc, I_XT_lo), I_XT_hi) if n_draws > 0 else math.nan,
        "I_XT_mc_se": se,
        "noise_var_used": v,
        "precision": str(dtype).removeprefix("torch."),
        **diagnostics(I_XT_hi, counts_np),
    }
    out["I_TY_mc"] = min(max(I_TY_mc, 0.0), out["H_Y"]) if n_draws > 0 else math.nan
    return check_bounds("kde", out)
