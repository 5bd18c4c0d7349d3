"""A job's directory and the one route by which it ends.

:class:`Job` owns a job's directory (``status.json``, ``mi.parquet``, ``checkpoint.pt``, see
:mod:`infoflow.io`). ``with job.running():`` is the only place a job's failure is handled:
a bad config or data set, a diverged loss, SIGINT or SIGTERM, or any other exception ends with
``status.json`` saying so and why, and the rows measured before are kept.

A job *flushes* its table, checkpoint and status together (``runtime.flush_s``): at most every
``flush_s`` seconds, at its end, and when it is interrupted or fails. Between flushes the rows
and the training state of its latest evaluation wait in memory, so a SIGKILL loses at most
``flush_s`` seconds of work and the files on disk always agree: the checkpoint counts the
evaluations whose rows the table holds, the status counts no more.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import signal
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from omegaconf import OmegaConf

from infoflow import io
from infoflow.errors import UserError
from infoflow.estimators.saturation import saturation_warning
from infoflow.training.loop import Recorder

log = logging.getLogger("infoflow")

UNIQUE_RESOLVER = "infoflow.unique"
#: job dir -> why it failed, for jobs of this process whose directory could not hold a status
UNRECORDED: dict[str, str] = {}


def unique_suffix() -> str:
    """Six random hex digits: the tail of a run or sweep directory name.

    Hydra's ``${now:%H-%M-%S}`` alone names two runs started in the same second alike, and
    the second writes into the first's directory (Hydra issues 1607, 2925). The resolver is
    registered with ``use_cache=True``: drawn once per composed config, and Hydra copies the
    resolver cache into every job's config (joblib, submitit and Ray workers too), so a
    sweep's jobs agree on their sweep directory.
    """
    return secrets.token_hex(3)


def register_resolvers() -> None:
    """Register ``${infoflow.unique:}`` (used by ``hydra.run.dir``/``hydra.sweep.dir``)."""
    if not OmegaConf.has_resolver(UNIQUE_RESOLVER):
        OmegaConf.register_new_resolver(UNIQUE_RESOLVER, unique_suffix, use_cache=True)


def new_run_id() -> str:
    """Unique per job across sweeps: time stamp and 40 random bits."""
    return f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:10]}"


# ---------------------------------------------------------------------------------------------
# interrupts


SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


#: True in a sweep's worker process: the first SIGINT or SIGTERM stops its jobs and any later
#: one is ignored (the terminal's Ctrl-C reaches the worker and its launcher, which passes it
#: on; Slurm signals every process of a job), so that a second signal cannot cut short the
#: writing of the statuses the first one asked for
ONE_SIGNAL = False


def _raise_interrupted(signum: int, frame: Any) -> None:
    if ONE_SIGNAL:
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
    raise Interrupted(signum)


def catch_signals() -> None:
    """Turn SIGINT and SIGTERM into :class:`Interrupted` in this process.

    Python ends at SIGTERM (what schedulers send) without unwinding: no status, no merge. Raised
    as an exception, it reaches the job's handler and the sweep's exit-time merge. Only the main
    thread may set handlers; elsewhere this does nothing.
    """
    with contextlib.suppress(ValueError):  # not the main thread
        for sig in SIGNALS:
            signal.signal(sig, _raise_interrupted)


@contextlib.contextmanager
def signals_deferred(reraise: bool = True) -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block ends, then act (``Interrupted``, or nothing with
    ``reraise`` false): for work that is short and must not be left half done, such as the
    sweep's merge. Outside the main thread the block runs as it is."""
    got: list[int] = []
    try:
        previous = {s: signal.signal(s, lambda signum, _: got.append(signum)) for s in SIGNALS}
    except ValueError:  # not the main thread: no handlers to set
        yield
        return
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if got and reraise and previous[got[0]] is not signal.SIG_IGN:
            _raise_interrupted(got[0], None)  # as the handler would have (ONE_SIGNAL)


