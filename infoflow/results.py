"""Result tables: flattening a config into columns, atomic writes, merging a sweep.

A job directory holds ``mi.parquet`` (its rows, rewritten atomically after every evaluation),
``status.json`` (``running`` | ``completed`` | ``failed``, written by the training loop) and
Hydra's ``.hydra/``. At the end of a multirun (see :mod:`infoflow.callbacks`), or by hand with
``python -m infoflow.results merge SWEEP_DIR``, :func:`merge_sweep` writes two tables at the
sweep root:

``results.parquet``
    every readable job table, concatenated, plus a ``status`` column (the job's status);
``jobs.parquet``
    one row per job directory: ``job``, ``run_id``, ``overrides``, ``status``, ``error``,
    ``evals_done``, ``evals_total``, ``rows``, ``table_error``.

A job killed without a chance to write its final status (SIGKILL, out of memory, a Slurm time
limit) has no ``status.json`` or one that still says ``running``: it is reported as
``incomplete``. A corrupt or foreign ``mi.parquet`` is skipped with a warning naming the file.

Importing this module also registers the OmegaConf resolver ``${infoflow.unique:}`` used by
``hydra.run.dir`` and ``hydra.sweep.dir`` so that two runs started in the same second get two
directories (Hydra issues 1607, 2925).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

JOB_TABLE = "mi.parquet"
SWEEP_TABLE = "results.parquet"
JOBS_TABLE = "jobs.parquet"
STATUS_FILE = "status.json"
GROUPS = ("model", "data", "optimizer", "estimator")
#: columns every infoflow table has; a Parquet file without them is foreign
REQUIRED = ("run_id", "epoch", "layer", "I_XT", "I_TY")
#: job statuses; ``incomplete`` is the merge's word for a job that died without saying so
STATUSES = ("completed", "failed", "incomplete", "running")
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
UNIQUE_RESOLVER = "infoflow.unique"


def unique_suffix() -> str:
    """Six random hex digits: the tail of a run or sweep directory name.

    Hydra's ``${now:%H-%M-%S}`` alone names two runs started in the same second alike, and
    the second writes into the first's directory. The resolver is registered with
    ``use_cache=True``: the value is drawn once per composed config, and Hydra copies the
    resolver cache into every job's config (also in joblib, submitit and Ray workers), so a
    sweep's jobs all agree on their sweep directory.
    """
    return secrets.token_hex(3)


if not OmegaConf.has_resolver(UNIQUE_RESOLVER):
    OmegaConf.register_new_resolver(UNIQUE_RESOLVER, unique_suffix, use_cache=True)


def flatten_config(cfg: DictConfig | Mapping, prefix: str = "") -> dict[str, Any]:
    """Every scalar leaf of a config as ``{"dotted.key": value}``.

    Keys starting with ``_`` (``_target_``, ``_partial_``) and the ``hydra`` node are left out;
    lists become their string form so that a column holds one type.
    """
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    flat: dict[str, Any] = {}
    for key, value in cfg.items():
        if str(key).startswith("_") or (not prefix and key == "hydra"):
            continue
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, prefix=f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = str(list(value))
        else:
            flat[name] = value
    return flat


# ---------------------------------------------------------------------------------------------
# atomic writes


def write_atomic(path: str | os.PathLike, write: Any) -> None:
    """Call ``write(tmp_path)`` on a file beside ``path``, fsync it, then rename it over ``path``.

    A reader (or a job killed at any instant, SIGKILL included) sees the old file or the new
    one, never a torn one: ``os.replace`` is atomic within a file system. The temporary file is
    created with mode 0o666 less the umask, like any file the user writes (``mkstemp``'s 0o600
    would hide results from a group sharing a cluster project directory). A temporary file
    left by a kill is named ``.<name>.<pid>.<random>.tmp`` and is ignored by the merge.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # the data reaches the disk before the name does (node crashes)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_parquet_atomic(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write ``df`` to ``path`` as Parquet, atomically (see :func:`write_atomic`)."""
    write_atomic(path, lambda tmp: df.to_parquet(tmp, index=False))


