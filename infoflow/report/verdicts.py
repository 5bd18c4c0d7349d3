"""Verdicts on a loaded table: does a layer compress, with a seed interval to say how sure.

:func:`compression` turns the per-epoch I(X;T) trajectories of every seed into one row per
configuration and layer: the drop of I(X;T) from its peak to the last epoch (bits), a bootstrap
interval over seeds, and a verdict. :func:`side_by_side` puts the verdicts of the estimator
settings of a sweep next to each other, and :func:`verdict_sentences` says them in words, as
the report shows them. pandas, numpy and scipy's special functions only (no torch, no
matplotlib).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from infoflow.report.load import GROUPS, config_columns, repeats_message, seed_repeats

#: the measured columns a trajectory needs
_NEEDED = ("run_id", "epoch", "layer", "I_XT", "I_TY")
#: the result's columns after the configuration keys and the layer
RESULT_COLUMNS = (
    "peak_epoch",
    "I_XT_peak",
    "I_XT_final",
    "I_XT_drop",
    "I_XT_drop_lo",
    "I_XT_drop_hi",
    "I_TY_gain",
    "n_seeds",
    "n_runs",
    "verdict",
)
VERDICTS = ("compresses", "no compression", "undetermined")
#: the seeds are dealt into this many folds to choose each seed's peak (cross-fitting)
PEAK_FOLDS = 5
#: fewer seeds than this give an interval but never a verdict: with two seeds a flat, noisy
#: trajectory was called compression in 3.5% of 600 simulated draws, above the nominal 2.5%
MIN_SEEDS = 3
#: the estimator the report lists first: exact MI of a quantized net, the referee of the others
REFERENCE = "exact"


def compression(
    df: pd.DataFrame,
    min_drop: float = 0.1,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    folds: int = PEAK_FOLDS,
) -> pd.DataFrame:
    """Does I(X;T) fall after its peak? One verdict per configuration and layer, over seeds.

    Whether the hidden layers of a trained net "compress" (I(X;T) rises, then falls) is
    debated: Saxe et al. (2018) found that the fall seen by Shwartz-Ziv & Tishby (2017) comes
    from saturating tanh units and from the binning estimator, and is absent with ReLU;
    Lorenzen et al. (2022) found compression with some estimators and settings and not with
    others. This function therefore asks one narrow question of a table, with an interval over
    seeds, and never pools configurations that differ in any key (``data``, ``estimator``,
    ``estimator.bins``, ``device``, ...): a verdict holds for its configuration and estimator
    setting only.

    Parameters
    ----------
    df
        A table from :func:`infoflow.load`: one row per (run, epoch, layer), with ``run_id``,
        ``epoch``, ``layer``, ``I_XT`` and ``I_TY`` (bits), the config columns, and optionally
        ``seed``, ``layer_name``, ``step`` and ``status``.
    min_drop
        The smallest drop of I(X;T), in bits, that counts as compression (default 0.1 bit:
        well above the run-to-run wobble of a saturated layer, about 0.01 bit, and below the
        drops of a bit or more that the papers report).
    level
        Confidence level of the bootstrap interval of the drop (two-sided): a verdict is wrong
        with probability at most about ``(1 - level) / 2``.
    n_boot
        Number of bootstrap resamples of the seeds.
    seed
        Seed of the :class:`numpy.random.Generator` that draws the resamples; the resamples
        of a configuration and layer depend only on this seed and its number of seeds, so a
        row does not depend on which other rows the table holds, nor on their order.
    folds
        Number of folds the seeds are dealt into to choose each seed's peak (Notes); with
        ``folds`` seeds or fewer, each seed is its own fold (leave-one-out).

    Returns
    -------
    pandas.DataFrame
        One row per configuration (every config column of
        :func:`infoflow.report.load.config_columns` but ``seed`` and ``run_id``) and layer
        (``layer``, ``layer_name``), sorted by them, with:

        - ``peak_epoch``: the epoch at which the mean over seeds of I(X;T) is largest, the
          first of equal maxima (for display: the peak each seed's drop uses is in Notes);
        - ``I_XT_peak``: mean over seeds of each seed's I(X;T) at its own peak epoch (bits);
        - ``I_XT_final``: mean over seeds of I(X;T) at the last epoch (bits);
        - ``I_XT_drop``: mean over seeds of (I(X;T) at the seed's peak minus I(X;T) at the last
          epoch), bits, equal to ``I_XT_peak - I_XT_final``;
        - ``I_XT_drop_lo``, ``I_XT_drop_hi``: the ``level`` bootstrap interval of
          ``I_XT_drop`` (Notes); NaN with fewer than 2 seeds;
        - ``I_TY_gain``: mean over seeds of I(T;Y) at the last epoch minus that at the first
          epoch (epoch 0 when it was evaluated), bits;
        - ``n_seeds``: number of distinct seeds; ``n_runs``: number of runs read for them
          (larger when a seed was loaded twice, see Warns);
        - ``verdict``: ``"compresses"`` when ``I_XT_drop_lo > min_drop``, ``"no compression"`` when
          ``I_XT_drop_hi < min_drop``, ``"undetermined"`` otherwise, and always with fewer than
          :data:`MIN_SEEDS` (3) seeds, however large the drop.

    Warns
    -----
    UserWarning
        When a seed appears in more than one run of a configuration (two sweeps loaded
        together): the message names the configuration, the seed and the runs; the seed is
        counted once, its runs averaged epoch by epoch (``n_runs`` says how many were read).

    Raises
    ------
    ValueError
        ``df`` lacks a needed column, or ``level``, ``n_boot``, ``min_drop`` or ``folds`` is
        out of range.

    Notes
    -----
    **The peak cannot inflate the drop: cross-fitting.** Taking each seed's own maximum would:
    on a flat, noisy trajectory the maximum of many noisy values is above the last one, so
    max-minus-last is positive with no compression at all. Instead the seeds, in ascending
    order, are dealt into ``min(folds, n_seeds)`` folds (seed number ``k`` in sorted order into
    fold ``k mod folds``), and each seed's peak epoch is the epoch at which the mean I(X;T) of
    the seeds in the *other* folds is largest (the first of equal maxima). That choice does not
    depend on the seed's own values, so on a flat trajectory its expected drop is zero, while a
    peak the seeds share is still found. With 5 seeds or fewer this is leave-one-out. Five
    folds rather than leave-one-out for more seeds: in a simulation (a 1-bit drop under noise
    of 0.7 bit per evaluation, 400 draws) five folds called it in 26% of draws at 10 seeds and
    81% at 20, leave-one-out in 21% and 63%, neither calling a flat line compression. With one
    seed there are no other seeds: its own maximum is used (biased upward) and the verdict is
    ``undetermined``.

    **The interval re-chooses the peaks.** The seeds' drops are not independent (seed i's
    peak is chosen on seed j's values and the other way round), so resampling fixed drops
    gives too narrow an interval: on flat trajectories with 1 bit of noise per evaluation, it
    called compression (lower end above 0) in 12.5% (5 seeds) and 18.5% (10 seeds) of 200
    draws, where 2.5% are nominal. Each
    bootstrap resample of the seeds (``n_boot``, with replacement) therefore runs the whole
    procedure again: a drawn seed stays in its fold with its copies, the peaks are chosen
    again on the resample's other folds (on the full sample's choice when a resample holds no
    seed outside a fold), and the resample's mean drop is computed. The percentile interval
    of those means is then widened about ``I_XT_drop`` by the small-sample factor
    ``t(n-1) / (z * sqrt((n-1)/n))`` (Student-t over normal quantile at ``level``, with the
    bootstrap's n rather than n-1 variance: the factor that turns a percentile interval of a
    normal mean into the t interval; 1.58 for 5 seeds, 1.22 for 10, 1.04 for 50), never
    narrowed. Measured on 200 draws of flat trajectories plus noise, 40 evaluations, 5 and 10
    seeds, ``min_drop=0`` (``tests/test_verdicts.py``): with normal noise (1 bit per
    evaluation) and heavy-tailed noise (t, 3 degrees of freedom) no draw was called
    compression, with random walks 2% (5 seeds) and 1% (10 seeds); the nominal rate is 2.5%.

    Assumptions: seeds are independent repeats of one configuration (distinct ``seed`` values;
    ``run_id`` when there is no ``seed`` column); runs whose ``status`` is present and not
    ``completed`` are left out (their last epoch is not the sweep's); only the epochs that every
    seed of a configuration and layer has, with a measured I(X;T) and I(T;Y), are used (an
    inner join on epoch), so "last" and "first" epoch are those common to all its seeds. With
    a ``step`` column, an evaluation is an (epoch, step) pair, in that order. More seeds make
    the verdict firmer; more resamples only make its interval's ends less noisy.

    References
    ----------
    Shwartz-Ziv, R. & Tishby, N. (2017). Opening the black box of deep neural networks via
    information. arXiv:1703.00810.

    Saxe, A. M. et al. (2018). On the information bottleneck theory of deep learning. ICLR.

    Lorenzen, S. S., Igel, C. & Nielsen, M. (2022). Information bottleneck: exact analysis of
    (quantized) neural networks. ICLR.

    Chernozhukov, V. et al. (2018). Double/debiased machine learning for treatment and
    structural parameters. Econometrics Journal 21(1) (cross-fitting).

    Hesterberg, T. C. (2015). What teachers should know about the bootstrap. The American
    Statistician 69(4) (the narrowness of the percentile interval for small samples).
    """
    _check(df, min_drop, level, n_boot, folds)
    if "status" in df.columns:
        df = df[df["status"].isna() | (df["status"] == "completed")]
    config = [c for c in config_columns(df) if c not in ("seed", "run_id")]
    layer = [c for c in ("layer", "layer_name") if c in df.columns]
    group = [*config, *layer]
    seed_col = "seed" if "seed" in df.columns else "run_id"
    time = ["epoch"]
    if "step" in df.columns and df["step"].notna().any():
        time.append("step")
    columns = [*group, *RESULT_COLUMNS]
    if df.empty:
        return pd.DataFrame(columns=columns)

    rows = df[[*dict.fromkeys([*group, seed_col, *time, "run_id"]), "I_XT", "I_TY"]].copy()
    if "step" in time:
        rows["step"] = rows["step"].fillna(-1)  # an evaluation without a step comes first
    if len(repeats := seed_repeats(rows, config, seed_col)):
        warnings.warn(repeats_message(repeats, rows, config, seed_col), stacklevel=2)
        # the runs of a seed are averaged in run id order, whatever the order of the table
        rows = rows.sort_values(["run_id", *time], kind="stable")
    # one integer per configuration and layer: no NaN keys (model.channels of an MLP) to carry
    # through the reshaping below
    rows["_g"] = rows.groupby(group, dropna=False, sort=True).ngroup()
    keys = rows.drop_duplicates("_g").set_index("_g").sort_index()[group]
    n_runs = rows.groupby("_g")["run_id"].nunique()
    # one value per (configuration and layer, seed, evaluation), the runs of a seed averaged;
    # then seeds as rows, evaluations as columns
    traj = rows.groupby(["_g", seed_col, *time], dropna=False, sort=True)[["I_XT", "I_TY"]]
    wide = traj.mean().unstack(time)
    xt = wide["I_XT"].to_numpy(float)  # (configurations x seeds, evaluations)
    ty = wide["I_TY"].reindex(columns=wide["I_XT"].columns).to_numpy(float)
    evals = wide["I_XT"].columns
    epochs = np.asarray(evals.get_level_values("epoch") if time != ["epoch"] else evals)
    codes = wide.index.get_level_values("_g").to_numpy()
    starts = np.searchsorted(codes, keys.index.to_numpy())
    ends = np.append(starts[1:], len(codes))

    draws: dict[int, np.ndarray] = {}  # number of seeds -> resample counts, one draw each
    out = []
    with _one_blas_thread():
        for g, start, end in zip(keys.index, starts, ends):
            x, y = xt[start:end], ty[start:end]
            common = np.isfinite(x).all(axis=0) & np.isfinite(y).all(axis=0)  # the inner join
            x, y = x[:, common], y[:, common]
            n = len(x)
            if n >= 2 and n not in draws:
                draws[n] = _resample_counts(n, int(n_boot), seed)
            stats = _stats(x, y, draws.get(n), min_drop, level, folds)
            peak = stats.pop("peak")
            stats["peak_epoch"] = epochs[common][peak] if peak is not None else np.nan
            stats["n_seeds"] = n
            stats["n_runs"] = int(n_runs[g])
            out.append(stats)
    result = pd.concat([keys.reset_index(drop=True), pd.DataFrame(out)], axis=1)
    return result[columns].reset_index(drop=True)


def _check(df: pd.DataFrame, min_drop: float, level: float, n_boot: int, folds: int) -> None:
    missing = [c for c in _NEEDED if c not in df.columns]
    if missing:
        raise ValueError(
            f"compression() needs the columns {', '.join(_NEEDED)}; the table lacks "
            f"{', '.join(missing)} (read it with infoflow.load)"
        )
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level!r}")
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot!r}")
    if not np.isfinite(min_drop):
        raise ValueError(f"min_drop must be a finite number of bits, got {min_drop!r}")
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
        raise ValueError(f"folds must be an integer of at least 2, got {folds!r}")


def _one_blas_thread():
    """A context in which BLAS runs on one thread. The bootstrap's matrix products are small
    (2,000 resamples x 50 seeds by 50 x 100 evaluations): waking more threads costs more than
    it saves, and on a shared machine they spin; 18 configurations of 50 seeds took 1.2 s of
    CPU with OpenBLAS's threads, 0.36 s on one. threadpoolctl comes with scikit-learn."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - a dependency of scikit-learn, so always there
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _resample_counts(n: int, n_boot: int, seed: int) -> np.ndarray:
    """How often each of ``n`` seeds is drawn in each of ``n_boot`` resamples with
    replacement: an ``(n_boot, n)`` array of whole numbers (floats, for the matrix products)
    whose rows sum to ``n``."""
    picks = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    flat = (picks + n * np.arange(n_boot)[:, None]).ravel()
    return np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n).astype(float)