def interrupt_exit(err: BaseException) -> SystemExit:
    """The exit status of a process stopped by a signal: 128 + its number (130, 143)."""
    signum = err.signum if isinstance(err, Interrupted) else signal.SIGINT
    return SystemExit(128 + int(signum))


# ---------------------------------------------------------------------------------------------
# the job directory


class Job(Recorder):
    """A job's directory: status, table and checkpoint, kept in step.

    Parameters
    ----------
    path
        Hydra's output dir of the job.
    config_hash
        :func:`infoflow.spec.config_hash` of its config (None when the config cannot be read).
    multirun
        In a sweep a failed job ends quietly (the others go on, the sweep's summary names it
        and the sweep exits 1); a single run exits with its message.
    flush_s
        ``runtime.flush_s``: the least time in seconds between two flushes of table,
        checkpoint and status while the job runs; 0 flushes at every evaluation. The job
        also flushes at its end, when interrupted and when it fails.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        config_hash: str | None,
        multirun: bool,
        flush_s: float = 0.0,
    ) -> None:
        super().__init__()
        self.path = Path(path)
        self.config_hash = config_hash
        self.multirun = multirun
        self.flush_s = float(flush_s)
        self.clock = time.monotonic  # when the last flush was (a test may put its own clock)
        self.run_id = new_run_id()
        self.meta: dict[str, Any] = {}  # the columns of every row (:func:`job_meta`)
        self.seed: int | None = None  # on its log records: a stack's jobs log to their own files
        self._table: pa.Table | None = None  # the rows the table file holds, as Arrow
        self._pending: list[dict] = []  # rows recorded since, not yet in the table file
        self._train_state: Mapping | None = None  # at the last evaluation recorded
        self._flushed = 0  # evaluations whose rows the table file holds (what the files count)
        self._last_flush = 0.0  # self.clock() at the end of the last flush
        self.ended = False  # its last status (completed, failed, interrupted) is written

    # -- the one failure route ----------------------------------------------------------------

    @contextlib.contextmanager
    def running(self) -> Iterator[Job]:
        """Run the job's body; whatever stops it is written to ``status.json`` and logged once.

        Interrupts (SIGINT, SIGTERM) mark the job ``interrupted`` and stop the process with
        status 130/143 (a sweep then merges what it has). Errors mark it ``failed``: a single
        run exits 1 with the message, a sweep goes on to its next job.
        """
        catch_signals()
        try:
            yield self
        except KeyboardInterrupt as err:
            self.interrupted(err)
            raise interrupt_exit(err) from None
        except Exception as err:
            self.failed(err)

    def interrupted(self, err: KeyboardInterrupt) -> None:
        """Mark the job ``interrupted`` by SIGINT/SIGTERM (the caller stops the process)."""
        name = err.args[0] if isinstance(err, Interrupted) else "SIGINT"
        self._flush_what_waits()
        msg = (
            f"interrupted by {name} after {self._flushed}/{self.evals_total or '?'} "
            f"evaluations; the rows measured are kept. Continue with runtime.resume=true "
            f"and the same output dir ({self.path})"
        )
        self._end("interrupted", msg)
        log.error("infoflow: %s", msg, extra={"seed": self.seed})

    def failed(self, err: Exception) -> None:
        """Mark the job ``failed`` with ``err``'s message: a single run exits 1 with it, a
        sweep's job ends quietly (the sweep's summary names it)."""
        msg = describe(err)
        self._flush_what_waits()
        wrote = self._end("failed", msg)
        log.error(
            "infoflow: error: %s",
            msg,
            exc_info=not isinstance(err, UserError) and known_cause(err) is None,
            extra={"seed": self.seed},
        )
        if not self.multirun:
            raise SystemExit(f"infoflow: error: {msg}") from None
        if not wrote:  # the sweep's merge reports it
            UNRECORDED[str(self.path.absolute())] = msg

    def _flush_what_waits(self) -> None:
        """Before the job's last status: the rows and state still in memory go to the files
        (a second signal waits for them). A failure here (the disk the job failed on) leaves
        the files as the last flush wrote them; the status then counts only those."""
        if not self._pending and self._flushed == self.evals_done:
            return
        try:
            with signals_deferred(reraise=False):
                self._write_table_and_checkpoint()
        except Exception as err:  # the job's own error is the one to report
            log.debug("%s: the last flush failed: %s", self.path, err)

    def _end(self, status: str, error: str) -> bool:
        self.ended = True
        try:
            self.write_status(status, error)
            return True
        except OSError as err:
            log.error("cannot write %s in %s: %s", io.STATUS_FILE, self.path, err)
            return False

    # -- starting: new, resumed or already done -----------------------------------------------

    def prepare(self, resume: bool) -> bool:
        """Decide how this job starts; True when it is already complete (nothing to do).

        With ``resume`` and a status written by the same config, the job keeps its run id; a
        completed one is done if its table holds every row (else the table is restored from
        the checkpoint, or the job runs again). Anything else in the directory was written by
        another job and is removed, so old rows never pass for this job's.
        """
        status, _ = io.read_status(self.path)
        same = status is not None and status.get("config_hash") == self.config_hash
        if resume and same:
            self.run_id = str(status.get("run_id") or self.run_id)
            if status.get("status") != "completed":
                return False
            if self._table_complete(status.get("evals_total")):
                log.info("resume: %s is completed, skipping", self.path)
                return True
            ckpt = self.load_checkpoint()
            if ckpt and ckpt.get("rows") and ckpt["evals_done"] == status.get("evals_total"):
                self.rows = list(ckpt["rows"])
                self.write_table()
                log.warning(
                    "resume: %s was completed; its table restored from %s", self.path, io.CHECKPOINT
                )
                return True
            log.warning(
                "resume: %s was completed but its table and checkpoint are "
                "incomplete: running it again",
                self.path,
            )
        for name in (io.JOB_TABLE, io.CHECKPOINT):
            if (self.path / name).exists():
                log.info("%s: replacing %s of an earlier job", self.path, name)
                (self.path / name).unlink()
        return False

    def _table_complete(self, evals_total: Any) -> bool:
        table, _ = io.read_table(self.path / io.JOB_TABLE)
        if table is None or set(table["run_id"].astype(str)) != {self.run_id}:
            return False
        keys = [c for c in ("epoch", "step") if c in table.columns]
        return len(table[keys].drop_duplicates()) == evals_total

    def resume_from(self) -> tuple[list[dict], int, Mapping | None]:
        """(rows, evaluations done, training state or None) to continue from.

        The checkpoint says how many evaluations are done and holds the training state at
        the last one; the rows are the table's first ``done`` evaluations (a job killed between
        writing its table and its checkpoint has one evaluation more in the table, measured
        again). A table that lacks them starts the job over.
        """
        ckpt = self.load_checkpoint()
        if not ckpt:
            return [], 0, None
        done = int(ckpt["evals_done"])
        if ckpt.get("rows") is not None:  # a completed job's checkpoint holds every row
            return list(ckpt["rows"]), done, ckpt.get("train")
        table = self._first_evaluations(done)
        if table is None:
            log.warning(
                "resume: %s lacks the rows of the %d evaluations its %s counts: starting over",
                self.path / io.JOB_TABLE,
                done,
                io.CHECKPOINT,
            )
            return [], 0, None
        return table.to_pylist(), done, ckpt.get("train")

    def _first_evaluations(self, done: int) -> pa.Table | None:
        """The rows of this run's first ``done`` evaluations in its table, or None."""
        if done == 0:
            return pa.table({})
        try:  # once, as Arrow: the rows go back with the types they were written with
            whole = pq.read_table(self.path / io.JOB_TABLE)
        except (OSError, pa.ArrowException):
            return None
        names = whole.column_names
        if any(c not in names for c in io.REQUIRED):
            return None
        if set(whole["run_id"].cast(pa.string()).to_pylist()) != {self.run_id}:
            return None
        keys = [c for c in ("epoch", "step") if c in names]
        evaluation = whole.select(keys).to_pandas().groupby(keys, sort=False).ngroup()  # 0, 1..
        if evaluation.max() + 1 < done:
            return None
        return whole.filter(pa.array((evaluation < done).to_numpy()))

    # -- recording ------------------------------------------------------------------------------

    def begin(self, rows: list[dict], done: int, total: int) -> None:
        """The job starts (or resumes after ``done`` evaluations holding ``rows``)."""
        self.rows = [{**self.meta, **r} for r in rows]
        self.evals_done, self.evals_total = done, total
        self._pending, self._flushed = [], done
        if rows:
            self._table = None  # the meta columns may differ from the resumed table's
            self.write_table()
        self.write_status("running")
        self._last_flush = self.clock()

    def record(self, rows: Sequence[Mapping], done: int, train_state: Mapping | None) -> None:
        """An evaluation's rows and the training state after it; the files follow when the
        last flush is ``flush_s`` seconds old (:meth:`flush`).

        Each flush costs what the evaluations since the last one add, not what the job holds
        (a job of 280 evaluations would otherwise spend more time rewriting than estimating):
        the table is kept as an Arrow table that grows by the new rows, and the checkpoint
        holds only the training state and the count of evaluations whose rows the table has.
        A state that waits for a later flush is copied: training goes on in its tensors.
        """
        new = [{**self.meta, **r} for r in rows]
        due = self.clock() - self._last_flush >= self.flush_s
        state = train_state if due else _copy_state(train_state)
        with signals_deferred():  # rows, count and state change together, or not at all
            self.rows.extend(new)
            self._pending.extend(new)
            self.evals_done = done
            self._train_state = state
        if due:
            self.flush()

    def flush(self, status: str = "running") -> None:
        """Table, checkpoint and status, in that order: each file counts at most what the one
        before it holds (a kill between two of them leaves a table ahead of its checkpoint,
        and resume measures those evaluations again). SIGINT and SIGTERM wait for its end:
        the rows written and the rows waiting never overlap."""
        with signals_deferred():
            self._write_table_and_checkpoint()
            self.write_status(status)
        self._last_flush = self.clock()

    def _write_table_and_checkpoint(self, rows: list[dict] | None = None) -> None:
        if self._pending:
            self.write_table(self._pending)
            self._pending = []
        # counted once the table holds them: a signal during the table's write leaves files
        # that count only what the table has
        self._flushed = self.evals_done
        self._write_checkpoint(rows=rows)

    def finish(self) -> None:
        """Completed: the table takes the rows still waiting, the checkpoint every row (a
        damaged table of a completed job is restored from it), then the status says so."""
        with signals_deferred():
            self._write_table_and_checkpoint(rows=self.rows)
            self.write_status("completed")
            self.ended = True
        if note := saturation_warning(pd.DataFrame(self.rows)):
            # in a sweep, to the job's log only: the sweep says it once, short, at its end
            log.warning("%s", note, extra={"seed": self.seed, "detail": self.multirun})

    # -- files --------------------------------------------------------------------------------

    def write_table(self, new: Sequence[Mapping] | None = None) -> None:
        """Write the table: the Arrow table so far grown by ``new`` rows, or (``new`` None, or
        rows whose types Arrow cannot put in one column) rebuilt from every row."""
        if new is not None and self._table is not None:
            try:
                grown = pa.concat_tables(
                    [self._table, pa.Table.from_pylist(list(new))], promote_options="permissive"
                ).combine_chunks()
            except (pa.ArrowException, TypeError, ValueError):
                grown = None
            if grown is not None:
                io.write_atomic(self.path / io.JOB_TABLE, lambda tmp: pq.write_table(grown, tmp))
                self._table = grown
                return
        try:
            table = pa.Table.from_pylist(self.rows)
        except (pa.ArrowException, TypeError, ValueError):  # mixed types: pandas' way, as strings
            io.write_parquet(pd.DataFrame(self.rows), self.path / io.JOB_TABLE)
            self._table = None
            return
        io.write_atomic(self.path / io.JOB_TABLE, lambda tmp: pq.write_table(table, tmp))
        self._table = table

    def _write_checkpoint(self, rows: list[dict] | None) -> None:
        io.save_torch(
            {
                "rows": rows,
                "evals_done": self._flushed,
                "train": self._train_state,
                "run_id": self.run_id,
                "config_hash": self.config_hash,
            },
            self.path / io.CHECKPOINT,
        )

    def write_status(self, status: str, error: str | None = None) -> None:
        io.write_json(
            {
                "status": status,
                "error": error,
                "evals_done": self._flushed,
                "evals_total": self.evals_total,
                "run_id": self.run_id,
                "config_hash": self.config_hash,
            },
            self.path / io.STATUS_FILE,
        )

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The checkpoint if this job's config and run wrote it, else None (with a warning)."""
        ckpt = io.load_torch(self.path / io.CHECKPOINT)
        if ckpt is None:
            return None
        if not isinstance(ckpt, dict) or ckpt.get("config_hash") != self.config_hash:
            log.warning(
                "%s was written by another config: starting over", self.path / io.CHECKPOINT
            )
            return None
        return ckpt


