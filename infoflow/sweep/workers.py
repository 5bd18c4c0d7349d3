"""Worker processes for a sweep's independent units (``hydra.launcher.n_workers``).

:func:`run_tasks` runs picklable tasks ``fn(*args)`` in at most ``n`` worker processes started
with the ``spawn`` method (a fresh interpreter: torch's threads and CUDA do not survive a
``fork``), each task on the first worker free, workers reused from task to task. It is the
launcher's: a task is one unit of the plan (:func:`infoflow.sweep.launcher.run_unit`). Tasks
and answers go through ``cloudpickle``, as under Hydra's joblib launcher: Hydra's global state
holds OmegaConf's resolvers, which are closures.

What can happen to a task, and what the caller hears (:class:`Outcome`):

- it returns: its value;
- it raises: the traceback, as text (the worker goes on with the next task);
- its worker dies (killed, out of memory, a crash in native code): why, from the exit code;
  a fresh worker takes the tasks that remain;
- the launching process gets SIGINT or SIGTERM: the signal goes on to every busy worker, their
  tasks end as they end on that signal (their jobs write ``interrupted``), no task starts any
  more, and the interrupt is raised again once they have answered (or after
  :data:`GRACE_S` seconds, when the stragglers are killed).

A worker ignores SIGINT and SIGTERM while it waits for a task (the launcher decides), and dies
with the launching process (``PR_SET_PDEATHSIG`` on Linux, a watch on its parent elsewhere):
after a SIGKILL of the sweep no orphan goes on writing into the job directories that a resume
will use.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

try:
    import cloudpickle
except ImportError:  # joblib's copy: joblib comes with scikit-learn
    from joblib.externals import cloudpickle

from infoflow.sweep import job as jobs
from infoflow.sweep.job import SIGNALS, signals_deferred

log = logging.getLogger(__name__)

#: seconds the busy workers have to end their tasks after the launcher passes a signal on
GRACE_S = 120.0

Task = tuple[Callable[..., Any], tuple]


@dataclass
class Outcome:
    """What became of a task: its ``value``, or why it has none (``error``)."""

    value: Any = None
    error: str | None = None  # the task's traceback, or why its worker died


# ---------------------------------------------------------------------------------------------
# the worker's side


def _die_with_parent(parent: int) -> None:
    """End this process when the launching one ends, however it ends."""
    libc = ctypes.util.find_library("c") if sys.platform.startswith("linux") else None
    if libc:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(libc, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before the request: nobody to work for
        os._exit(1)
    if not libc:

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(1.0)
            os._exit(1)

        threading.Thread(target=watch, daemon=True).start()


def _serve(
    conn: multiprocessing.connection.Connection, env: Mapping[str, str], parent: int
) -> None:
    """A worker's life: take a task, run it, send back what became of it; until told to stop."""
    for sig in SIGNALS:  # while waiting; a task catches them for its jobs
        signal.signal(sig, signal.SIG_IGN)
    _die_with_parent(parent)
    os.environ.update(env)
    jobs.ONE_SIGNAL = True
    while True:
        try:
            task = conn.recv_bytes()
        except (EOFError, OSError):
            task = b""
        if not task:
            # what is alive now lives until the exit, which the launcher waits for: freezing
            # it spares the interpreter's last collection a walk over torch's objects (0.6 s)
            gc.freeze()
            return
        try:
            fn, args = pickle.loads(task)
            answer = Outcome(value=fn(*args))
        except BaseException:  # every failure goes back to the launcher
            answer = Outcome(error=traceback.format_exc())
        finally:
            for sig in SIGNALS:
                signal.signal(sig, signal.SIG_IGN)
        try:
            data = cloudpickle.dumps(answer)
        except Exception:  # a value that does not pickle: say so instead
            data = cloudpickle.dumps(Outcome(error=traceback.format_exc()))
        conn.send_bytes(data)


# ---------------------------------------------------------------------------------------------
# the launcher's side


@dataclass(eq=False)
class _Worker:
    process: multiprocessing.process.BaseProcess
    conn: multiprocessing.connection.Connection
    task: int | None = None  # the index of the task it runs


def why_dead(exitcode: int | None) -> str:
    """A dead worker's exit code in words."""
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        hint = " (out of memory?)" if -exitcode == signal.SIGKILL else ""
        return f"its worker process was killed by {name}{hint}"
    return f"its worker process ended with exit code {exitcode}"


