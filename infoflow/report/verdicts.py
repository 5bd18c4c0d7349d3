"""Verdicts on a loaded table: does a layer compress, with a seed interval to say how sure.

:func:`compression` turns the per-epoch I(X;T) trajectories of every seed into one row per
configuration and layer: the drop of I(X;T) from its peak to the last epoch (bits), a bootstrap
interval over seeds, and a verdict. pandas and numpy only (no torch, no matplotlib).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from infoflow.report.load import config_columns

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
    "verdict",
)
VERDICTS = ("compresses", "no compression", "undetermined")


def compression(
    df: pd.DataFrame,
    min_drop: float = 0.1,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Does I(X;T) fall after its peak? One verdict per configuration and layer, over seeds.

    Whether the hidden layers of a trained net "compress" (I(X;T) rises, then falls) is
    debated: Saxe et al. (2018) found that the fall seen by Shwartz-Ziv & Tishby (2017) comes
    from saturating tanh units and from the binning estimator, and is absent with ReLU;
    Lorenzen et al. (2022) found compression with some estimators and settings and not with
    others. This function therefore asks one narrow question of a table, with an interval over
    seeds, and never pools configurations that differ in any key (``data``, ``estimator``,
    ``estimator.bins``, ...): a verdict holds for its configuration and estimator only.

    Parameters
    ----------
    df
        A table from :func:`infoflow.load`: one row per (run, epoch, layer), with ``run_id``,
        ``epoch``, ``layer``, ``I_XT`` and ``I_TY`` (bits), the config columns, and optionally
        ``seed``, ``layer_name``, ``step`` and ``status``.
    min_drop
        The smallest drop of I(X;T), in bits, that counts as compression.
    level
        Confidence level of the bootstrap interval of the drop (two-sided, percentile).
    n_boot
        Number of bootstrap resamples of the seeds.
    seed
        Seed of the :class:`numpy.random.Generator` that draws the resamples; each
        configuration and layer draws from a fresh generator with this seed, so a row does not
        depend on which other rows the table holds, nor on the order of its rows.

    Returns
    -------
    pandas.DataFrame
        One row per configuration (every config column of
        :func:`infoflow.report.load.config_columns` but ``seed`` and ``run_id``) and layer
        (``layer``, ``layer_name``), sorted by them, with:

        - ``peak_epoch``: the epoch at which the mean over seeds of I(X;T) is largest (for
          display; see Notes for the peak each seed's drop uses);
        - ``I_XT_peak``: mean over seeds of each seed's I(X;T) at its own peak epoch (bits);
        - ``I_XT_final``: mean over seeds of I(X;T) at the last epoch (bits);
        - ``I_XT_drop``: mean over seeds of (I(X;T) at the seed's peak minus I(X;T) at the last
          epoch), bits, equal to ``I_XT_peak - I_XT_final``;
        - ``I_XT_drop_lo``, ``I_XT_drop_hi``: the ``level`` percentile-bootstrap interval of
          ``I_XT_drop`` (seeds resampled with replacement, ``n_boot`` times); NaN with fewer
          than 2 seeds;
        - ``I_TY_gain``: mean over seeds of I(T;Y) at the last epoch minus that at the first
          epoch (epoch 0 when it was evaluated), bits;
        - ``n_seeds``: number of distinct seeds;
        - ``verdict``: ``"compresses"`` when ``I_XT_drop_lo > min_drop``, ``"no compression"`` when
          ``I_XT_drop_hi < min_drop``, ``"undetermined"`` otherwise, and always with fewer than 2
          seeds: a single seed has no interval, however large its drop.

    Warns
    -----
    UserWarning
        When a seed appears in more than one run of a configuration (two sweeps loaded
        together): it is counted once, its runs averaged epoch by epoch; the message says how
        many (configuration, layer, seed) groups were merged.

    Raises
    ------
    ValueError
        ``df`` lacks a needed column, or ``level``, ``n_boot`` or ``min_drop`` is out of range.

    Notes
    -----
    **The peak cannot inflate the drop.** Taking each seed's own maximum would: on a flat,
    noisy trajectory the maximum of many noisy values is above the last one, so
    max-minus-last is positive with no compression at all. Each seed's peak epoch is instead
    the argmax of the mean I(X;T) trajectory of the *other* seeds (leave-one-out), which is
    independent of that seed's noise: on a flat trajectory the expected drop is then zero,
    while a real peak shared by the seeds is still found. With one seed there are no other
    seeds; its own argmax is used (biased upward) and the verdict is ``undetermined``.

    Assumptions: seeds are independent repeats of one configuration (distinct ``seed`` values;
    ``run_id`` when there is no ``seed`` column); runs whose ``status`` is present and not
    ``completed`` are left out (their last epoch is not the sweep's); only the epochs that every
    seed of a configuration and layer has, with a measured I(X;T) and I(T;Y), are used (an
    inner join on epoch), so "last" and "first" epoch are those common to all its seeds. With
    a ``step`` column, an evaluation is an (epoch, step) pair, in that order. The percentile
    bootstrap over few seeds (fewer than about 5) is narrower than the truth; more seeds make
    the verdict firmer, never the bootstrap.

    References
    ----------
    Shwartz-Ziv, R. & Tishby, N. (2017). Opening the black box of deep neural networks via
    information. arXiv:1703.00810.

    Saxe, A. M. et al. (2018). On the information bottleneck theory of deep learning. ICLR.

    Lorenzen, S. S., Igel, C. & Nielsen, M. (2022). Information bottleneck: exact analysis of
    (quantized) neural networks. ICLR.
    """
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

    order = list(dict.fromkeys([*group, seed_col, *time, "run_id"]))
    rows = df[[*order, "I_XT", "I_TY"]].copy()
    if "step" in time:
        rows["step"] = rows["step"].fillna(-1)  # an evaluation without a step comes first
    # a fixed order, so the averages below do not depend on the order of the table's rows
    rows = rows.sort_values(order, kind="stable")
    repeats = 0
    if seed_col != "run_id":
        per_seed = rows.groupby([*group, seed_col], dropna=False, sort=True)["run_id"].nunique()
        repeats = int((per_seed > 1).sum())
    if repeats > 0:
        warnings.warn(
            f"{repeats} (configuration, layer, seed) groups hold more than one run: each seed "
            "is counted once, its runs averaged (load one sweep, or drop the repeats)",
            stacklevel=2,
        )
    traj = rows.groupby([*group, seed_col, *time], dropna=False, sort=True)[["I_XT", "I_TY"]]
    traj = traj.mean()  # one value per (configuration, layer, seed, evaluation)

    out = []
    for key, g in traj.groupby(level=list(range(len(group))), dropna=False, sort=True):
        wide = g.droplevel(list(range(len(group)))).unstack(time)  # seeds x (value, evaluation)
        wide = wide.dropna(axis=1, how="any")  # inner join: the evaluations every seed has
        xt = wide["I_XT"]
        ty = wide["I_TY"]
        evals = xt.columns.intersection(ty.columns)
        key = key if isinstance(key, tuple) else (key,)
        stats = _verdict(
            xt[evals].to_numpy(float), ty[evals].to_numpy(float), min_drop, level, n_boot, seed
        )
        peak = stats.pop("peak")
        epochs = evals.get_level_values("epoch") if len(evals) else []
        stats["peak_epoch"] = epochs[peak] if peak is not None else np.nan
        stats["n_seeds"] = len(wide.index)
        out.append({**dict(zip(group, key)), **stats})
    result = pd.DataFrame(out)
    return result[columns].reset_index(drop=True)


