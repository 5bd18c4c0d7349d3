"""Scoring estimators against a reference on the same activations, and marking failed runs.

On a quantized net (``model.quantize``) ``estimator=exact`` gives the true I(X;T) and I(T;Y) of
every layer over the samples; the other estimators of the same sweep (``-m
estimator=exact,binning,kde_nn,renyi``) see the very same activations, since jobs that differ
only in estimator keys share their evaluation passes. :func:`score` measures each estimator
setting's error against that truth. :func:`failed_to_train` marks the runs Lorenzen et al. (2022)
leave out of their averages. pandas and numpy only (no torch, no matplotlib).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from infoflow.report.load import config_columns, varying_keys
from infoflow.report.verdicts import compression

_NEEDED = ("run_id", "estimator", "epoch", "layer", "I_XT", "I_TY")
#: Lorenzen et al.'s rule for a run that failed to train: training accuracy below this...
MIN_TRAIN_ACC = 0.55
#: ... at this epoch
FAIL_EPOCH = 1000


@dataclass(frozen=True)
class Scores:
    """What :func:`score` returns: three tables, bits throughout.

    Attributes
    ----------
    errors
        One row per estimator setting, run configuration, layer and evaluation: the setting's
        ``I_XT``, ``I_TY``, the reference's ``I_XT_ref``, ``I_TY_ref``, and ``I_XT_err`` =
        ``I_XT - I_XT_ref``, ``I_TY_err`` likewise (positive: the estimator says more).
    layers
        One row per estimator setting, configuration (the varied keys but seed) and layer:
        ``n_runs``, ``n_evals``; ``I_XT_mae``, ``I_TY_mae`` (mean absolute error over runs and
        evaluations); ``I_XT_bias``, ``I_TY_bias`` (mean signed error); ``I_XT_spearman``,
        ``I_TY_spearman`` (Spearman rank correlation between the setting's trajectory and the
        reference's over the evaluations of one run, averaged over runs; NaN where either is
        constant); ``verdict``, ``verdict_ref`` (:func:`infoflow.compression` of each over the
        seeds) and ``verdict_agrees`` (NA where either has no verdict: no completed run).
    summary
        One row per estimator setting and configuration, the layers pooled: ``n_layers``,
        ``I_XT_mae``, ``I_TY_mae``, ``I_XT_spearman``, ``I_TY_spearman`` (means over layers),
        ``verdicts_agree`` (layers whose verdict is the reference's).
    """

    errors: pd.DataFrame
    layers: pd.DataFrame
    summary: pd.DataFrame


def score(df: pd.DataFrame, reference: str = "exact", min_drop: float = 0.1) -> Scores:
    """Each estimator setting's error against a reference estimator on the same activations.

    Parameters
    ----------
    df
        A table from :func:`infoflow.load` holding rows of the reference (``estimator ==
        reference``) and of other estimators for the same runs: a sweep over ``estimator``
        with every other key equal. An estimator *setting* is the ``estimator`` choice with
        the ``estimator.*`` keys the table varies (``binning`` at ``estimator.bins=30`` and at
        100 are two settings).
    reference
        The ``estimator`` choice whose rows are the truth (``exact`` on a quantized net).
    min_drop
        Passed to :func:`infoflow.compression` for the verdicts (bits).

    Returns
    -------
    Scores
        ``errors``, ``layers`` and ``summary`` tables (see :class:`Scores`).

    Raises
    ------
    ValueError
        A needed column is missing, or the table has no rows of ``reference`` or none of
        another estimator.

    Warns
    -----
    UserWarning
        When rows of a setting have no reference row of the same run configuration and
        evaluation (they are left out), or a reference evaluation appears twice (averaged).

    Notes
    -----
    A setting's row is matched with the reference row of the same *run configuration* (every
    config key but ``run_id`` and the ``estimator`` keys: model, data, optimizer, trainer,
    seed, probe, ...), evaluation (``epoch``, ``step``) and ``layer``: on a quantized net with
    shared evaluation passes these are the same activations. The rank correlation asks whether
    a setting orders a layer's evaluations as the truth does (the shape of the trajectory,
    whatever its offset or scale); the verdict asks whether it draws the same conclusion
    about compression from the seeds.
    """
    missing = [c for c in _NEEDED if c not in df.columns]
    if missing:
        raise ValueError(
            f"score() needs the columns {', '.join(_NEEDED)}; the table lacks "
            f"{', '.join(missing)} (read it with infoflow.load)"
        )
    is_ref = df["estimator"] == reference
    if not is_ref.any() or is_ref.all():
        found = ", ".join(map(str, sorted(df["estimator"].dropna().unique())))
        raise ValueError(
            f"score() compares other estimators with the reference estimator={reference}: the "
            f"table needs rows of both, it holds {found or 'no estimator'}"
        )
    config = config_columns(df)
    est_keys = [c for c in config if c == "estimator" or c.startswith("estimator.")]
    est_keys += [c for c in config if c not in est_keys and _estimator_specific(df, c)]
    setting = ["estimator", *(c for c in varying_keys(df) if c.startswith("estimator."))]
    run_key = [c for c in config if c not in est_keys and c != "run_id"]
    # the configurations: the run keys that take more than one value, but the seed
    varied = [c for c in run_key if c != "seed" and df[c].nunique(dropna=False) > 1]
    time = ["epoch", *(["step"] if "step" in df.columns and df["step"].notna().any() else [])]
    layer = [c for c in ("layer", "layer_name") if c in df.columns]
    match = [*run_key, *time, *layer]

    rows = df.copy()
    if "step" in time:
        rows["step"] = rows["step"].fillna(-1)
    ref = rows[is_ref].groupby(match, dropna=False, sort=False)[["I_XT", "I_TY"]]
    if (ref.size() > 1).any():
        warnings.warn(
            f"{int((ref.size() > 1).sum())} reference evaluations appear more than once (two "
            "sweeps loaded together?): their rows are averaged",
            stacklevel=2,
        )
    ref = ref.mean().add_suffix("_ref").reset_index()
    est = rows[~is_ref][[*setting, *match, "I_XT", "I_TY"]]
    errors = est.merge(ref, on=match, how="left")
    unmatched = errors["I_XT_ref"].isna()
    if unmatched.any():
        warnings.warn(
            f"{int(unmatched.sum())} of {len(errors)} rows have no {reference} row of the same "
            "run configuration, evaluation and layer; they are left out of the scores",
            stacklevel=2,
        )
        errors = errors[~unmatched]
    for v in ("I_XT", "I_TY"):
        errors[f"{v}_err"] = errors[v] - errors[f"{v}_ref"]
    errors = errors.sort_values([*setting, *match], kind="stable").reset_index(drop=True)

    layers = _per_layer(errors, setting, varied, run_key, time, layer)
    verdicts = _verdicts(df, is_ref, setting, est_keys, varied, layer, min_drop)
    layers = layers.merge(verdicts, on=[*setting, *varied, *layer], how="left")
    agrees = (layers["verdict"] == layers["verdict_ref"]).astype("boolean")
    known = layers["verdict"].notna() & layers["verdict_ref"].notna()
    layers["verdict_agrees"] = agrees.where(known, pd.NA)  # no verdict (runs not completed)
    summary = _summary(layers, setting, varied)
    return Scores(errors=errors, layers=layers, summary=summary)


def _estimator_specific(df: pd.DataFrame, column: str) -> bool:
    """Whether a column is set for some estimators' rows and empty for all rows of others: an
    estimator's own constant extra (kde's ``precision``), which ``config_columns`` cannot tell
    from a config key, not part of the run configuration."""
    empty = df[column].isna().groupby(df["estimator"]).all()
    return bool(empty.any() and not empty.all())


def _spearman(a: pd.Series, b: pd.Series) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN when either is constant."""
    ra, rb = a.rank().to_numpy(float), b.rank().to_numpy(float)
    if len(ra) < 2 or np.ptp(ra) == 0 or np.ptp(rb) == 0:
        return np.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def _per_layer(
    errors: pd.DataFrame,
    setting: list[str],
    varied: list[str],
    run_key: list[str],
    time: list[str],
    layer: list[str],
) -> pd.DataFrame:
    group = [*setting, *varied, *layer]
    out = []
    for key, g in errors.groupby(group, dropna=False, sort=True):
        runs = g.groupby(run_key, dropna=False, sort=False)
        row = dict(zip(group, key if isinstance(key, tuple) else (key,)))
        row.update(n_runs=runs.ngroups, n_evals=len(g))
        for v in ("I_XT", "I_TY"):
            row[f"{v}_mae"] = float(g[f"{v}_err"].abs().mean())
            row[f"{v}_bias"] = float(g[f"{v}_err"].mean())
            rhos = [_spearman(r[v], r[f"{v}_ref"]) for _, r in runs]
            row[f"{v}_spearman"] = float(np.nanmean(rhos)) if np.isfinite(rhos).any() else np.nan
        out.append(row)
    return pd.DataFrame(out)


