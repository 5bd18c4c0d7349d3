"""Read result tables back: one DataFrame from job dirs, sweep dirs, files or globs.

A job directory holds ``mi.parquet`` and ``status.json``; a sweep root holds ``sweep.json`` (the
jobs it launched), ``results.parquet`` (their rows, merged when the sweep ends) and the job
directories ``0/ 1/ ...``. ``load`` accepts any mix of these, and globs, and returns every row
once. A sweep directory means one sweep: of the job directories under a root that holds a
``sweep.json``, only those of the jobs it lists are read (a later sweep into the same folder
replaces the earlier one's jobs, it never adds to them), and its merged table is read only when
none of its job tables is there (a copy of ``results.parquet`` alone). Each job table brings its
job's ``status``; rows are de-duplicated on ``run_id, epoch, layer`` (plus ``step``).

Besides ``load`` this module describes a loaded table for analysis without importing
matplotlib: which columns are config keys (:func:`config_columns`), which of them a sweep varied
(:func:`varying_keys`), and the seed statistics of the last epoch (:func:`final_summary`).
All MI columns are in bits.
"""

from __future__ import annotations

import glob
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from infoflow.io import JOB_TABLE, MANIFEST, REQUIRED, SWEEP_TABLE, launched_jobs, read_status
from infoflow.io import read_table as _read_table

GROUPS = ("model", "data", "optimizer", "estimator")
#: the row key: one row per (job, evaluation, layer)
KEY = ("run_id", "epoch", "step", "layer")
#: measured columns (not config) even when they are constant within a run
_MEASURED = re.compile(
    r"^(run_id|epoch|step|layer|layer_name|units.*|status|saturated|n_samples|"
    r"I_.*|H_.*|train_.*|eval_.*|time.*|.*_lower|.*_upper)$"
)
#: config keys that never define a comparison (the repeats, or where it ran)
_NOT_VARYING = ("seed", "run_id", "device", "probe.batch_size")

Source = str | os.PathLike | Iterable[str | os.PathLike]


class LoadError(ValueError):
    """A path holds no infoflow table, or a file in it cannot be read; the message names it."""


