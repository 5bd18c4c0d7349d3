"""Shared pieces of the estimators: array conversion, plug-in entropies, row hashing, checks.

Every estimator returns the same diagnostics (see :func:`diagnostics`) and validates its
parameters with :func:`check_params`, whose messages name the config key (``estimator.<name>``),
the rule and the value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

LN2 = np.log(2.0)

# Fixed odd 64-bit multipliers for row hashing: a fixed seed keeps estimates reproducible.
_HASH_RNG_SEED = 0x1F0F10

# Fraction of H_max above which I(X;T) is flagged as saturated.
SATURATION_TOL = 0.01

STRATEGIES = ("uniform", "quantile")
BIAS_CORRECTIONS = ("none", "miller_madow")
PRECISIONS = ("auto", "float32", "float64")
NOISE_SCALES = ("absolute", "variance", "neighbour")
WIDTH_RULES = ("silverman", "fixed")

# Layers (and inputs) wider than this many units take the column-block paths of renyi (its
# Gram matrices), sliced (its projections) and kde (its centred, scaled copy): no temporary
# there grows with the width beyond BLOCK_ELEMS values, nor is any float64 copy of the whole
# layer made (kde takes its path also above kde.WIDE_VALUES values). Up to this width renyi
# and sliced run the code they ran before, so their numbers on every layer of up to 16,384
# units stay the same bit for bit (the column blocks change only the order of float sums;
# tests/test_estimators_wide.py compares both paths). Read at call time as
# ``_common.WIDE_UNITS``, so a test can lower it.
WIDE_UNITS = 2**14

# Values per block on the column-block paths: 16 MiB of float32 (a renyi block of the default
# 4 x 256 batch rows is 4,096 units wide).
BLOCK_ELEMS = 2**22

# Largest Renyi order (estimator.alpha). renyi computes every order in (0, MAX_ALPHA] in a form
# that neither underflows nor overflows (renyi.entropy_of); beyond ~1e305, (alpha - 1) ln(lambda)
# overflows float64. The limit is set far below that: S_alpha lies between the min-entropy and
# alpha / (alpha - 1) times it, so from 1e6 on a larger order changes nothing (1e-6 relative).
MAX_ALPHA = 1e6


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


def miller_madow(counts: np.ndarray) -> float:
    """Miller-Madow bias correction in bits: ``(m - 1) / (2 n ln 2)``, m = occupied cells.

    Added to the plug-in entropy of a histogram it removes the first-order bias of the plug-in
    estimator (Miller 1955), which underestimates the entropy by about ``(m - 1) / 2n`` nats.
    """
    n = counts.sum()
    m = np.count_nonzero(counts)
    return float((m - 1) / (2.0 * n * LN2)) if n > 0 else 0.0


def hash_multipliers(d: int) -> np.ndarray:
    """The ``d`` fixed random odd uint64 multipliers of :func:`hash_rows`."""
    rng = np.random.default_rng(_HASH_RNG_SEED)
    return rng.integers(0, 2**63, size=d, dtype=np.uint64) * np.uint64(2) + np.uint64(1)


def hash_rows(codes: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Hash each row of a non-negative integer matrix to one uint64.

    A random linear hash modulo 2**64 with odd multipliers. Two rows that differ collide only if
    ``sum_k m_k (a_k - b_k) = 0 mod 2**64``; with the differences below ``2**v`` this happens with
    probability at most ``2**-(63 - v)`` per pair of rows (v = 16 bits of bin index: < 2**-47;
    for 10**4 rows the chance of any collision is then < 1e-6, and < 1e-13 for <= 256 bins).

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
    mult = hash_multipliers(d)  # (d,)
    out = np.empty(n, dtype=np.uint64)
    for start in range(0, n, chunk):
        block = codes[start : start + chunk].astype(np.uint64)
        out[start : start + chunk] = block @ mult  # (chunk,) wraps modulo 2**64
    return out


def symbols(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Relabel arbitrary symbols as 0..k-1; return (labels, k)."""
    uniq, inv = np.unique(values, return_inverse=True)
    return inv.reshape(-1), len(uniq)