def _verdicts(
    df: pd.DataFrame,
    is_ref: pd.Series,
    setting: list[str],
    est_keys: list[str],
    varied: list[str],
    layer: list[str],
    min_drop: float,
) -> pd.DataFrame:
    """The compression verdict of every setting and of the reference, per configuration and
    layer, side by side."""
    keep = [*varied, *layer]
    ref = compression(df[is_ref], min_drop=min_drop)[[*keep, "verdict"]]
    ref = ref.rename(columns={"verdict": "verdict_ref"})
    out = []
    for key, rows in df[~is_ref].groupby(setting, dropna=False, sort=True):
        v = compression(rows, min_drop=min_drop)
        v = v.drop(columns=[c for c in est_keys if c in v.columns])
        for col, val in zip(setting, key if isinstance(key, tuple) else (key,)):
            v[col] = val
        out.append(v[[*setting, *keep, "verdict"]].merge(ref, on=keep, how="left"))
    return pd.concat(out, ignore_index=True)


def _summary(layers: pd.DataFrame, setting: list[str], varied: list[str]) -> pd.DataFrame:
    g = layers.groupby([*setting, *varied], dropna=False, sort=True)
    out = g[["I_XT_mae", "I_TY_mae", "I_XT_spearman", "I_TY_spearman"]].mean()
    out.insert(0, "n_layers", g.size())
    out["verdicts_agree"] = g["verdict_agrees"].sum().astype(int)  # NA counts as no
    return out.reset_index()