def _fold_peaks(fold_sums: np.ndarray) -> np.ndarray:
    """Each fold's peak: the argmax over evaluations of the other folds' summed I(X;T).

    ``fold_sums``: ``(folds, ..., evaluations)``; returns ``(folds, ...)``. The other folds'
    sum is added up from them (sums before the fold plus sums after it) rather than taken as
    the total minus the fold, whose rounding would let the fold's own values pick among equal
    maxima of the others (the plateaus of exact MI at its ceiling).
    """
    k = len(fold_sums)
    before: list = [None] * k  # the sum of the folds before each fold
    for f in range(1, k):
        before[f] = fold_sums[0] if f == 1 else before[f - 1] + fold_sums[f - 1]
    peaks = np.empty((k, *fold_sums.shape[1:-1]), dtype=np.intp)
    after = None  # the sum of the folds after fold f
    for f in range(k - 1, -1, -1):
        parts = [s for s in (before[f], after) if s is not None]
        others = parts[0] + parts[1] if len(parts) == 2 else parts[0]
        peaks[f] = others.argmax(axis=-1)
        after = fold_sums[f] if after is None else after + fold_sums[f]
    return peaks


def _stats(
    x: np.ndarray,
    y: np.ndarray,
    counts: np.ndarray | None,
    min_drop: float,
    level: float,
    folds: int,
) -> dict:
    """Statistics of one configuration and layer from seeds x evaluations arrays (bits)."""
    n, t = x.shape
    nan = {"peak": None, "I_XT_peak": np.nan, "I_XT_final": np.nan, "I_XT_drop": np.nan}
    nan.update(I_XT_drop_lo=np.nan, I_XT_drop_hi=np.nan, I_TY_gain=np.nan, verdict="undetermined")
    if n == 0 or t == 0:
        return nan
    lo = hi = np.nan
    if n == 1:
        peaks = x.argmax(axis=1)
    else:
        k = min(folds, n)
        fold = np.arange(n) % k
        fold_peaks = _fold_peaks(np.stack([x[fold == f].sum(axis=0) for f in range(k)]))
        peaks = fold_peaks[fold]  # (seeds,)
        drops = x[np.arange(n), peaks] - x[:, -1]
        boot = _boot_drops(x, counts, fold, fold_peaks)
        lo, hi = _interval(float(drops.mean()), boot, n, level)
    at_peak = x[np.arange(n), peaks]
    drop = float((at_peak - x[:, -1]).mean())
    if n < MIN_SEEDS:
        verdict = "undetermined"
    elif lo > min_drop:
        verdict = "compresses"
    elif hi < min_drop:
        verdict = "no compression"
    else:
        verdict = "undetermined"
    return {
        "peak": int(x.mean(axis=0).argmax()),
        "I_XT_peak": float(at_peak.mean()),
        "I_XT_final": float(x[:, -1].mean()),
        "I_XT_drop": drop,
        "I_XT_drop_lo": float(lo),
        "I_XT_drop_hi": float(hi),
        "I_TY_gain": float(y[:, -1].mean() - y[:, 0].mean()),
        "verdict": verdict,
    }


