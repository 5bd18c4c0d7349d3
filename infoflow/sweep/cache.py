"""The training cache: training states at the evaluation points of one training key, shared
by the jobs of a sweep that see the same networks (see :meth:`infoflow.spec.JobSpec.training_key`).

One folder per training key under ``runtime.cache.dir``:

    ``key.json``          the training key (for people; the folder name is its hash)
    ``point_XXXX.pt``     the model's state and training figures at evaluation point XXXX
    ``state.pt``          the full training state at the latest point (to continue training)
    ``lock``              held (``filelock.FileLock``: ``flock`` on POSIX, ``msvcrt.locking``
                          on Windows) by the one job that trains. The others read the points
                          as they appear and take over if the trainer dies (the operating
                          system lets go of the lock with its process).
    ``holder``            the trainer's host and pid while it holds the lock

A job waiting for points logs who it waits for, and gives up with :class:`CacheTimeout` when
no new point appears for ``runtime.cache.wait_s`` seconds (a trainer stopped with SIGSTOP, or
hung, keeps its lock forever).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from infoflow import io
from infoflow.errors import UserError

log = logging.getLogger(__name__)


class CacheTimeout(UserError, TimeoutError):
    """No new training point appeared while another process held the training lock."""


class TrainCache:
    """Training states at the evaluation points of one training key.

    Parameters
    ----------
    root : path
        ``runtime.cache.dir``; the key's folder is ``root / hash(key)[:20]``.
    key : mapping
        Everything that determines training (:meth:`infoflow.spec.JobSpec.training_key`).
    wait_s : float
        How long a job waits for another job's next point before it gives up.
    poll_s : float
        How often a waiting job looks for new points.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        key: Mapping[str, Any],
        wait_s: float = 1800.0,
        poll_s: float = 0.2,
    ) -> None:
        self.key = io.config_hash(key)
        self.dir = Path(os.path.expanduser(str(root))) / self.key[:20]
        self.dir.mkdir(parents=True, exist_ok=True)
        if not (self.dir / "key.json").exists():
            io.write_json(dict(key), self.dir / "key.json")
        self.wait_s, self.poll_s = wait_s, poll_s
        self._waiting_since: float | None = None

    def point_path(self, index: int) -> Path:
        return self.dir / f"point_{index:04d}.pt"

    def load_point(self, index: int) -> dict[str, Any] | None:
        """``{"model": state_dict, "stats": {...}}`` at point ``index``, or None."""
        if not self.point_path(index).exists():
            return None
        point = io.load_torch(self.point_path(index))
        if point is not None:
            self._waiting_since = None  # progress
        return point

    def save_point(self, index: int, model_state: Mapping, stats: Mapping, full: Mapping) -> None:
        """Store point ``index`` then the full state to continue from it (in that order)."""
        io.save_torch({"model": dict(model_state), "stats": dict(stats)}, self.point_path(index))
        io.save_torch({"index": index, "train": dict(full)}, self.dir / "state.pt")

    def load_state(self) -> dict[str, Any] | None:
        """``{"index": i, "train": full training state}`` at the latest stored point, or None."""
        return io.load_torch(self.dir / "state.pt")

    @contextlib.contextmanager
    def try_lock(self) -> Iterator[bool]:
        """Try to become the job that trains this key; yields whether it did (never blocks).

        The holder writes its host and pid to ``holder`` (see :meth:`holder`) and removes it
        before letting go; not into the lock file, which filelock 3 truncates at every try and
        removes at release on Windows. A new lock object per try: filelock 4 refuses one
        inherited through ``fork``, and a sweep's jobs may run in forked workers.
        """
        lock = FileLock(self.dir / "lock")
        try:
            lock.acquire(timeout=0)  # one try (timeout=0 means so in every filelock version)
        except Timeout:
            yield False
            return
        try:
            (self.dir / "holder").write_text(f"{socket.gethostname()} pid {os.getpid()}\n")
            yield True
        finally:
            try:
                (self.dir / "holder").unlink(missing_ok=True)
            finally:
                lock.release()

    def wait(self, index: int) -> None:
        """Wait a moment for point ``index``, which another job is training.

        Raises
        ------
        CacheTimeout
            when no point has appeared for ``wait_s`` seconds.
        """
        now = time.monotonic()
        if self._waiting_since is None:
            self._waiting_since = now
            log.info("waiting for point %d of %s, trained by %s", index, self.dir, self.holder())
        elif now - self._waiting_since > self.wait_s:
            raise CacheTimeout(
                f"runtime.cache.wait_s: no new training point for {self.wait_s:g} s while "
                f"{self.holder()} holds the training lock of {self.dir} (point {index} awaited). "
                f"If that process is stopped or hung, end it, or raise runtime.cache.wait_s"
            )
        time.sleep(self.poll_s)

    def holder(self) -> str:
        """Who holds the training lock, as it wrote itself in ``holder`` ("another process"
        while it has not yet written it)."""
        try:
            text = (self.dir / "holder").read_text().strip()
        except OSError:
            text = ""
        return f"'{text}'" if text else "another process"