def failed_to_train(
    df: pd.DataFrame, epoch: float = FAIL_EPOCH, min_acc: float = MIN_TRAIN_ACC
) -> pd.DataFrame:
    """``df`` with a boolean column ``failed_to_train``: Lorenzen et al.'s (2022) rule.

    A run failed to train when its training accuracy at epoch ``epoch`` (the first evaluation
    at or after it) is below ``min_acc``; Lorenzen et al. leave such runs out of their
    averages (training accuracy below 0.55 after 1,000 epochs, on the Tishby task where
    always answering the majority class gives 0.52). Here they are marked, not dropped: the
    column is constant within a run, so :func:`infoflow.compression` and :func:`score` treat it
    as a config key and give failed runs rows of their own. Runs that end before ``epoch``
    are not marked (False).

    ``train_acc`` of an evaluation is the accuracy over the samples trained on since the
    previous one (with ``trainer.eval=every:5``, the five epochs before), where theirs is over
    the epoch's batches.
    """
    if "train_acc" not in df.columns or "run_id" not in df.columns:
        raise ValueError("failed_to_train() needs the columns run_id and train_acc")
    at = df[df["epoch"] >= epoch].sort_values("epoch", kind="stable")
    acc = at.groupby("run_id", sort=False)["train_acc"].first()  # the first evaluation >= epoch
    failed = (acc < min_acc).reindex(df["run_id"].unique(), fill_value=False)
    out = df.copy()
    out["failed_to_train"] = out["run_id"].map(failed).astype(bool)
    return out