def _copy_state(state: Any) -> Any:
    """A copy of a training state, its tensors cloned on their device (nested dicts, lists and
    tuples; a state dict's ``_metadata`` kept): what the job writes at its next flush, while
    training changes the originals in place. ``copy.deepcopy`` took 30x longer."""
    if isinstance(state, torch.Tensor):
        return state.detach().clone()
    if isinstance(state, dict):
        copied = type(state)((k, _copy_state(v)) for k, v in state.items())
        if hasattr(state, "_metadata"):
            copied._metadata = state._metadata
        return copied
    if isinstance(state, (list, tuple)):
        return type(state)(_copy_state(v) for v in state)
    return state


def mark_lost(path: str | os.PathLike, why: str) -> bool:
    """A job whose process died (a worker killed, out of memory) and left ``running`` in its
    status: mark it ``failed`` with ``why``, keeping its run id and the evaluations its files
    count (``runtime.resume=true`` continues it from them). True when it was so marked."""
    status, _ = io.read_status(path)
    if status is None or status.get("status") != "running":
        return False
    try:
        io.write_json({**status, "status": "failed", "error": why}, Path(path) / io.STATUS_FILE)
    except OSError as err:
        UNRECORDED[str(Path(path).absolute())] = why
        log.error("cannot write %s in %s: %s", io.STATUS_FILE, path, err)
    return True