def write_json_atomic(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` to ``path`` as JSON, atomically (see :func:`write_atomic`)."""

    def write(tmp: Path) -> None:
        tmp.write_text(json.dumps(obj, indent=1, default=str) + "\n", encoding="utf-8")

    write_atomic(path, write)


class JobTable:
    """A job's table: rows are appended per epoch and the whole file rewritten atomically."""

    def __init__(self, path: str | os.PathLike, meta: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self.meta = dict(meta)
        self.rows: list[dict[str, Any]] = []

    def append(self, rows: Iterable[Mapping[str, Any]]) -> None:
        self.rows.extend({**self.meta, **r} for r in rows)
        write_parquet_atomic(self.frame(), self.path)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)


# ---------------------------------------------------------------------------------------------
# reading one job


def read_job_table(path: str | os.PathLike) -> tuple[pd.DataFrame | None, str | None]:
    """Read one job's table; never raise on a bad file.

    Returns
    -------
    (table, None) when ``path`` is a readable infoflow table, else ``(None, reason)`` where
    the reason says what is wrong in one line (not a Parquet file, truncated, missing columns).
    """
    path = Path(path)
    try:
        df = pd.read_parquet(path)
    except FileNotFoundError:
        return None, "missing"
    except Exception as err:  # pyarrow raises several types for torn or foreign files
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        first = first.replace(f" '{path}'", "").replace(f" {path}", "")  # logged beside it
        size = path.stat().st_size if path.exists() else 0
        return None, (
            f"not a readable Parquet file ({size} bytes; {type(err).__name__}: {first[:300]})"
        )
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        return None, f"not an infoflow table (no column {', '.join(missing)})"
    return df, None


def read_status(job_dir: str | os.PathLike) -> tuple[dict | None, str | None]:
    """A job's ``status.json`` as a dict, or ``(None, reason)`` when absent or unreadable."""
    path = Path(job_dir) / STATUS_FILE
    try:
        status = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as err:
        return None, f"{STATUS_FILE} unreadable ({type(err).__name__}: {err})"
    if not isinstance(status, dict):
        return None, f"{STATUS_FILE} unreadable (not a JSON object)"
    return status, None


def read_overrides(job_dir: str | os.PathLike) -> str | None:
    """The job's Hydra overrides (``.hydra/overrides.yaml``) as one command-line string."""
    path = Path(job_dir) / ".hydra" / "overrides.yaml"
    try:
        overrides = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(overrides, list):
        return None
    return " ".join(str(o) for o in overrides)


def _evals_in(df: pd.DataFrame) -> int:
    """Evaluations in a table: distinct ``epoch`` (and ``step`` when present) values."""
    keys = [c for c in ("epoch", "step") if c in df.columns]
    return len(df[keys].drop_duplicates())


def job_record(job_dir: Path, root: Path) -> tuple[dict[str, Any], pd.DataFrame | None]:
    """One ``jobs.parquet`` row for ``job_dir`` and its table (None if unreadable or absent)."""
    table, table_error = read_job_table(job_dir / JOB_TABLE)
    if table_error == "missing":
        table_error = f"no {JOB_TABLE}"
    status, status_error = read_status(job_dir)
    rel = job_dir.relative_to(root).as_posix()
    rec: dict[str, Any] = {
        "job": rel,
        "run_id": None,
        "overrides": read_overrides(job_dir),
        "status": "incomplete",
        "error": None,
        "evals_done": None,
        "evals_total": None,
        "rows": 0 if table is None else len(table),
        "table_error": table_error,
    }
    if status is None:
        rec["error"] = status_error or (
            f"no {STATUS_FILE}: the job was killed before it could write one "
            "(SIGKILL, out of memory, a scheduler time limit) or never started"
        )
    else:
        rec["run_id"] = status.get("run_id")
        rec["status"] = str(status.get("status") or "incomplete")
        rec["error"] = status.get("error")
        rec["evals_done"] = status.get("evals_done")
        rec["evals_total"] = status.get("evals_total")
        if rec["status"] == "running":
            rec["status"] = "incomplete"
            rec["error"] = (
                f"{STATUS_FILE} still says running: the job was killed (SIGKILL, out of memory, "
                "a scheduler time limit) or is still running"
            )
    if table is not None:
        if rec["run_id"] is None and table["run_id"].nunique() == 1:
            rec["run_id"] = str(table["run_id"].iloc[0])
        if rec["evals_done"] is None:
            rec["evals_done"] = _evals_in(table)
    return rec, table


def _natural_key(path: Path) -> list[tuple[int, Any]]:
    """Sort ``2`` before ``10``: job numbers are directory names."""
    return [(0, int(p)) if p.isdigit() else (1, p) for p in path.parts]


def find_job_dirs(root: str | os.PathLike) -> list[Path]:
    """Every job directory under ``root``: one with ``.hydra/overrides.yaml``, a status or a table.

    ``root`` may be a sweep directory, a single run's directory or anything above them. Hidden
    folders other than ``.hydra`` (submitit's ``.submitit/``, the training cache) are not
    searched: one directory walk, however many checkpoints the sweep holds.
    """
    root = Path(root)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if (
            JOB_TABLE in filenames
            or STATUS_FILE in filenames
            or (".hydra" in dirnames and (here / ".hydra" / "overrides.yaml").is_file())
        ):
            found.append(here)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
    return sorted(found, key=lambda d: _natural_key(d.relative_to(root)))


# ---------------------------------------------------------------------------------------------
# merging a sweep


@dataclass
class MergeResult:
    """What :func:`merge_sweep` wrote: the merged rows (None if none) and the jobs table."""

    results: pd.DataFrame | None
    jobs: pd.DataFrame

    @property
    def ok(self) -> bool:
        """True when every job completed and every table could be read."""
        return bool(len(self.jobs)) and bool(
            (self.jobs["status"] == "completed").all() and self.jobs["table_error"].isna().all()
        )


def _write_parquet_lenient(df: pd.DataFrame, path: Path) -> None:
    """Write ``df``; object columns mixing types (one job's None, another's str) become str."""
    try:
        write_parquet_atomic(df, path)
        return
    except (TypeError, ValueError) as err:  # pyarrow's ArrowInvalid/ArrowTypeError subclass these
        log.debug("mixed column types (%s): writing them as strings", err)
    df = df.copy()
    for col in [c for c in df.columns if pd.api.types.is_object_dtype(df[c])]:
        df[col] = df[col].map(lambda v: v if v is None or isinstance(v, str) else str(v))
    write_parquet_atomic(df, path)


def merge_sweep(sweep_dir: str | os.PathLike, *, summary: bool = True) -> MergeResult:
    """Merge every job under ``sweep_dir`` into ``results.parquet`` and ``jobs.parquet``.

    Parameters
    ----------
    sweep_dir
        A Hydra sweep directory (``outputs/multirun/<date>/<time>-<suffix>``); any directory
        above job directories works.
    summary
        Log a summary at the end: counts per status, then one warning line per failed or
        incomplete job with its overrides and the reason.

    Returns
    -------
    MergeResult
        The merged table (every readable job table plus a ``status`` column; None when no job
        table could be read) and the jobs table (see the module docstring).

    Notes
    -----
    Never raises on a bad job: a corrupt, truncated or foreign ``mi.parquet`` is skipped with a
    warning naming the file, and its job's ``table_error`` says why. Both tables are written
    atomically, so a merge killed halfway leaves the previous ones intact.
    """
    root = Path(sweep_dir)
    records, frames = [], []
    for job_dir in find_job_dirs(root):
        rec, table = job_record(job_dir, root)
        records.append(rec)
        if table is not None:
            frames.append(table.assign(status=rec["status"]))
        elif rec["table_error"] and not rec["table_error"].startswith("no "):
            log.warning("skipping %s: %s", job_dir / JOB_TABLE, rec["table_error"])
    jobs = pd.DataFrame(records, columns=list(JOBS_COLUMNS))
    for col in ("evals_done", "evals_total", "rows"):
        jobs[col] = pd.to_numeric(jobs[col], errors="coerce").astype("Int64")
    merged = None
    if not records:
        log.warning("no job directories under %s: nothing to merge", root)
        return MergeResult(None, jobs)
    _write_parquet_lenient(jobs, root / JOBS_TABLE)
    if frames:
        merged = pd.concat(frames, ignore_index=True)
        _write_parquet_lenient(merged, root / SWEEP_TABLE)
    else:
        log.warning("no readable %s under %s: no %s written", JOB_TABLE, root, SWEEP_TABLE)
    result = MergeResult(merged, jobs)
    if summary:
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
        SWEEP_TABLE,
        JOBS_TABLE,
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
            rec.job,
            rec.overrides or "no overrides",
            why,
            done,
            total,
            rec.rows,
        )


# ---------------------------------------------------------------------------------------------
# command line: python -m infoflow.results merge DIR [DIR ...]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m infoflow.results merge DIR...``: merge sweeps by hand, print the summary.

    Exit status: 0 when every job completed, 1 when some job failed or is incomplete (or a
    table is unreadable), 2 when a directory holds no job.
    """
    parser = argparse.ArgumentParser(
        prog="python -m infoflow.results",
        description="Merge a sweep's job tables into results.parquet and jobs.parquet.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    merge = sub.add_parser("merge", help="merge one or more sweep directories")
    merge.add_argument("dirs", nargs="+", type=Path, help="sweep directories")
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
