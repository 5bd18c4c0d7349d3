"""Sweeps on Slurm: infoflow's launcher's units as Slurm jobs, and the check before submitting.

**Units as Slurm jobs** (``hydra/launcher=infoflow hydra.launcher.executor=slurm``):
:func:`run_units` submits each unit of the launcher's plan (a stack of seeds, or the stacks
that share a training key) as one task of a Slurm job array through submitit, waits for them
and hands each unit's result (or why it has none) to the launcher. A unit runs in its Slurm job
exactly as in a local worker (:func:`infoflow.sweep.launcher.run_unit`): its jobs' directories,
statuses, tables and logs, stacked seeds and shared evaluation passes. A unit stopped by a time
limit or a preemption (submitit's SIGUSR2) writes its jobs' files and statuses, is requeued
(``hydra.launcher.max_num_timeout`` times) and resumes its jobs; one cancelled (``scancel``)
writes them and ends. A SIGINT or SIGTERM to the launching process cancels the units still
running, which then write theirs.

**The check.** Without it, a sweep sent to a Slurm that is down, or to a partition that does not
exist, stops inside submitit with a long traceback whose last line is sbatch's message. It runs
in the launching process (``on_multirun_start``, before any job is submitted) for
``hydra/launcher=submitit_slurm`` and infoflow's launcher with ``executor=slurm``, asks
``sinfo`` for the partitions, and stops the sweep with one line naming what is wrong; no job
directory is created, so no job can be taken for completed.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

#: seconds ``sinfo`` may take; a controller that is down makes it retry for about 10 s
SINFO_TIMEOUT = 60.0


def partitions(timeout: float = SINFO_TIMEOUT) -> tuple[dict[str, str], str | None]:
    """Slurm's partitions as ``{name: availability}`` and the default one, from ``sinfo``.

    Raises
    ------
    RuntimeError
        When ``sinfo`` is missing, fails (controller down, no configuration, munge not
        running) or does not answer within ``timeout`` seconds; the message says which and
        quotes Slurm's own error.
    """
    if shutil.which("sinfo") is None:
        raise RuntimeError(
            "hydra/launcher=submitit_slurm needs Slurm's commands, and `sinfo` is not on PATH "
            "(run the sweep on a machine that can submit Slurm jobs)"
        )
    cmd = ["sinfo", "--noheader", "--format=%P|%a"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"Slurm did not answer `sinfo` within {timeout:g} s") from None
    if proc.returncode != 0:
        said = " ".join(proc.stderr.split()) or f"exit status {proc.returncode}"
        raise RuntimeError(f"Slurm is not answering (`sinfo` failed: {said})")
    found, default = {}, None
    for line in proc.stdout.splitlines():
        name, _, avail = line.strip().partition("|")
        if not name:
            continue
        if name.endswith("*"):
            name = default = name[:-1]
        found[name] = avail
    return found, default


def slurm_problem(partition: str | None, timeout: float = SINFO_TIMEOUT) -> str | None:
    """Why a sweep cannot be submitted to ``partition`` (None: the cluster's default), or None.

    A partition that exists but is not ``up`` is only logged as a warning: Slurm queues the
    jobs and runs them when an administrator brings it up.
    """
    try:
        found, default = partitions(timeout)
    except RuntimeError as err:
        return str(err)
    listed = ", ".join(found) or "none"
    if partition is None or str(partition) == "":
        if default is None:
            return (
                "hydra.launcher.partition is not set and this Slurm cluster has no default "
                f"partition (partitions: {listed})"
            )
        wanted = [default]
    else:
        wanted = str(partition).split(",")  # Slurm takes a list: the first one free runs it
        missing = [p for p in wanted if p not in found]
        if missing:
            return (
                f"hydra.launcher.partition={partition}: no partition {', '.join(missing)} on "
                f"this Slurm cluster (partitions: {listed})"
            )
    for name in wanted:
        if found[name] != "up":
            log.warning(
                "Slurm partition %s is %s: the jobs wait in the queue until it is up",
                name,
                found[name],
            )
    return None


class SlurmCheck(Callback):
    """Stop a Slurm sweep (``submitit_slurm``, or infoflow's launcher with ``executor=slurm``)
    before it submits anything if Slurm cannot take it."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        target = str(OmegaConf.select(config, "hydra.launcher._target_") or "")
        ours = target.startswith("hydra_plugins.infoflow_launcher.")
        if ours and OmegaConf.select(config, "hydra.launcher.executor") != "slurm":
            return
        if not ours and not target.endswith(".SlurmLauncher"):
            return
        problem = slurm_problem(OmegaConf.select(config, "hydra.launcher.partition"))
        if problem is not None:
            sys.exit(f"infoflow: error: {problem}")


# ---------------------------------------------------------------------------------------------
# units as Slurm jobs

#: seconds between two looks at the units' Slurm jobs
POLL_S = 1.0
#: seconds cancelled units have to write their jobs' statuses before the launcher stops
GRACE_S = 60.0


class SlurmUnit:
    """One unit as the callable of a Slurm job (submitit pickles it with cloudpickle).

    ``run(*args, resume=...)`` runs the unit (:func:`infoflow.sweep.launcher.run_unit`).
    submitit's SIGUSR2 (a time limit or a preemption ahead) becomes a SIGTERM to the unit,
    whose jobs write their rows and statuses; then submitit requeues the job with
    :meth:`checkpoint`, which resumes the unit's jobs from their files.
    """

    def __init__(self, run: Callable[..., Any], args: tuple, resume: bool = False) -> None:
        self.run, self.args, self.resume = run, args, resume

    def __call__(self) -> Any:
        from infoflow.sweep import job as jobs

        jobs.ONE_SIGNAL = True  # Slurm signals every process of the job, srun passes it on
        requeue: list[int] = []
        submitits = signal.getsignal(signal.SIGUSR2)
        if callable(submitits):

            def stop_for_requeue(signum: int, frame: Any) -> None:
                requeue.append(signum)
                os.kill(os.getpid(), signal.SIGTERM)  # the jobs' way to stop: files, statuses

            signal.signal(signal.SIGUSR2, stop_for_requeue)
        result = self.run(*self.args, resume=self.resume)
        if requeue and callable(submitits):
            submitits(signal.SIGUSR2, None)  # checkpoint(), requeue, exit
        return result

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """What submitit requeues: the same unit, resuming its jobs."""
        import submitit

        return submitit.helpers.DelayedSubmission(SlurmUnit(self.run, self.args, resume=True))


def executor_for(options: Mapping[str, Any], sweep_dir: str) -> Any:
    """A submitit executor for Slurm with ``hydra.launcher``'s Slurm keys; its logs (one
    folder per Slurm job) in ``<sweep dir>/.submitit/``."""
    try:
        import submitit
    except ImportError:
        raise SystemExit(
            "infoflow: error: hydra.launcher.executor=slurm needs submitit: "
            "pip install 'infoflow[submitit]'"
        ) from None
    executor = submitit.AutoExecutor(
        folder=Path(sweep_dir) / ".submitit" / "%j",
        cluster="slurm",
        slurm_max_num_timeout=int(options.get("max_num_timeout", 0)),
    )
    params: dict[str, Any] = {
        "name": "infoflow",
        "timeout_min": int(options.get("timeout_min", 60)),
        "slurm_array_parallelism": int(options.get("array_parallelism", 256)),
    }
    for key in ("gpus_per_node", "cpus_per_task", "mem_gb"):
        if options.get(key) is not None:
            params[key] = int(options[key])
    for key in ("partition", "account", "qos", "constraint"):
        if options.get(key):
            params[f"slurm_{key}"] = str(options[key])
    if options.get("additional_parameters"):
        params["slurm_additional_parameters"] = dict(options["additional_parameters"])
    executor.update_parameters(**params)
    return executor


def run_units(
    tasks: Sequence[tuple[Callable[..., Any], tuple]],
    options: Mapping[str, Any],
    sweep_dir: str,
    on_done: Callable[[int, Any], Any],
) -> None:
    """Submit each task (a unit: ``(run, args)``) as one Slurm job of one array and wait for
    them; ``on_done(i, outcome)`` hears each (:class:`infoflow.sweep.workers.Outcome`: the
    unit's result, or why it has none). A KeyboardInterrupt here (SIGINT, SIGTERM) cancels the
    units still running, waits for them to write their jobs' statuses (at most
    :data:`GRACE_S` seconds) and is raised again."""
    from infoflow.sweep.workers import Outcome

    executor = executor_for(options, sweep_dir)
    with executor.batch():
        submitted = [executor.submit(SlurmUnit(run, args)) for run, args in tasks]
    log.info(
        "submitted %d unit(s) to Slurm: job(s) %s; their logs in %s",
        len(submitted),
        ", ".join(str(j.job_id) for j in submitted),
        Path(sweep_dir) / ".submitit",
    )
    waiting = dict(enumerate(submitted))

    def collect() -> None:
        for i, job in list(waiting.items()):
            if job.done():
                del waiting[i]
                try:
                    outcome = Outcome(value=job.result())
                except Exception as err:  # the job failed, was killed, or timed out for good
                    outcome = Outcome(error=f"Slurm job {job.job_id}: {_last_line(err)}")
                on_done(i, outcome)

    try:
        while waiting:
            collect()
            if waiting:
                time.sleep(POLL_S)
    except KeyboardInterrupt:
        for job in waiting.values():
            job.cancel(check=False)
        deadline = time.monotonic() + GRACE_S
        while waiting and time.monotonic() < deadline:
            time.sleep(POLL_S)
            collect()
        raise


def _last_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__