def describe(err: BaseException) -> str:
    """One line for a failure: the message alone when it is ours or its cause is known (a full
    disk, a place it may not write), else with the type."""
    if isinstance(err, UserError):
        return str(err)
    return known_cause(err) or f"{type(err).__name__}: {err}"


#: errno values that mean "the files cannot be written there", and what to say of each
_NO_WRITE = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
}


_WHERE = (
    "free space, or write elsewhere: hydra.sweep.dir=DIR (or hydra.run.dir=DIR) for the "
    "job's files, runtime.cache.dir=DIR for the training cache"
)


def known_cause(err: BaseException) -> str | None:
    """A one-line account of a failure to write files, or None when it is something else.

    Looks along the exception's causes: torch's checkpoint writer reports a full disk as a
    ``RuntimeError`` (``PytorchStreamWriter failed`` / ``unexpected pos``), itself caused by
    the ``OSError`` or by nothing at all.
    """
    chain = []
    while err is not None and len(chain) < 16:
        chain.append(err)
        err = err.__cause__ or err.__context__
    for seen in chain:  # the OSError says most: what and where
        if isinstance(seen, OSError) and seen.errno in _NO_WRITE:
            where = f" ({seen.filename})" if seen.filename else ""
            return f"cannot write the job's files: {_NO_WRITE[seen.errno]}{where}; {_WHERE}"
    for seen in chain:
        if isinstance(seen, RuntimeError) and (
            "unexpected pos" in str(seen) or "PytorchStreamWriter failed" in str(seen)
        ):
            return f"cannot write the job's checkpoint: the disk is most likely full; {_WHERE}"
    return None