def _boot_drops(
    x: np.ndarray, counts: np.ndarray, fold: np.ndarray, fold_peaks: np.ndarray
) -> np.ndarray:
    """The mean drop of every resample, its peaks chosen again on the resample's other folds.

    ``x``: (seeds, evaluations); ``counts``: (resamples, seeds) draws of each seed, float;
    ``fold``: each seed's fold; ``fold_peaks``: the full sample's peak of each fold, used where
    a resample has no seed outside the fold.
    """
    n, t = x.shape
    k = len(fold_peaks)
    sums = np.empty((k, len(counts), t))  # (folds, resamples, evaluations)
    drawn = np.empty((len(counts), k))  # seeds drawn per fold and resample
    for f in range(k):
        mine = fold == f
        part = np.ascontiguousarray(counts[:, mine])
        np.matmul(part, x[mine], out=sums[f])
        drawn[:, f] = part.sum(axis=1)
    peaks = _fold_peaks(sums).T  # (resamples, folds)
    alone = drawn == n  # every draw in one fold: no other fold to choose its peak on
    peaks = np.where(alone, fold_peaks[None, :], peaks)
    at_peak = x[np.arange(n)[None, :], peaks[:, fold]]  # (resamples, seeds)
    return (counts * (at_peak - x[:, -1])).sum(axis=1) / n


