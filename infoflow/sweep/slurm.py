"""Before a sweep goes to Slurm: the controller answers and the partition exists.

Without this check, a sweep sent to a Slurm that is down, or to a partition that does not exist,
stops inside submitit with a long traceback whose last line is sbatch's message. The check runs
in the launching process (``on_multirun_start``, before any job is submitted) for
``hydra/launcher=submitit_slurm`` only, asks ``sinfo`` for the partitions, and stops the sweep
with one line naming what is wrong; no job directory is created, so no job can be taken for
completed.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
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
    """Stop a ``submitit_slurm`` sweep before it submits anything if Slurm cannot take it."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        target = str(OmegaConf.select(config, "hydra.launcher._target_") or "")
        if not target.endswith(".SlurmLauncher"):
            return
        problem = slurm_problem(OmegaConf.select(config, "hydra.launcher.partition"))
        if problem is not None:
            sys.exit(f"infoflow: error: {problem}")