def load(source: Source, *, on_error: Literal["raise", "warn"] = "raise") -> pd.DataFrame:
    """One table of every row under ``source``, with every config column.

    Parameters
    ----------
    source
        A job directory, a sweep directory (or any directory above them, such as
        ``outputs/multirun``), a ``.parquet`` file, a glob such as ``"outputs/multirun/*"``
        (``**`` recurses), or a list of any of these.
    on_error
        ``"raise"`` (default): a corrupt or foreign file raises :class:`LoadError` naming it.
        ``"warn"``: such a file is skipped with a warning and the other tables are returned.

    Returns
    -------
    pandas.DataFrame
        One row per (run, epoch[, step], layer), sorted by ``run_id, epoch, step, layer``;
        columns as in the design's table schema (``I_XT``/``I_TY`` in bits). Columns that only
        some tables have (``model.channels`` for the CNN, estimator extras) are NaN elsewhere.

    Raises
    ------
    LoadError
        A path or glob matches nothing, nothing under it is an infoflow table, or (with
        ``on_error="raise"``) a file is not a readable infoflow Parquet table.

    Notes
    -----
    In a directory every ``mi.parquet`` below it is read, except those of job directories that
    the nearest ``sweep.json`` above them does not list (another, earlier sweep's), and every
    ``results.parquet`` of a sweep none of whose job tables is read. A glob's files other than
    ``mi.parquet`` and ``results.parquet`` (``jobs.parquet``, logs) are skipped; a file named
    on its own is read as given.
    """
    if on_error not in ("raise", "warn"):
        raise LoadError(f"on_error must be 'raise' or 'warn', got {on_error!r}")
    job_files, sweep_files = _find_tables(source)
    frames = []
    for path in [*job_files, *sweep_files]:  # job tables first: they win the de-duplication
        try:
            frames.append(read_table(path))
        except LoadError as err:
            if on_error == "raise":
                raise
            warnings.warn(f"skipping {err}", stacklevel=2)
    if not frames:
        raise LoadError(f"no readable infoflow table under {_describe(source)}")
    df = pd.concat(frames, ignore_index=True, sort=False)
    key = [k for k in KEY if k in df.columns]
    df = df.drop_duplicates(subset=key, keep="first")
    return df.sort_values(key, kind="stable").reset_index(drop=True)


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read one infoflow Parquet table; a job's table gets its job's ``status`` column.

    Raises
    ------
    LoadError
        The file cannot be read as Parquet (corrupt, truncated, another format), or it lacks
        the columns in :data:`infoflow.io.REQUIRED`. The message names the file and what to do.
    """
    path = Path(path)
    df, err = _read_table(path)
    if df is None:
        raise LoadError(
            f"{path}: {err}. Expected a {JOB_TABLE} or {SWEEP_TABLE} written by "
            "`python -m infoflow` (an infoflow table has "
            f"{', '.join(REQUIRED)}, ...); delete or move the file, or re-run its job."
        )
    if path.name == JOB_TABLE and "status" not in df.columns:
        status, _ = read_status(path.parent)
        df["status"] = (status or {}).get("status", "incomplete")
        if df["status"].iloc[0] == "running":
            df["status"] = "incomplete"
    return df


def _find_tables(source: Source) -> tuple[list[Path], list[Path]]:
    """Expand ``source`` into (job tables, sweep tables), each without repeats, in order."""
    items = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    if not items:
        raise LoadError("load() got an empty list of paths")
    paths: list[tuple[Path, bool]] = []  # (path, named by the user rather than a glob)
    for item in items:
        text = os.fspath(item)
        if glob.has_magic(text):
            matches = sorted(glob.glob(os.path.expanduser(text), recursive=True))
            if not matches:
                raise LoadError(f"the glob {text!r} matches no file or directory")
            paths.extend((Path(m), False) for m in matches)
        else:
            path = Path(text).expanduser()
            if not path.exists():
                raise LoadError(f"{path}: no such file or directory")
            paths.append((path, True))
    jobs: dict[Path, None] = {}
    sweeps: dict[Path, None] = {}
    for path, named in paths:
        if path.is_dir():
            jobs.update(dict.fromkeys(_walk(path, JOB_TABLE)))
            sweeps.update(dict.fromkeys(_walk(path, SWEEP_TABLE)))
        elif path.name == SWEEP_TABLE:
            sweeps[path.resolve()] = None
        elif named or path.name == JOB_TABLE:  # a file the user names is read as given
            jobs[path.resolve()] = None
    launched = _Launched()
    jobs = {p: None for p in jobs if launched.lists(p.parent)}
    read_sweeps = {launched.root_of(p.parent) for p in jobs} - {None}
    sweeps = {p: None for p in sweeps if p.parent not in read_sweeps}
    if not jobs and not sweeps:
        raise LoadError(
            f"no {JOB_TABLE} or {SWEEP_TABLE} under {_describe(source)}: give a job directory, "
            "a sweep directory, a Parquet file or a glob of them"
        )
    return list(jobs), list(sweeps)


class _Launched:
    """Which job directories their sweep launched (``sweep.json``), one read per sweep root."""

    def __init__(self) -> None:
        self.dirs: dict[Path, set[Path] | None] = {}

    def root_of(self, job_dir: Path) -> Path | None:
        """The nearest directory above ``job_dir`` that holds a ``sweep.json``, or None."""
        return next((p for p in job_dir.parents if (p / MANIFEST).is_file()), None)

    def lists(self, job_dir: Path) -> bool:
        root = self.root_of(job_dir)
        if root is None:
            return True
        if root not in self.dirs:
            jobs = launched_jobs(root)
            self.dirs[root] = None if jobs is None else {d.resolve() for _, d in jobs if d}
        listed = self.dirs[root]
        return listed is None or job_dir.resolve() in listed


def _walk(root: Path, name: str) -> list[Path]:
    """Every file called ``name`` at or below ``root``, skipping hidden dirs (``.hydra``)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if name in filenames:
            found.append(Path(dirpath, name).resolve())
    return found


