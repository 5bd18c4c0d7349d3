"""Files: their names, atomic writes, and reading them back without surprises.

Every file infoflow writes goes through :func:`write_atomic` (write beside, fsync, rename), so
a reader, or a job killed at any instant (SIGKILL included), sees the old file or the new one,
never a torn one. Every reader here says what is wrong with a file in one line instead of
raising a library's error.

Job directory (Hydra's output dir of a job)
    ``mi.parquet``     the job's rows, rewritten after every evaluation
    ``status.json``    ``{"status", "error", "evals_done", "evals_total", "run_id",
                       "config_hash"}``; status is ``running`` | ``completed`` | ``failed`` |
                       ``interrupted``
    ``checkpoint.pt``  the count of evaluations whose rows the table holds and, when training
                       runs in the job itself, the full training state; once the job is
                       completed, also every row (to restore a damaged table)
Sweep directory
    ``sweep.json``     every job the sweep launches (written before the first one starts)
    ``results.parquet``, ``jobs.parquet``   the merged rows and one row per launched job
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

log = logging.getLogger(__name__)

JOB_TABLE = "mi.parquet"
STATUS_FILE = "status.json"
CHECKPOINT = "checkpoint.pt"
SWEEP_TABLE = "results.parquet"
JOBS_TABLE = "jobs.parquet"
MANIFEST = "sweep.json"
#: columns every infoflow table has; a Parquet file without them is foreign
REQUIRED = ("run_id", "epoch", "layer", "I_XT", "I_TY")


# ---------------------------------------------------------------------------------------------
# writing


def write_atomic(path: str | os.PathLike, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp_path)`` on a file beside ``path``, fsync it, then rename it over ``path``.

    ``os.replace`` is atomic within a file system. The temporary file gets mode 0o666 less the
    umask, like any file the user writes (``mkstemp``'s 0o600 would hide results from a group
    sharing a cluster project directory). One left by a kill is named
    ``.<name>.<pid>.<random>.tmp`` and ignored by every reader.
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


def write_parquet(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write ``df`` as Parquet, atomically; object columns mixing types (one job's None,
    another's str) are written as strings."""
    try:
        write_atomic(path, lambda tmp: df.to_parquet(tmp, index=False))
        return
    except (TypeError, ValueError) as err:  # pyarrow's ArrowInvalid/ArrowTypeError subclass these
        log.debug("mixed column types (%s): writing them as strings", err)
    df = df.copy()
    for col in [c for c in df.columns if pd.api.types.is_object_dtype(df[c])]:
        df[col] = df[col].map(lambda v: v if v is None or isinstance(v, str) else str(v))
    write_atomic(path, lambda tmp: df.to_parquet(tmp, index=False))


def write_json(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` as JSON, atomically."""
    text = json.dumps(obj, indent=1, default=str) + "\n"
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path``, atomically."""
    import torch

    write_atomic(path, lambda tmp: torch.save(obj, tmp))


# ---------------------------------------------------------------------------------------------
# reading


def load_json(path: str | os.PathLike) -> tuple[Any | None, str | None]:
    """``(content, None)``, or ``(None, reason)`` when absent (reason None) or unreadable."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8")), None
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as err:
        return None, f"{Path(path).name} unreadable ({type(err).__name__}: {err})"


def load_torch(path: str | os.PathLike) -> Any | None:
    """A file :func:`save_torch` wrote, or None if it is absent or unreadable (with a warning)."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        return None
    except Exception as err:  # a foreign or damaged file: that part starts over, say so
        log.warning("ignoring unreadable %s (%s: %s)", path, type(err).__name__, err)
        return None


def read_table(path: str | os.PathLike) -> tuple[pd.DataFrame | None, str | None]:
    """One infoflow table: ``(table, None)``, or ``(None, reason)`` with the reason in one line
    (``missing``, not a Parquet file, truncated, not an infoflow table). Never raises."""
    path = Path(path)
    try:
        df = pd.read_parquet(path)
    except FileNotFoundError:
        return None, "missing"
    except Exception as err:  # pyarrow raises several types for torn or foreign files
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        first = first.replace(f" '{path}'", "").replace(f" {path}", "")  # named beside it
        size = path.stat().st_size if path.exists() else 0
        return None, (
            f"not a readable Parquet file ({size} bytes; {type(err).__name__}: {first[:300]})"
        )
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        return None, f"not an infoflow table (no column {', '.join(missing)})"
    return df, None


def read_status(job_dir: str | os.PathLike) -> tuple[dict | None, str | None]:
    """A job's ``status.json``, or ``(None, reason)``: reason None when absent."""
    status, err = load_json(Path(job_dir) / STATUS_FILE)
    if status is not None and not isinstance(status, dict):
        return None, f"{STATUS_FILE} unreadable (not a JSON object)"
    return status, err


def read_overrides(job_dir: str | os.PathLike) -> list[str] | None:
    """The job's Hydra overrides (``.hydra/overrides.yaml``), or None."""
    path = Path(job_dir) / ".hydra" / "overrides.yaml"
    try:
        overrides = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    return [str(o) for o in overrides] if isinstance(overrides, list) else None


# ---------------------------------------------------------------------------------------------
# the job directories of a sweep


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


def launched_jobs(
    root: str | os.PathLike, found: list[Path] | None = None
) -> list[tuple[list[str], Path | None]] | None:
    """What the sweep at ``root`` launched, from its ``sweep.json``: each job's overrides with
    its directory (None where it left none), in launch order; None without a ``sweep.json``.

    A job directory belongs to the sweep when its ``.hydra/overrides.yaml`` is a launched job's
    overrides, so that directories an earlier sweep left under the same root are never taken
    for this sweep's jobs. ``found``: :func:`find_job_dirs` of ``root``, when the caller has it.
    """
    root = Path(root)
    manifest, _ = load_json(root / MANIFEST)
    if not isinstance(manifest, dict):
        return None
    launched = [list(map(str, j["overrides"])) for j in manifest.get("jobs", [])]
    found = find_job_dirs(root) if found is None else found
    by_overrides = {tuple(read_overrides(d) or ()): d for d in found}
    return [(o, by_overrides.get(tuple(o))) for o in launched]


# ---------------------------------------------------------------------------------------------
# identities


def config_hash(obj: Any) -> str:
    """SHA-256 of the canonical JSON of ``obj`` (sorted keys), as hex."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def code_version() -> str:
    """A hash of every source file of the package, with the torch and NumPy versions.

    The training cache and the shared estimates are keyed by it: any edit to infoflow's code
    makes them start over rather than serve numbers that other code computed. Hashing all the
    sources (about 0.2 MB) costs about a millisecond and cannot leave out a file that matters.
    """
    import numpy as np
    import torch

    here = Path(__file__).parent
    digest = hashlib.sha256(f"{torch.__version__} {np.__version__}".encode())
    for path in sorted(here.rglob("*.py")):
        digest.update(path.relative_to(here).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def flatten_config(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Every scalar leaf of a (plain) config as ``{"dotted.key": value}``.

    Keys starting with ``_`` (``_target_``, ``_partial_``) are left out; lists become their
    string form so that a column holds one type.
    """
    flat: dict[str, Any] = {}
    for key, value in cfg.items():
        if str(key).startswith("_"):
            continue
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, prefix=f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = str(list(value))
        else:
            flat[name] = value
    return flat