def _interval(drop: float, boot: np.ndarray, n: int, level: float) -> tuple[float, float]:
    """The percentile interval of ``boot``, widened about ``drop`` by the small-sample factor
    (Notes of :func:`compression`), never narrowed."""
    from scipy.special import ndtri, stdtrit  # scipy.stats alone costs half a second

    q_lo, q_hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    tail = 0.5 + level / 2
    factor = float(stdtrit(n - 1, tail) / (ndtri(tail) * np.sqrt((n - 1) / n)))
    lo = min(q_lo, drop - factor * (drop - q_lo))
    hi = max(q_hi, drop + factor * (q_hi - drop))
    return float(lo), float(hi)


# ----------------------------------------------------------------------------------------------
# the verdicts of a sweep's estimator settings side by side


def estimator_setting(verdicts: pd.DataFrame) -> pd.Series:
    """The estimator setting of each row: the ``estimator`` choice, and each ``estimator.*``
    key that takes several values within that choice (``binning bins=10``), else the choice
    alone (``binning_30``, ``kde_nn``). ``estimator.*`` keys without an ``estimator`` column
    name the setting on their own; a table with neither gives ``"estimator"``."""
    keys = [c for c in verdicts.columns if str(c).startswith("estimator.")]
    choice = (
        verdicts["estimator"].map(_text)
        if "estimator" in verdicts.columns
        else pd.Series("", index=verdicts.index)
    )
    label = choice.copy()
    for key in keys:
        varies = verdicts.groupby(choice, dropna=False)[key].transform(
            lambda v: v.nunique(dropna=False) > 1
        )
        part = f"{key.split('.', 1)[1]}=" + verdicts[key].map(_text)
        shown = varies.astype(bool) & verdicts[key].notna()
        label = label.where(~shown, (label + " " + part).str.strip())
    return label.where(label != "", "estimator")


