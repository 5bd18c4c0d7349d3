"""Hydra callbacks: merge a sweep's tables when it ends, whatever launcher ran its jobs.

Hydra calls ``on_multirun_start``/``on_multirun_end`` in the launching process (the one the user
started) for every launcher: basic, joblib, submitit (local and Slurm), Ray. ``on_job_start``
and ``on_job_end`` run where the job runs (a loky worker, a Slurm node).
"""

from __future__ import annotations

import atexit
import logging
import traceback
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from infoflow.results import STATUS_FILE, merge_sweep, read_status, write_json_atomic
from infoflow.sharing import plan_sweep

log = logging.getLogger(__name__)


class MergeResults(Callback):
    """Merge every job's ``mi.parquet`` into ``results.parquet`` + ``jobs.parquet`` at the end.

    The merge runs in ``on_multirun_end``. Hydra skips that hook when the sweep itself raises
    (a job raising under the basic launcher, a killed loky worker, a submitit job that died,
    Ctrl-C), exactly when the user most needs the summary; so ``on_multirun_start`` also
    registers an ``atexit`` merge that runs if ``on_multirun_end`` did not. The summary of
    failed and incomplete jobs is then the last thing the user sees (Hydra issue 2284).
    """

    def __init__(self) -> None:
        self._sweep_dir: Path | None = None
        self._merged = False

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # resolving here draws ${infoflow.unique:} before any launcher copies the config
        self._sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
        self._merged = False
        atexit.register(self._merge_at_exit)
        plan_sweep(config)  # jobs sharing a training key share their evaluation passes

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._merged = True
        merged = merge_sweep(self._sweep_dir or Path(str(config.hydra.sweep.dir)))
        if merged.jobs["status"].isin(["failed", "incomplete"]).any():
            raise SystemExit(1)  # every job ran and the sweep is merged; the exit code tells

    def _merge_at_exit(self) -> None:
        if self._merged or self._sweep_dir is None or not self._sweep_dir.is_dir():
            return
        self._merged = True
        log.error(
            "the sweep stopped before its end (a job or the launcher failed, or it was "
            "interrupted); merging what %s holds",
            self._sweep_dir,
        )
        try:
            merge_sweep(self._sweep_dir)
        except Exception:  # never mask the sweep's own error with ours
            log.error("merging %s failed:\n%s", self._sweep_dir, traceback.format_exc())

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        """A job that raised gets ``status.json`` failed with the error, if the loop did not.

        The training loop writes its own status; this covers errors raised before or outside
        it (building the model, a bad config) so the sweep summary can name them.
        """
        if job_return.status != JobStatus.FAILED:
            return
        job_dir = Path(str(config.hydra.runtime.output_dir))
        status, _ = read_status(job_dir)
        if status is not None and status.get("status") in ("failed", "completed"):
            return
        err = job_return._return_value
        status = {
            "evals_done": 0,
            "evals_total": None,
            "run_id": None,
            **(status or {}),
            "status": "failed",
            "error": f"{type(err).__name__}: {err}",
        }
        try:
            write_json_atomic(status, job_dir / STATUS_FILE)
        except OSError as e:
            log.warning("could not write %s in %s: %s", STATUS_FILE, job_dir, e)