def _describe(source: Source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return repr(os.fspath(source))
    return ", ".join(repr(os.fspath(s)) for s in source)


# ----------------------------------------------------------------------------------------------
# describing a loaded table


def config_columns(df: pd.DataFrame) -> list[str]:
    """The config columns of a result table: choice names, ``seed`` and dotted config leaves.

    A column is config when it is constant within every run and is a choice name (``model``,
    ``data``, ``optimizer``, ``estimator``), a dotted key (``estimator.bins``), ``seed``, or a
    non-numeric top-level leaf (``device``). Measured columns (epoch, layer, MI, entropies,
    bounds, losses, accuracies, status, estimator extras such as ``n_samples``) are not config.
    """
    candidates = [
        c
        for c in df.columns
        if not _MEASURED.match(str(c))
        and (
            c in GROUPS
            or c == "seed"
            or "." in str(c)
            or not pd.api.types.is_numeric_dtype(df[c])
            or pd.api.types.is_bool_dtype(df[c])
        )
    ]
    if "run_id" not in df.columns or not candidates:
        return candidates
    per_run = df.groupby("run_id", sort=False)[candidates].nunique(dropna=False)
    return [c for c in candidates if (per_run[c] <= 1).all()]


def varying_keys(df: pd.DataFrame) -> list[str]:
    """The config keys a sweep varied: config columns with more than one value.

    Left out: ``seed`` (the repeats, summarised as mean and interval), ``run_id``, ``device``,
    and a dotted key that follows from its group's choice (``model.hidden`` follows from
    ``model=mlp1,mlp3``; ``estimator.bins`` from ``estimator=binning,kde`` when only binning has
    bins). The choice names come first, then the other keys in column order.
    """
    cols = [c for c in config_columns(df) if c not in _NOT_VARYING]
    varied = [c for c in cols if df[c].nunique(dropna=False) > 1]
    out = []
    for col in varied:
        group = col.split(".")[0]
        if "." in col and group in varied and group != col:
            if (df.groupby(group, dropna=False)[col].nunique(dropna=False) <= 1).all():
                continue  # a function of the choice: model.hidden given model
        out.append(col)
    return sorted(out, key=lambda c: (c not in GROUPS, GROUPS.index(c) if c in GROUPS else 0))


def t_quantile(n: np.ndarray | int, level: float = 0.95) -> np.ndarray:
    """Two-sided Student-t quantile for a ``level`` interval of a mean of ``n`` samples.

    NaN where ``n < 2`` (no interval from one seed).
    """
    # scipy (scikit-learn's dependency) imported here, and its special function rather than
    # scipy.stats, whose import alone costs a report about half a second
    from scipy.special import stdtrit

    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore"):
        q = stdtrit(np.where(n >= 2, n - 1, np.nan), 0.5 + level / 2)
    return np.asarray(q, dtype=float)


def final_summary(
    df: pd.DataFrame,
    values: Sequence[str] = ("I_XT", "I_TY", "eval_acc"),
    by: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Seed statistics at the last epoch: mean, std and number of seeds per model and layer.

    Parameters
    ----------
    df
        A table from :func:`load`.
    values
        Columns to summarise (MI in bits, accuracies as fractions); absent ones are skipped.
    by
        Group keys; default ``varying_keys(df)`` (always with ``model``), then ``layer``,
        ``layer_name``.

    Returns
    -------
    pandas.DataFrame
        One row per group: ``epoch`` (the group's last epoch), and for each value ``<v>_mean``,
        ``<v>_std`` (over seeds, ddof=1; NaN for one seed), ``<v>_ci95`` (half-width of the
        Student-t 95% interval of the mean) and ``n_seeds`` (distinct seeds that reached that
        epoch). A seed that appears in several runs (two sweeps loaded together) is counted
        once, its runs averaged, with a warning that names its configuration and runs
        (:func:`seed_repeats`): counting it twice would narrow the interval.
        A run stopped before the group's last epoch is not counted, rather than mixed in with
        an earlier epoch, and runs whose ``status`` says they did not complete (failed,
        interrupted, incomplete) are left out: their last epoch is not the sweep's.
    """
    if "status" in df.columns:
        df = df[df["status"].isna() | (df["status"] == "completed")]
    if by is None:
        keys = varying_keys(df)
        by = [*(["model"] if "model" not in keys and "model" in df else []), *keys]
        by += [c for c in ("layer", "layer_name") if c in df.columns]
    by = list(by)
    values = [v for v in values if v in df.columns]
    last = df.groupby(by, dropna=False, sort=False)["epoch"].transform("max")
    rows = df[df["epoch"] == last]
    seed = "seed" if "seed" in rows.columns and "seed" not in by else "run_id"
    config = [c for c in by if c not in ("layer", "layer_name")]
    if len(repeats := seed_repeats(rows, config, seed)):
        warnings.warn(repeats_message(repeats, rows, config, seed), stacklevel=2)
    per_seed = rows.groupby([*by, seed], dropna=False, sort=True)
    rows = per_seed[["epoch", *values]].mean().reset_index()  # one row per seed
    grouped = rows.groupby(by, dropna=False, sort=True)
    out = grouped["epoch"].max().to_frame()
    out["n_seeds"] = grouped[seed].nunique()
    q = t_quantile(out["n_seeds"].to_numpy())
    for v in values:
        out[f"{v}_mean"] = grouped[v].mean()
        out[f"{v}_std"] = grouped[v].std(ddof=1)
        out[f"{v}_ci95"] = q * out[f"{v}_std"] / np.sqrt(out["n_seeds"])
    return out.reset_index()


def seed_repeats(df: pd.DataFrame, config: Sequence[str], seed: str = "seed") -> pd.DataFrame:
    """The seeds that appear in more than one run of a configuration.

    Two sweeps loaded together (a glob over ``outputs/multirun/*``) can both hold seed 0 of
    the same configuration under two run ids: counted as two seeds, it would narrow every
    interval over seeds. Returns one row per such (configuration, seed): the ``config`` keys,
    ``seed`` and ``run_ids`` (sorted list); empty when ``seed`` is ``run_id`` (runs are the
    seeds) or absent.
    """
    columns = [*config, seed, "run_ids"]
    if seed == "run_id" or seed not in df.columns or df.empty:
        return pd.DataFrame(columns=columns)
    runs = df.groupby([*config, seed], dropna=False, sort=True)["run_id"].unique()
    runs = runs[runs.map(len) > 1].map(lambda ids: sorted(map(str, ids)))
    return runs.rename("run_ids").reset_index()[columns]


def repeats_message(
    repeats: pd.DataFrame,
    df: pd.DataFrame,
    config: Sequence[str],
    seed: str = "seed",
    limit: int = 3,
) -> str:
    """One sentence naming the configurations and seeds of :func:`seed_repeats` (the first
    ``limit`` of them) and what is done about them. A configuration is named by its ``model``
    and the keys that vary in ``df``: what tells it apart from the others loaded."""
    shown = [c for c in config if c == "model" or df[c].nunique(dropna=False) > 1]
    parts = []
    for row in repeats.head(limit).itertuples(index=False):
        values = dict(zip(repeats.columns, row))
        where = ", ".join(f"{k}={_text(values[k])}" for k in shown) or "the one configuration"
        ids = values["run_ids"]
        parts.append(f"{seed} {_text(values[seed])} of {where} is in {len(ids)} runs "
                     f"({', '.join(ids)})")  # fmt: skip
    more = len(repeats) - limit
    if more > 0:
        parts.append(f"and {more} more (configuration, seed) pair{'s' if more != 1 else ''}")
    return (
        "; ".join(parts) + ": each seed is counted once, its runs averaged epoch by epoch "
        "(two sweeps loaded together? load one sweep, or drop the repeats)"
    )


def _text(value: object) -> str:
    """A config value as a user typed it: 30 rather than 30.0, none for a missing value."""
    if isinstance(value, (float, np.floating)):
        return "none" if np.isnan(value) else f"{value:g}"
    return str(value)
