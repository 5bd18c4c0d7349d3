"""The saturation warning: when most rows of a table sit at their estimator's ceiling."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

# Which config keys move a saturated estimator off its ceiling, per estimator.
REMEDIES = {
    "binning": "fewer bins (estimator.bins) or a wider estimator.bin_width",
    "kde": "more noise (a larger estimator.noise_var, or estimator.noise_scale=neighbour: "
    "noise relative to the layer's nearest-neighbour gaps)",
    "renyi": "a wider kernel (a larger estimator.width)",
    "sliced": "more equal-mass bins per projection (estimator.bins; the ceiling is "
    "log2 min(bins, n_samples), so bins beyond the sample count add nothing)",
    "per_neuron": "fewer bins (estimator.bins)",
}

#: Share of saturated rows above which :func:`saturation_warning` speaks.
WARN_FRACTION = 0.5

#: Estimators whose ceiling is the net's own value, not a resolution: ``exact`` on a quantized
#: net (Lorenzen et al. 2022) counts the codes a layer really takes, so a layer at log2 n_samples
#: tells every sample apart in fact; its rows are left out of the warnings.
EXACT = ("exact",)


def _estimator_names(rows: pd.DataFrame) -> pd.Series:
    """The estimator function of each row (``binning``, ``kde``, ...), or '' when unknown.

    Taken from ``estimator._target_`` when the table has it, else from the ``estimator``
    choice (a preset such as ``kde_0.1`` names its estimator first).
    """
    if "estimator._target_" in rows.columns:
        return rows["estimator._target_"].astype(str).str.rsplit(".", n=1).str[-1]
    if "estimator" in rows.columns:
        choice = rows["estimator"].astype(str)
        return choice.map(lambda c: next((k for k in REMEDIES if c.startswith(k)), c))
    return pd.Series("", index=rows.index)


def saturated_rows(rows: pd.DataFrame) -> pd.Series | None:
    """Boolean per row: I(X;T) at its ceiling; None when the table cannot tell.

    The ``saturated`` column where estimators wrote it, else ``I_XT >= 0.99 log2 n_samples``.
    """
    if "saturated" in rows.columns and rows["saturated"].notna().any():
        return rows["saturated"].astype("boolean").fillna(False).astype(bool)
    if {"I_XT", "n_samples"} <= set(rows.columns):
        return rows["I_XT"] >= 0.99 * np.log2(rows["n_samples"].astype(float))
    return None


def saturation_warning(rows: pd.DataFrame, min_fraction: float = WARN_FRACTION) -> str | None:
    """A warning when more than ``min_fraction`` of the rows have I(X;T) at its ceiling.

    Parameters
    ----------
    rows : DataFrame
        Rows of a job's or a sweep's table (one per evaluation and layer), with ``saturated``
        (or ``I_XT`` and ``n_samples``) and, in a sweep, ``estimator`` /
        ``estimator._target_``.
    min_fraction : float, default 0.5
        The share of saturated rows above which to warn.

    Returns
    -------
    str or None
        One paragraph naming the share of saturated rows, each estimator with saturated rows
        (with its own share) and the keys that would move it; None when the share is at most
        ``min_fraction`` or the table has no such column. Rows of ``exact``
        (:data:`EXACT`) are not counted: their ceiling is the net's true value.
    """
    rows = estimated(rows)
    sat = saturated_rows(rows)
    if sat is None or len(sat) == 0:
        return None
    frac = float(sat.mean())
    if not frac > min_fraction:
        return None
    names = _estimator_names(rows)
    parts = []
    for name in sorted(names[sat].unique()):
        share = float(sat[names == name].mean())
        label = name or "the estimator"
        remedy = REMEDIES.get(name, "a coarser resolution")
        parts.append(f"{label} ({share:.0%} of its rows): {remedy}")
    ceilings = ""
    if "n_samples" in rows.columns and rows["n_samples"].notna().any():
        n = sorted(rows.loc[sat, "n_samples"].dropna().unique())
        ceilings = " (log2 n_samples = " + ", ".join(f"{math.log2(v):.2f}" for v in n) + " bits)"
    return (
        f"{frac:.0%} of the rows ({int(sat.sum())} of {len(sat)}) have I(X;T) within 1% of its "
        f"ceiling{ceilings}: there every evaluation sample is told apart, so I(X;T) measures "
        "the estimator's resolution and the sample count, not the layer (Saxe et al. 2018). "
        "To see compression, use " + "; ".join(parts) + ". Or estimator=renyi / "
        "estimator=sliced, whose defaults stay below their ceilings on wide layers "
        "(docs/estimators.md)."
    )


def saturation_summary(rows: pd.DataFrame, min_fraction: float = WARN_FRACTION) -> str | None:
    """The short form of :func:`saturation_warning`, for the end of a sweep: one sentence with
    the share of saturated rows per estimator and what to try; None when there is nothing to
    say. Each job's log holds the long form."""
    rows = estimated(rows)
    sat = saturated_rows(rows)
    if sat is None or len(sat) == 0 or not float(sat.mean()) > min_fraction:
        return None
    names = _estimator_names(rows)
    shares = ", ".join(
        f"{name or 'the estimator'} {float(sat[names == name].mean()):.0%}"
        for name in sorted(names[sat].unique())
    )
    return (
        f"{float(sat.mean()):.0%} of the rows have I(X;T) at its ceiling log2 n_samples "
        f"({shares}), where it measures the estimator's resolution, not the layer: try "
        "estimator=renyi or estimator=sliced, or a coarser resolution (each job's log says "
        "which keys; docs/estimators.md)"
    )


def estimated(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows of estimators with a resolution: all but those of :data:`EXACT`."""
    if not len(rows):
        return rows
    return rows[~_estimator_names(rows).isin(EXACT)]
