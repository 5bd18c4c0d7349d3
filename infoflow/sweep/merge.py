"""Merging a sweep: every launched job's rows and status in two tables at the sweep root.

At the end of a multirun (see :mod:`infoflow.sweep.callbacks`), or by hand with
``python -m infoflow.sweep.merge SWEEP_DIR``, :func:`merge_sweep` writes:

``results.parquet``
    every job's rows, plus a ``status`` column (the job's status);
``jobs.parquet``
    one row per job the sweep launched (listed in ``sweep.json`` before the first started):
    ``job``, ``run_id``, ``overrides``, ``status``, ``error``, ``evals_done``,
    ``evals_total``, ``rows``, ``table_error``.

Statuses: ``completed``, ``failed`` (with the error), ``interrupted`` (SIGINT/SIGTERM),
``incomplete`` (killed without a chance to write its status: SIGKILL, out of memory, a time
limit; or still running) and ``not started``. Only the rows of the job's own run count: rows an
earlier job left in the directory are never merged under this one. A corrupt or foreign
``mi.parquet`` is left out with a warning naming the file.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from infoflow import io
from infoflow.estimators.saturation import saturation_summary

log = logging.getLogger(__name__)

#: job statuses in summary order
STATUSES = ("completed", "failed", "interrupted", "incomplete", "not started")
JOBS_COLUMNS = (
    "job",
    "run_id",
    "overrides",
    "status",
    "error",
    "evals_done",
    "evals_total",
    "rows",
    "table_error",
)
NO_STATUS = (
    f"no {io.STATUS_FILE}: the job was killed before it could write one (SIGKILL, out of "
    "memory, a scheduler time limit) or its directory is not writable"
)


def _evals_in(df: pd.DataFrame) -> int:
    """Evaluations in a table: distinct ``epoch`` (and ``step`` when present) values."""
    keys = [c for c in ("epoch", "step") if c in df.columns]
    return len(df[keys].drop_duplicates())


def job_record(
    job_dir: Path, root: Path, error: str | None = None
) -> tuple[dict[str, Any], pd.DataFrame | None]:
    """One ``jobs.parquet`` row for ``job_dir`` and its rows (None if none can be read).

    ``error``: why the job failed, when its directory could not hold a status.
    """
    table, table_error = io.read_table(job_dir / io.JOB_TABLE)
    if table_error == "missing":
        table_error = None if error else f"no {io.JOB_TABLE}"
    status, status_error = io.read_status(job_dir)
    overrides = io.read_overrides(job_dir)
    status = status or {}
    rec: dict[str, Any] = {
        "job": job_dir.relative_to(root).as_posix(),
        "run_id": status.get("run_id"),
        "overrides": None if overrides is None else " ".join(overrides),
        "status": str(status.get("status") or ("failed" if error else "incomplete")),
        "error": status.get("error") or error or status_error or (None if status else NO_STATUS),
        "evals_done": status.get("evals_done"),
        "evals_total": status.get("evals_total"),
        "rows": 0,
        "table_error": table_error,
    }
    if rec["status"] == "running" and error:  # it failed, and could not say so in its dir
        rec["status"], rec["error"] = "failed", error
    elif rec["status"] == "running":
        rec["status"] = "incomplete"
        rec["error"] = (
            f"{io.STATUS_FILE} still says running: the job was killed (SIGKILL, out of memory, "
            "a scheduler time limit) or is still running"
        )
    if table is not None:
        if rec["run_id"] is None and table["run_id"].nunique() == 1:
            rec["run_id"] = str(table["run_id"].iloc[0])
        own = table["run_id"].astype(str) == str(rec["run_id"])
        if not own.all():
            others = sorted(set(table.loc[~own, "run_id"].astype(str)))
            rec["table_error"] = (
                f"{int((~own).sum())} rows of another run ({', '.join(others)}) left out"
            )
            table = table[own] if own.any() else None
    if table is not None:
        rec["rows"] = len(table)
        if rec["evals_done"] is None:
            rec["evals_done"] = _evals_in(table)
    return rec, table


def not_started(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The ``jobs.parquet`` row of a launched job that left no directory."""
    return {
        **dict.fromkeys(JOBS_COLUMNS),
        "job": None,
        "overrides": " ".join(entry["overrides"]),
        "status": "not started",
        "error": "the sweep stopped before this job started (or its directory was removed)",
        "rows": 0,
    }


# ---------------------------------------------------------------------------------------------
# merging a sweep


@dataclass
class MergeResult:
    """What :func:`merge_sweep` wrote: the merged rows (None if none) and the jobs table."""

    results: pd.DataFrame | None
    jobs: pd.DataFrame

    @property
    def ok(self) -> bool:
        """True when every launched job completed and every table could be read."""
        return bool(len(self.jobs)) and bool(
            (self.jobs["status"] == "completed").all() and self.jobs["table_error"].isna().all()
        )