def diagnostics(I_XT: float, class_counts: np.ndarray) -> dict[str, Any]:
    """The columns every estimator adds to its row, to read an information plane safely.

    Parameters
    ----------
    I_XT : float
        The estimator's I(X;T) in bits.
    class_counts : ndarray of shape (n_classes,)
        Samples per label over the evaluation split.

    Returns
    -------
    dict
        ``n_samples`` (N), ``H_max`` = log2 N in bits: the largest I(X;T) any estimator here can
        report for a deterministic net seen through N samples (binning: every sample in its own
        cell; KDE: N well-separated mixture components); ``saturated``: True where
        ``I_XT >= (1 - 0.01) * H_max``, i.e. the estimate is pinned at its ceiling and its
        movement says nothing about compression; ``H_Y``: the plug-in label entropy in bits,
        the ceiling of I(T;Y) (reached when T determines the label).
    """
    counts = np.asarray(class_counts)
    n = int(counts.sum())
    H_max = math.log2(n) if n > 0 else 0.0
    return {
        "n_samples": n,
        "H_max": H_max,
        "saturated": bool(I_XT >= (1.0 - SATURATION_TOL) * H_max),
        "H_Y": entropy_from_counts(counts),
    }


# Round-off, in bits, by which an estimate may pass a bound. An estimate and its ceiling come from
# different float64 operations (binning's I_TY = H_T + H_Y - H_TY against H_Y from the label
# counts: 9e-16 apart when T determines Y), so a bound can be passed by a few ulps. Estimates
# are not clipped onto their bounds (that would change the numbers of earlier versions, which
# the golden tables hold to the bit); anything beyond this is refused by check_bounds as a bug.
ROUNDOFF_BITS = 1e-9


def check_bounds(estimator: str, out: dict[str, Any]) -> dict[str, Any]:
    """Return ``out`` after checking that its estimates lie within their ceilings.

    ``0 <= I_XT <= min(H_max, I_XT_max)`` (``I_XT_max``: the estimator's own ceiling, where it
    has one) and ``0 <= I_TY <= H_Y``, all finite, up to :data:`ROUNDOFF_BITS`. Every estimator
    meets this by construction (see each one's Notes); an estimate outside it is a bug, raised
    as a RuntimeError instead of written to a table as an impossible number.
    """
    ceilings = {
        "I_XT": min(out["H_max"], out.get("I_XT_max", math.inf)),
        "I_TY": out["H_Y"],
    }
    for key, hi in ceilings.items():
        v = out[key]
        if not (math.isfinite(v) and -ROUNDOFF_BITS <= v <= hi + ROUNDOFF_BITS):
            raise RuntimeError(
                f"{estimator}: {key} = {v!r} bits lies outside [0, {hi!r}], its range on "
                f"{out['n_samples']} samples; this is a bug in the estimator, please report it "
                "with the parameters and the layer's shape"
            )
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _fail(key: str, rule: str, value: Any) -> None:
    raise ValueError(f"estimator.{key} {rule}, got {value!r}")


def parse_range(value: Any) -> tuple[float, float] | None:
    """``"layer"`` -> None (observed range); ``[lo, hi]`` -> (lo, hi). Raises ValueError."""
    if isinstance(value, str):
        if value == "layer":
            return None
        _fail("range", "must be 'layer' or a list [lo, hi] of two numbers with lo < hi", value)
    try:
        items = list(value)
    except TypeError:
        items = None
    if (
        items is None
        or len(items) != 2
        or not all(_is_number(v) and math.isfinite(v) for v in items)
        or not items[0] < items[1]
    ):
        _fail("range", "must be 'layer' or a list [lo, hi] of two numbers with lo < hi", value)
    return float(items[0]), float(items[1])