def side_by_side(verdicts: pd.DataFrame) -> tuple[pd.DataFrame, list[str], list[str]]:
    """The verdicts of :func:`compression` with their estimator setting, in the order of the
    report's table.

    Returns
    -------
    table
        ``verdicts`` with a ``setting`` column (:func:`estimator_setting`) after the
        configuration keys, sorted by configuration, layer and setting.
    rows
        The keys that tell the table's rows apart besides the layer: ``model`` and the other
        varying choices (``data``), then every other non-estimator key that varies, but a key
        that follows from a choice (``model.hidden`` given ``model``).
    settings
        The settings, in the order of the table's columns: :data:`REFERENCE` (``exact``)
        first, then by estimator choice and the values of its keys.
    """
    table = verdicts.copy()
    layer = [c for c in ("layer", "layer_name") if c in table.columns]
    config = list(table.columns[: list(table.columns).index(RESULT_COLUMNS[0])])
    config = [c for c in config if c not in layer]
    table.insert(len(config), "setting", estimator_setting(table))
    other = [c for c in config if c != "estimator" and not str(c).startswith("estimator.")]
    varied = [c for c in other if c == "model" or table[c].nunique(dropna=False) > 1]
    choices = [c for c in varied if c in GROUPS]
    rows = [g for g in GROUPS if g in choices] + [
        c
        for c in varied
        if c not in GROUPS
        and not any(
            (table.groupby(g, dropna=False)[c].nunique(dropna=False) <= 1).all() for g in choices
        )
    ]
    # settings: the reference (exact MI) first, then by choice and key values (10 before 30)
    est = ["estimator"] if "estimator" in config else []
    est += [c for c in config if str(c).startswith("estimator.")]
    first = {}
    for values in table[[*est, "setting"]].itertuples(index=False):
        first.setdefault(values[-1], values[:-1])
    settings = sorted(
        first, key=lambda s: (first[s][:1] != (REFERENCE,), [_sort_key(v) for v in first[s]])
    )
    order = {s: i for i, s in enumerate(settings)}
    table["_order"] = table["setting"].map(order)
    table = _sorted(table, [*rows, *layer, "_order"])
    return table.drop(columns="_order").reset_index(drop=True), rows, settings