def merge_sweep(
    sweep_dir: str | os.PathLike,
    *,
    summary: bool = True,
    errors: Mapping[str, str] | None = None,
) -> MergeResult:
    """Merge the jobs of ``sweep_dir`` into ``results.parquet`` and ``jobs.parquet``.

    Parameters
    ----------
    sweep_dir
        A Hydra sweep directory (``outputs/multirun/<date>/<time>-<suffix>``). With its
        ``sweep.json`` every launched job gets a row, ``not started`` when it left no
        directory, and directories of other sweeps are left out; without one (a sweep of
        another sweeper, or any directory above job directories) the job directories found.
    summary
        Log a summary at the end: counts per status, then one warning line per job that did
        not complete, with its overrides and the reason.
    errors
        Job dir (absolute) -> why it failed, for jobs whose directory could not hold a status.

    Returns
    -------
    MergeResult
        The merged rows (with a ``status`` column; None when no table could be read) and
        the jobs table. Never raises on a bad job; both tables are written atomically.
    """
    root = Path(sweep_dir)
    errors = errors or {}
    found = io.find_job_dirs(root)
    launched = io.launched_jobs(root, found)
    if launched is None:  # no sweep.json: every job directory found
        dirs: list[Path | None] = list(found)
    else:
        dirs = [d for _, d in launched]
        if foreign := len(found) - sum(d is not None for d in dirs):
            log.info(
                "leaving out %d job dir(s) under %s that this sweep did not launch", foreign, root
            )
    records, frames = [], []
    for i, job_dir in enumerate(dirs):
        if job_dir is None:
            records.append(not_started({"overrides": launched[i][0]}))
            continue
        rec, table = job_record(job_dir, root, errors.get(str(job_dir.absolute())))
        records.append(rec)
        if table is not None:
            frames.append(table.assign(status=rec["status"]))
        if rec["table_error"] and not rec["table_error"].startswith("no "):
            log.warning("%s: %s", job_dir / io.JOB_TABLE, rec["table_error"])
    jobs = pd.DataFrame(records, columns=list(JOBS_COLUMNS))
    for col in ("evals_done", "evals_total", "rows"):
        jobs[col] = pd.to_numeric(jobs[col], errors="coerce").astype("Int64")
    if not records:
        log.warning("no job directories under %s: nothing to merge", root)
        return MergeResult(None, jobs)
    io.write_parquet(jobs, root / io.JOBS_TABLE)
    merged = pd.concat(frames, ignore_index=True) if frames else None
    if merged is not None:
        io.write_parquet(merged, root / io.SWEEP_TABLE)
    else:
        (root / io.SWEEP_TABLE).unlink(missing_ok=True)  # never leave an earlier sweep's rows
        log.warning("no readable %s under %s: no %s written", io.JOB_TABLE, root, io.SWEEP_TABLE)
    result = MergeResult(merged, jobs)
    if summary:  # the saturation note first: the jobs that did not complete are said last
        if merged is not None and (note := saturation_summary(merged)):
            log.warning("sweep %s: %s", root, note)
        log_summary(result, root)
    return result


def log_summary(result: MergeResult, root: Path) -> None:
    """Log counts per status, then one warning per job that did not complete (Hydra #2284)."""
    jobs = result.jobs
    counts = jobs["status"].value_counts()
    order = [s for s in STATUSES if s in counts] + [s for s in counts.index if s not in STATUSES]
    parts = ", ".join(f"{counts[s]} {s}" for s in order)
    rows = 0 if result.results is None else len(result.results)
    log.info(
        "sweep %s: %d jobs (%s); %d rows in %s, one row per job in %s",
        root,
        len(jobs),
        parts,
        rows,
        io.SWEEP_TABLE,
        io.JOBS_TABLE,
    )
    bad = jobs[(jobs["status"] != "completed") | jobs["table_error"].notna()]
    for rec in bad.itertuples(index=False):
        done = "?" if pd.isna(rec.evals_done) else rec.evals_done
        total = "?" if pd.isna(rec.evals_total) else rec.evals_total
        why = rec.error or rec.table_error or "no reason recorded"
        if rec.status == "completed":
            why = f"its table: {rec.table_error}"
        log.warning(
            "%s job %s [%s]: %s (%s/%s evaluations, %d rows kept)",
            str(rec.status).upper(),
            rec.job if isinstance(rec.job, str) else "-",
            rec.overrides or "no overrides",
            why,
            done,
            total,
            rec.rows,
        )


# ---------------------------------------------------------------------------------------------
# command line: python -m infoflow.sweep.merge DIR [DIR ...]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m infoflow.sweep.merge DIR...``: merge sweeps by hand, print the summary.

    Exit status: 0 when every job completed, 1 when some job failed or is incomplete (or a
    table is unreadable), 2 when a directory holds no job.
    """
    parser = argparse.ArgumentParser(
        prog="python -m infoflow.sweep.merge",
        description="Merge a sweep's job tables into results.parquet and jobs.parquet.",
    )
    parser.add_argument("dirs", nargs="+", type=Path, help="sweep directories")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    code = 0
    for d in args.dirs:
        if not d.is_dir():
            log.error("%s is not a directory", d)
            code = 2
            continue
        result = merge_sweep(d)
        if not len(result.jobs):
            code = 2
        elif not result.ok:
            code = max(code, 1)
    return code


if __name__ == "__main__":
    sys.exit(main())