def _verdict(
    xt: np.ndarray, ty: np.ndarray, min_drop: float, level: float, n_boot: int, seed: int
) -> dict:
    """Statistics of one configuration and layer from seeds x evaluations arrays (bits)."""
    n, t = xt.shape
    nan = {"peak": None, "I_XT_peak": np.nan, "I_XT_final": np.nan, "I_XT_drop": np.nan}
    nan.update(I_XT_drop_lo=np.nan, I_XT_drop_hi=np.nan, I_TY_gain=np.nan, verdict="undetermined")
    if n == 0 or t == 0:
        return nan
    mean = xt.mean(axis=0)
    if n >= 2:  # each seed's peak: the argmax of the other seeds' mean trajectory
        loo = (xt.sum(axis=0, keepdims=True) - xt) / (n - 1)
        peaks = loo.argmax(axis=1)
    else:
        peaks = np.array([int(mean.argmax())])
    at_peak = xt[np.arange(n), peaks]
    drops = at_peak - xt[:, -1]
    lo = hi = np.nan
    if n >= 2:
        rng = np.random.default_rng(seed)
        boot = drops[rng.integers(0, n, size=(int(n_boot), n))].mean(axis=1)
        lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    if lo > min_drop:
        verdict = "compresses"
    elif hi < min_drop:
        verdict = "no compression"
    else:
        verdict = "undetermined"
    return {
        "peak": int(mean.argmax()),
        "I_XT_peak": float(at_peak.mean()),
        "I_XT_final": float(xt[:, -1].mean()),
        "I_XT_drop": float(drops.mean()),
        "I_XT_drop_lo": float(lo),
        "I_XT_drop_hi": float(hi),
        "I_TY_gain": float(ty[:, -1].mean() - ty[:, 0].mean()),
        "verdict": verdict,
    }