def check_params(params: Mapping[str, Any]) -> None:
    """Check estimator parameters (the ``estimator`` config node, or an estimator's kwargs).

    Keys starting with ``_`` (``_target_``, ``_partial_``) and unknown keys are ignored; each
    known key is checked on its own and the few combinations that contradict are refused.
    Raises ValueError with a message naming ``estimator.<key>``, the rule and the value.

    The admissible ranges are those on which every estimator's outputs stay within their bounds
    (0 <= I_XT <= min(H_max, I_XT_max), 0 <= I_TY <= H_Y, finite; :func:`check_bounds`):
    ``alpha`` in (0, 1e6] without 1, ``width`` and ``noise_var`` any finite number > 0,
    ``bins`` any integer >= 2, ``slices``, ``batches`` >= 1, ``batch_size`` >= 2. Two limits
    depend on the data and are applied by the estimator when called: sliced uses
    ``min(bins, n_samples)`` bins, and kde refuses a noise variance too small for float64
    against the layer's spread (ValueError naming ``estimator.noise_var``).
    """
    p = {k: v for k, v in params.items() if not str(k).startswith("_")}
    bins = p.get("bins")
    if "bins" in p and bins is not None and (not isinstance(bins, (int, np.integer)) or bins < 2):
        _fail("bins", "must be an integer >= 2 (or null when estimator.bin_width is set)", bins)
    if isinstance(bins, bool):
        _fail("bins", "must be an integer >= 2 (or null when estimator.bin_width is set)", bins)
    width = p.get("bin_width")
    if width is not None and not (_is_number(width) and math.isfinite(width) and width > 0):
        _fail("bin_width", "must be a number > 0 or null", width)
    if "range" in p:
        parse_range(p["range"])
    strategy = p.get("strategy", "uniform")
    if strategy not in STRATEGIES:
        _fail("strategy", f"must be one of {', '.join(STRATEGIES)}", strategy)
    bias = p.get("bias_correction", "none")
    if bias not in BIAS_CORRECTIONS:
        _fail("bias_correction", f"must be one of {', '.join(BIAS_CORRECTIONS)}", bias)
    if "bin_width" in p or "bins" in p:  # the binning estimator: exactly one of the two
        if width is not None and bins is not None:
            raise ValueError(
                "estimator.bins and estimator.bin_width are mutually exclusive: set one and "
                f"the other to null (e.g. estimator.bins=null estimator.bin_width={width}), "
                f"got bins={bins!r}, bin_width={width!r}"
            )
        if width is None and bins is None and "bins" in p:
            _fail("bins", "must be an integer >= 2 when estimator.bin_width is null", bins)
        if width is not None and strategy != "uniform":
            raise ValueError(
                "estimator.bin_width needs estimator.strategy=uniform (quantile bins have "
                f"equal mass, not equal width), got strategy={strategy!r}, bin_width={width!r}"
            )
    if "noise_var" in p:
        v = p["noise_var"]
        if not (_is_number(v) and math.isfinite(v) and v > 0):
            _fail("noise_var", "must be a number > 0 (variance of the added Gaussian noise)", v)
    if "precision" in p and p["precision"] not in PRECISIONS:
        _fail("precision", f"must be one of {', '.join(PRECISIONS)}", p["precision"])
    _check_new_estimators(p)


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _check_new_estimators(p: Mapping[str, Any]) -> None:
    """Keys of kde's noise scale and Monte Carlo estimate, of ``renyi`` and of ``sliced``."""
    if "noise_scale" in p and p["noise_scale"] not in NOISE_SCALES:
        _fail("noise_scale", f"must be one of {', '.join(NOISE_SCALES)}", p["noise_scale"])
    mc = p.get("mc_samples")
    if mc is not None and not (_is_int(mc) and mc >= 0):
        _fail("mc_samples", "must be an integer >= 0 (0: no Monte Carlo estimate) or null", mc)
    if "seed" in p and not (_is_int(p["seed"]) and p["seed"] >= 0):
        _fail("seed", "must be an integer >= 0", p["seed"])
    if "alpha" in p:
        a = p["alpha"]
        if not (_is_number(a) and 0 < a <= MAX_ALPHA and a != 1):
            _fail(
                "alpha",
                f"must be a number > 0 and != 1, at most {MAX_ALPHA:g} (the Renyi order; 1.01 ~ "
                "Shannon)",
                a,
            )
    if "width" in p:
        w = p["width"]
        if not (_is_number(w) and math.isfinite(w) and w > 0):
            _fail("width", "must be a number > 0 (the kernel width factor)", w)
    if "width_rule" in p and p["width_rule"] not in WIDTH_RULES:
        _fail("width_rule", f"must be one of {', '.join(WIDTH_RULES)}", p["width_rule"])
    if "batch_size" in p and not (_is_int(p["batch_size"]) and p["batch_size"] >= 2):
        _fail("batch_size", "must be an integer >= 2", p["batch_size"])
    batches = p.get("batches")
    if batches is not None and not (_is_int(batches) and batches >= 1):
        _fail("batches", "must be an integer >= 1 or null (every full batch)", batches)
    if "slices" in p and not (_is_int(p["slices"]) and p["slices"] >= 1):
        _fail("slices", "must be an integer >= 1 (random directions averaged)", p["slices"])
