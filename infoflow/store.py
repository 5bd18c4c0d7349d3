"""What a job keeps on disk besides its table: status, checkpoint, and the shared training cache.

Job directory (Hydra's output dir of the job)
    ``status.json``   ``{"status": "running"|"completed"|"failed", "error", "evals_done",
                      "evals_total", "run_id", "config_hash"}``, rewritten atomically at the start
                      and after every evaluation.
    ``checkpoint.pt`` the rows measured so far and, when training runs in the job itself (no
                      cache), the full training state (model, optimizer, RNG states, batch order).

Training cache (``cache.dir``), one folder per training key
    ``key.json``          the config that determines training (for people; the folder name is
                          its hash).
    ``point_XXXX.pt``     the model's state and training figures at evaluation point XXXX.
    ``state.pt``          the full training state at the latest point (to continue training).
    ``lock``              held (``fcntl.flock``) by the one job that trains; the others read the
                          points as they appear and take over if the trainer dies.

Every file is written beside its destination and renamed over it, so a reader (or a job killed
mid-write) sees the old or the new file, never a torn one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from infoflow.results import STATUS_FILE, read_status, write_atomic, write_json_atomic

try:  # POSIX; elsewhere jobs with the same key may both train (same numbers, first rename wins)
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

log = logging.getLogger(__name__)

STATUS = STATUS_FILE
CHECKPOINT = "checkpoint.pt"
CODE_FILES = ("train.py", "models.py", "data.py", "schedule.py")  # sources that shape training


# ---------------------------------------------------------------------------------------------
# atomic files


def save_json(obj: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write ``obj`` as JSON to ``path`` atomically."""
    write_json_atomic(obj, path)


def load_json(path: str | os.PathLike) -> Any | None:
    """A JSON file's content, or None if it is absent or unreadable (with a warning)."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        log.warning("ignoring unreadable %s (%s: %s)", path, type(err).__name__, err)
        return None


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` atomically."""
    write_atomic(path, lambda tmp: torch.save(obj, tmp))


def load_torch(path: str | os.PathLike) -> Any | None:
    """``torch.load`` a file this module wrote, or None if it is absent or unreadable."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        return None
    except Exception as err:  # a foreign or damaged file: start that part over, say so
        log.warning("ignoring unreadable %s (%s: %s)", path, type(err).__name__, err)
        return None


def config_hash(obj: Any) -> str:
    """SHA-256 of the canonical JSON of ``obj`` (sorted keys), as hex."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def code_version() -> str:
    """A hash of the sources that shape training, with the torch version.

    Any edit to them changes every training key, so a cache never serves states trained by
    other code.
    """
    here = Path(__file__).parent
    digest = hashlib.sha256(torch.__version__.encode())
    for name in CODE_FILES:
        digest.update((here / name).read_bytes())
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# the job directory


class JobDir:
    """A job's ``status.json`` and ``checkpoint.pt``."""

    def __init__(self, path: str | os.PathLike, run_id: str = "", config_hash: str = "") -> None:
        self.path = Path(path)
        self.run_id = run_id
        self.config_hash = config_hash

    def read_status(self) -> dict[str, Any] | None:
        """This job's ``status.json``, or None when absent or unreadable."""
        return read_status(self.path)[0]

    def same_job(self, status: Mapping[str, Any] | None) -> bool:
        """Whether a status (or checkpoint) was written by this job's config."""
        return status is not None and status.get("config_hash") == self.config_hash

    def write_status(
        self, status: str, evals_done: int, evals_total: int, error: str | None = None
    ) -> None:
        save_json(
            {
                "status": status,
                "error": error,
                "evals_done": evals_done,
                "evals_total": evals_total,
                "run_id": self.run_id,
                "config_hash": self.config_hash,
            },
            self.path / STATUS,
        )

    def save_checkpoint(
        self, rows: list[dict], evals_done: int, train: Mapping[str, Any] | None
    ) -> None:
        save_torch(
            {
                "rows": rows,
                "evals_done": evals_done,
                "train": train,
                "run_id": self.run_id,
                "config_hash": self.config_hash,
            },
            self.path / CHECKPOINT,
        )

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The checkpoint if this job's config wrote it, else None (with a warning)."""
        ckpt = load_torch(self.path / CHECKPOINT)
        if ckpt is not None and not self.same_job(ckpt):
            log.warning("%s was written by another config: starting over", self.path / CHECKPOINT)
            return None
        return ckpt


# ---------------------------------------------------------------------------------------------
# the training cache


class TrainCache:
    """Training states at the evaluation points of one training key, shared between jobs.

    Parameters
    ----------
    root : path
        ``cache.dir``; the key's folder is ``root / key[:20]``.
    key_config : mapping
        Everything that determines training (model, data, optimizer, trainer without eval-only
        keys, seed, schedule, device type, code version); hashed to the key.
    poll_s : float
        How often a job waiting for another job's training looks for new points.
    """

    def __init__(
        self, root: str | os.PathLike, key_config: Mapping[str, Any], poll_s: float = 0.2
    ) -> None:
        self.key = config_hash(key_config)
        self.dir = Path(os.path.expanduser(str(root))) / self.key[:20]
        self.dir.mkdir(parents=True, exist_ok=True)
        if not (self.dir / "key.json").exists():
            save_json(dict(key_config), self.dir / "key.json")
        self.poll_s = poll_s

    def point_path(self, index: int) -> Path:
        return self.dir / f"point_{index:04d}.pt"

    def load_point(self, index: int) -> dict[str, Any] | None:
        """``{"model": state_dict, "stats": {...}}`` at point ``index``, or None."""
        if not self.point_path(index).exists():
            return None
        return load_torch(self.point_path(index))

    def save_point(self, index: int, model_state: Mapping, stats: Mapping, full: Mapping) -> None:
        """Store point ``index`` then the full state to continue from it (in that order)."""
        save_torch({"model": dict(model_state), "stats": dict(stats)}, self.point_path(index))
        save_torch({"index": index, "train": dict(full)}, self.dir / "state.pt")

    def load_state(self) -> dict[str, Any] | None:
        """``{"index": i, "train": full training state}`` at the latest stored point, or None."""
        return load_torch(self.dir / "state.pt")

    @contextlib.contextmanager
    def try_lock(self) -> Iterator[bool]:
        """Try to become the job that trains this key; yields whether it did (never blocks)."""
        if fcntl is None:  # pragma: no cover
            yield True
            return
        with open(self.dir / "lock", "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def wait(self) -> None:
        time.sleep(self.poll_s)
