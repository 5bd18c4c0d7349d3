"""The sweep's Hydra callback: before the first job, the list of jobs; at the end, whatever
happened, the merged tables. (The plan of shared evaluation passes and of seeds trained together
is made by infoflow's launcher, :mod:`infoflow.sweep.launcher`, from the configs it composes.)

Hydra calls ``on_multirun_start``/``on_multirun_end`` in the launching process (the one the user
started) for every launcher: basic, joblib, submitit (local and Slurm), Ray.
"""

from __future__ import annotations

import atexit
import logging
import traceback
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from infoflow import io
from infoflow.sweep.job import UNRECORDED, catch_signals, register_resolvers, signals_deferred
from infoflow.sweep.merge import merge_sweep
from infoflow.sweep.sweeper import BASIC_SWEEPER, SWEEPER, expand

log = logging.getLogger(__name__)


def sweep_jobs(config: DictConfig) -> list[list[str]] | None:
    """Every job's overrides, in launch order, as infoflow's sweeper and Hydra's basic one
    expand them (:func:`infoflow.sweep.sweeper.expand`); None for another sweeper, whose jobs
    cannot be known in advance, or for a sweep those sweepers refuse themselves."""
    if OmegaConf.select(config, "hydra.sweeper._target_") not in (SWEEPER, BASIC_SWEEPER):
        return None
    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    loader = (
        GlobalHydra.instance().config_loader() if GlobalHydra.instance().is_initialized() else None
    )
    try:
        return expand(params, OmegaConf.select(config, "hydra.overrides.task") or [], loader)
    except HydraException:
        return None


class OutputDir(Callback):
    """The run's or the sweep's directory can be made, or the command stops with one line that
    names the key (before Hydra's own attempt, which ends in a traceback). A sweep directory
    belongs to one sweep at a time: a second sweep into it while the first runs is refused
    (a lock the operating system lets go of when the process ends, however it ends)."""

    def __init__(self) -> None:
        self.lock: FileLock | None = None

    def __getstate__(self) -> dict[str, Any]:
        # launchers that pickle the callbacks for their workers (joblib, submitit): the lock
        # stays with the launching process that holds it
        return {**self.__dict__, "lock": None}

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        make_dir(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        path = make_dir(config, "hydra.sweep.dir")
        self.lock = FileLock(path / SWEEP_LOCK)
        try:
            self.lock.acquire(timeout=0)
        except Timeout:
            raise SystemExit(
                f"infoflow: error: another sweep is running in {path}: wait for it to end, or "
                "choose another hydra.sweep.dir=DIR"
            ) from None

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.lock is not None:
            self.lock.release()


#: the lock file of a running sweep, in its directory (hidden: no job dir, no table)
SWEEP_LOCK = ".sweep.lock"


def make_dir(config: DictConfig, key: str) -> Path:
    register_resolvers()
    path = Path(str(OmegaConf.select(config, key))).absolute()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SystemExit(
            f"infoflow: error: {key} must be a folder infoflow can create and write, got "
            f"{str(OmegaConf.select(config, key))!r}: {err.strerror}; choose another with "
            f"{key}=DIR"
        ) from None
    return path


def say_what_it_replaces(sweep_dir: Path, resume: bool) -> None:
    """A sweep into a folder that holds an earlier sweep says so at its start: it continues it
    (``runtime.resume=true``) or replaces it (its jobs' tables and checkpoints, dir by dir)."""
    earlier, _ = io.load_json(sweep_dir / io.MANIFEST)
    if not isinstance(earlier, dict):
        return
    n = len(earlier.get("jobs", []))
    if resume:
        log.info("%s holds an earlier sweep of %d jobs: resuming it", sweep_dir, n)
    else:
        log.warning(
            "%s holds an earlier sweep of %d jobs: this sweep replaces it (each job dir it "
            "reuses loses its table and checkpoint, the others are left out of every table); "
            "add runtime.resume=true to continue it instead",
            sweep_dir,
            n,
        )


def repeated(jobs: list[list[str]]) -> list[str] | None:
    """The overrides of the first job that the list holds twice, or None."""
    seen: set[tuple[str, ...]] = set()
    for job in jobs:
        key = tuple(sorted(job))
        if key in seen:
            return job
        seen.add(key)
    return None


class MergeResults(Callback):
    """List the sweep's jobs in ``sweep.json`` before the first job; merge every job's
    ``mi.parquet`` into ``results.parquet`` + ``jobs.parquet`` at the end.

    The merge runs in ``on_multirun_end``. Hydra skips that hook when the sweep itself raises
    (a killed loky worker, a submitit job that died, Ctrl-C, SIGTERM), exactly when the user
    most needs the summary; so ``on_multirun_start`` also registers an ``atexit`` merge that
    runs if ``on_multirun_end`` did not (Hydra issue 2284), and turns SIGTERM into an exception
    so that Python unwinds to it.
    """

    def __init__(self) -> None:
        self._sweep_dir: Path | None = None
        self._merged = False

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        register_resolvers()
        catch_signals()
        # resolving here draws ${infoflow.unique:} before any launcher copies the config
        self._sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
        self._merged = False
        jobs = sweep_jobs(config)
        if jobs is not None and (twice := repeated(jobs)):
            raise SystemExit(
                f"infoflow: error: the sweep launches the same job twice ({' '.join(twice)}): "
                "a job's directory, table and status are its own; give each value once"
            )
        atexit.register(self._merge_at_exit)
        say_what_it_replaces(self._sweep_dir, OmegaConf.select(config, "runtime.resume") is True)
        if jobs is None:
            log.warning(
                "a sweeper other than infoflow's or Hydra's basic one: the jobs it launches are "
                "not known in advance; the summary lists the job directories it finds"
            )
            return
        io.write_json(
            {"jobs": [{"num": i, "overrides": o} for i, o in enumerate(jobs)]},
            self._sweep_dir / io.MANIFEST,
        )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        # a signal during the merge waits for its end: the tables then match the job dirs,
        # and the merge is marked done only once it is
        with signals_deferred():
            merged = merge_sweep(
                self._sweep_dir or Path(str(config.hydra.sweep.dir)), errors=UNRECORDED
            )
            self._merged = True
        if not merged.ok:
            raise SystemExit(1)  # every job ran and the sweep is merged; the exit code tells

    def _merge_at_exit(self) -> None:
        if self._merged or self._sweep_dir is None or not self._sweep_dir.is_dir():
            return
        log.error(
            "the sweep stopped before its end (interrupted, or a job or the launcher "
            "failed); merging what %s holds",
            self._sweep_dir,
        )
        try:  # the process is ending anyway: a signal now only waits for the merge
            with signals_deferred(reraise=False):
                merge_sweep(self._sweep_dir, errors=UNRECORDED)
                self._merged = True
        except BaseException:  # never mask the sweep's own error with ours
            log.error("merging %s failed:\n%s", self._sweep_dir, traceback.format_exc())