def run_tasks(
    tasks: Sequence[Task],
    n: int,
    env: Mapping[str, str],
    on_done: Callable[[int, Outcome], int | None],
) -> None:
    """Run ``tasks`` in at most ``n`` spawned worker processes (``env`` set in each).

    ``on_done(i, outcome)`` hears each task's end, in the order tasks end; a signal number
    returned (a task stopped by SIGINT/SIGTERM) stops the sweep as that signal would: it goes
    on to the busy workers, they are waited for, and :class:`infoflow.sweep.job.Interrupted`
    is raised. A KeyboardInterrupt here (the launcher's own SIGINT/SIGTERM) does the same.
    """
    ctx = multiprocessing.get_context("spawn")
    todo = deque(range(len(tasks)))
    pool: list[_Worker] = []

    def start() -> _Worker:
        ours, theirs = ctx.Pipe()
        process = ctx.Process(target=_serve, args=(theirs, dict(env), os.getpid()), daemon=False)
        process.start()
        theirs.close()
        worker = _Worker(process, ours)
        pool.append(worker)
        return worker

    try:
        while todo or any(w.task is not None for w in pool):
            with signals_deferred():  # a task is handed over whole, or not at all
                _hand_out(tasks, todo, pool, n, start)
            busy = [w for w in pool if w.task is not None]
            multiprocessing.connection.wait(
                [w.conn for w in busy] + [w.process.sentinel for w in busy]
            )
            with signals_deferred():  # an answer is read whole
                for worker in busy:
                    stop = _collect(worker, pool, on_done)
                    if stop is not None:
                        raise jobs.Interrupted(stop)
    except KeyboardInterrupt as err:
        signum = err.signum if isinstance(err, jobs.Interrupted) else signal.SIGINT
        with signals_deferred(reraise=False):
            _stop_busy(pool, signum, on_done)
        raise
    finally:
        _close(pool)


def _hand_out(
    tasks: Sequence[Task],
    todo: deque[int],
    pool: list[_Worker],
    n: int,
    start: Callable[[], _Worker],
) -> None:
    """Give the next tasks to the idle workers, starting workers up to ``n``. A worker found
    dead while idle is replaced; its task goes to the next one."""
    while todo:
        idle = next((w for w in pool if w.task is None), None)
        if idle is None and len(pool) >= n:
            return
        worker = idle or start()
        index = todo.popleft()
        try:
            worker.conn.send_bytes(cloudpickle.dumps(tasks[index]))
            worker.task = index
        except OSError:  # it died while it waited
            todo.appendleft(index)
            pool.remove(worker)
            worker.process.join()
            worker.conn.close()


def _collect(
    worker: _Worker, pool: list[_Worker], on_done: Callable[[int, Outcome], int | None]
) -> int | None:
    """Hand on the worker's answer if it has one, or its death; what ``on_done`` says."""
    index = worker.task
    if index is None:
        return None
    if worker.conn.poll():
        try:
            outcome = pickle.loads(worker.conn.recv_bytes())
        except (EOFError, OSError):
            outcome = None
        if outcome is not None:
            worker.task = None
            return on_done(index, outcome)
    if worker.process.is_alive():
        return None
    worker.process.join()
    pool.remove(worker)
    worker.conn.close()
    return on_done(index, Outcome(error=why_dead(worker.process.exitcode)))


def _stop_busy(
    pool: list[_Worker], signum: int, on_done: Callable[[int, Outcome], int | None]
) -> None:
    """Pass ``signum`` on to the busy workers and wait for their answers (at most
    :data:`GRACE_S` seconds; the stragglers are killed)."""
    busy = [w for w in pool if w.task is not None]
    for worker in busy:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.process.pid, signum)
    deadline = time.monotonic() + GRACE_S
    while busy and time.monotonic() < deadline:
        multiprocessing.connection.wait(
            [w.conn for w in busy] + [w.process.sentinel for w in busy],
            timeout=max(0.0, deadline - time.monotonic()),
        )
        for worker in busy:
            _collect(worker, pool, on_done)
        busy = [w for w in pool if w.task is not None]
    for worker in busy:
        log.error(
            "worker %d did not end its task within %g s of %s: killing it",
            worker.process.pid,
            GRACE_S,
            signal.Signals(signum).name,
        )
        worker.process.kill()


def _close(pool: list[_Worker]) -> None:
    """Tell idle workers to stop and wait for every worker to end."""
    for worker in pool:
        with contextlib.suppress(OSError, ValueError):
            if worker.task is None:
                worker.conn.send_bytes(b"")
    for worker in pool:
        worker.process.join(timeout=30)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join()
        worker.conn.close()