def _sort_key(value: object) -> tuple:
    """Numbers by value, then text, then missing values: a key whose column mixes them."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return (2, 0.0, "")
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def _sorted(table: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """``table`` sorted by ``by``; a column that mixes numbers and text sorts by
    :func:`_sort_key` instead of failing."""
    try:
        return table.sort_values(by, kind="stable", na_position="last")
    except TypeError:
        keys = {c: table[c].map(_sort_key) for c in by}
        return table.iloc[pd.DataFrame(keys).apply(tuple, axis=1).argsort(kind="stable")]


def verdict_sentences(table: pd.DataFrame, rows: Sequence[str]) -> list[str]:
    """One sentence per configuration and layer of :func:`side_by_side`'s table:
    ``"fc5: compresses under exact, binning_30 and kde_nn; no compression under renyi"``,
    prefixed by the row's keys when the table has several (``"mlp3, model.activation=tanh,
    fc5: ..."``)."""
    layer = [c for c in ("layer", "layer_name") if c in table.columns]
    several = table.groupby(list(rows), dropna=False).ngroups > 1 if rows else False
    out = []
    for _, g in table.groupby([*rows, *layer], dropna=False, sort=False):
        first = g.iloc[0]
        name = _text(first["layer_name"]) if "layer_name" in g else f"layer {first['layer']}"
        prefix = [
            _text(first[k]) if k == "model" else f"{k}={_text(first[k])}" for k in rows
        ] if several else []  # fmt: skip
        clauses = [
            f"{verdict} under {_and(g.loc[g['verdict'] == verdict, 'setting'].tolist())}"
            for verdict in VERDICTS
            if (g["verdict"] == verdict).any()
        ]
        out.append(f"{', '.join([*prefix, name])}: {'; '.join(clauses)}")
    return out


def _and(items: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _text(value: object) -> str:
    if isinstance(value, (float, np.floating)):
        return "none" if np.isnan(value) else f"{value:g}"
    return str(value)
