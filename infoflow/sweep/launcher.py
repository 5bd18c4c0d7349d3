"""infoflow's Hydra launcher: it receives every job of a sweep, plans stacks and runs them.

``conf/config.yaml`` makes it the default (``override hydra/launcher: infoflow``); the plugin
class in ``hydra_plugins.infoflow_launcher`` delegates here. It uses Hydra's public API only:
each job's config is composed by the ``HydraContext``'s config loader, as Hydra's basic launcher
does, and each job goes through ``hydra.core.utils.run_job`` (its directory, its ``.hydra/``,
the job callbacks), in this process, one stack after the other.

The plan, computed from the jobs' specs (:class:`infoflow.spec.JobSpec`, one per job, which the
runner then uses as it is):

- jobs whose configs differ only in ``estimator``/``probe`` keys see the same networks: they
  train once through the training cache and share their evaluation passes (the launcher writes
  the plan of :mod:`infoflow.sweep.sharing` before the first job starts);
- jobs whose configs differ only in ``seed`` train together as one *stack*
  (:func:`infoflow.sweep.runner.run_stack`) of at most ``hydra.launcher.max_stack`` seeds
  (larger groups are split), never twice the same seed. Each job keeps its own directory,
  status, table and run id; a seed's numbers do not depend on its stack-mates.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import configure_log, filter_overrides, run_job, setup_globals
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf, open_dict

from infoflow import io
from infoflow.errors import UserError
from infoflow.spec import JobSpec
from infoflow.sweep import runner
from infoflow.sweep.sharing import plan_sweep

log = logging.getLogger(__name__)

#: the most seeds in one stack: each job of a stack nests one ``run_job`` in the previous one's
#: (so that each gets its callbacks around the stack's training), a few frames per seed, and
#: Python's recursion limit must hold them all
MAX_STACK = 128


@dataclass
class LauncherConf:
    """``hydra/launcher: infoflow``; its keys are the launcher's options."""

    _target_: str = "hydra_plugins.infoflow_launcher.infoflow_launcher.InfoflowLauncher"
    # the most seeds trained as one stack (memory); larger seed groups are split
    max_stack: int = 32


#: the options of ``hydra.launcher`` besides ``_target_``, with their defaults
OPTIONS = {f.name: f.default for f in dataclasses.fields(LauncherConf) if f.name != "_target_"}


class LauncherError(UserError, ValueError):
    """A launcher option breaks a rule; the message names the key, the rule and the value."""


def check_options(options: dict[str, Any]) -> int:
    """Validate ``hydra.launcher``'s options; return ``max_stack``.

    Raises
    ------
    LauncherError
        for an option the launcher does not know or a ``max_stack`` that is not an integer
        in 1..:data:`MAX_STACK`, naming the key, the rule and the value.
    """
    for key, value in options.items():
        if key not in OPTIONS:
            raise LauncherError(
                f"hydra.launcher.{key} is not an option of infoflow's launcher: its options are "
                f"{', '.join(OPTIONS)}; got hydra.launcher.{key}={value!r}"
            )
    max_stack = options.get("max_stack", OPTIONS["max_stack"])
    if (
        not isinstance(max_stack, int)
        or isinstance(max_stack, bool)
        or not 1 <= max_stack <= MAX_STACK
    ):
        raise LauncherError(
            f"hydra.launcher.max_stack must be an integer between 1 and {MAX_STACK} (the most "
            f"seeds trained as one stack; 1 trains every job alone), got {max_stack!r}"
        )
    return max_stack


# ---------------------------------------------------------------------------------------------
# the plan


@dataclass
class PlannedJob:
    """One job of the sweep: its index, overrides, composed config (with ``hydra``) and spec."""

    idx: int
    overrides: list[str]
    config: DictConfig
    spec: JobSpec | None = None  # None: its config breaks a rule; the job fails alone with it


@dataclass
class Plan:
    """Stacks of jobs in launch order and the number of shared-evaluation plans written."""

    stacks: list[list[PlannedJob]] = field(default_factory=list)
    shared: int = 0


def make_stacks(jobs: Sequence[PlannedJob], max_stack: int) -> list[list[PlannedJob]]:
    """Jobs that differ only in ``seed``, in stacks of at most ``max_stack`` distinct seeds.

    A job whose config is invalid runs alone (and fails alone, with its own message). The stacks
    come in the order of their first job.
    """
    stacks: list[list[PlannedJob]] = []
    open_stacks: dict[str, list[list[PlannedJob]]] = {}
    for job in jobs:
        if job.spec is None:
            stacks.append([job])
            continue
        seed = job.spec.seed
        candidates = open_stacks.setdefault(job.spec.stack_key, [])
        for stack in candidates:
            if len(stack) < max_stack and all(j.spec.seed != seed for j in stack):
                stack.append(job)
                break
        else:  # the same seed twice would wait for its own training lock: another stack
            stack = [job]
            candidates.append(stack)
            stacks.append(stack)
    return stacks


def plan_jobs(jobs: Sequence[PlannedJob], max_stack: int, sweep_dir: str, cwd: str) -> Plan:
    """Make every job's spec, write the shared-evaluation plans, make the stacks."""
    entries = []
    for job in jobs:
        try:
            job.spec = JobSpec.of(job.config)
        except Exception:  # the job meets it again and fails alone with it, in its own dir
            job.spec = None
            continue
        root = job.spec.cache_root(sweep_dir, cwd=cwd)
        entries.append((root, job.spec.training, job.spec.estimate))
    shared = plan_sweep(entries) if len(jobs) > 1 else 0
    return Plan(make_stacks(jobs, max_stack), shared)


# ---------------------------------------------------------------------------------------------
# running


def launch(
    launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
) -> list[Any]:
    """Compose, plan and run the jobs (``Launcher.launch`` of
    :class:`hydra_plugins.infoflow_launcher.infoflow_launcher.InfoflowLauncher`)."""
    setup_globals()
    config, context = launcher.config, launcher.hydra_context
    try:
        max_stack = check_options(launcher.options)
    except LauncherError as err:  # one line, as every bad input; no job has started
        raise SystemExit(f"infoflow: error: {err}") from None
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    sweep_dir = to_absolute_path(str(config.hydra.sweep.dir))
    t0 = time.perf_counter()
    configs = [context.config_loader.load_sweep_config(config, list(o)) for o in job_overrides]
    resume = any(OmegaConf.select(c, "runtime.resume") is True for c in configs)
    numbers = job_numbers(job_overrides, initial_job_idx, sweep_dir if resume else None)
    jobs = []
    for idx, overrides, sweep_config in zip(numbers, job_overrides, configs):
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = idx
            sweep_config.hydra.job.num = idx
        inside(sweep_dir, str(sweep_config.hydra.sweep.subdir))
        jobs.append(PlannedJob(idx, list(overrides), sweep_config))
    try:
        Path(sweep_dir).mkdir(parents=True, exist_ok=True)
        plan = plan_jobs(jobs, max_stack, sweep_dir, str(config.hydra.runtime.cwd))
    except OSError as err:  # the sweep dir or a cache dir: one line, before any job starts
        raise SystemExit(f"infoflow: error: {unwritable(err)}") from None
    log.info(
        "Launching %d jobs in this process: %s; planned in %.2fs",
        len(jobs),
        how_it_runs(plan, max_stack),
        time.perf_counter() - t0,
    )
    returns: dict[int, Any] = {}
    for stack in plan.stacks:
        for job in stack:
            log.info("\t#%d : %s", job.idx, " ".join(filter_overrides(job.overrides)))
        returns.update(zip((j.idx for j in stack), run_nested(launcher, stack)))
        configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    return [returns[j.idx] for j in jobs]


def job_numbers(
    job_overrides: Sequence[Sequence[str]], initial: int, resumed_dir: str | None
) -> list[int]:
    """Each job's number (its directory's name by default): its place in the sweep; or, when
    the sweep resumes into ``resumed_dir``, the number of the directory that holds the same job
    already (the same overrides in any order, ``runtime.*`` aside), so that a sweep resumed with
    its values written in another order finds the jobs it finished."""
    places = list(range(initial, initial + len(job_overrides)))
    if resumed_dir is None:
        return places

    def key(overrides: Sequence[str]) -> tuple[str, ...]:
        return tuple(sorted(o for o in overrides if not o.startswith("runtime.")))

    root = Path(resumed_dir)
    held = {
        key(io.read_overrides(d) or ()): int(d.name)
        for d in (io.find_job_dirs(root) if root.is_dir() else ())
        if d.parent == root and d.name.isdigit()
    }
    reused = {held[key(o)] for o in job_overrides if key(o) in held}
    free = (n for n in itertools.count(initial) if n not in reused)
    return [held[key(o)] if key(o) in held else next(free) for o in job_overrides]


def inside(sweep_dir: str, subdir: str) -> None:
    """A job's directory lies inside the sweep's, where the merge and resume look for it."""
    if not (Path(sweep_dir) / subdir).resolve().is_relative_to(Path(sweep_dir).resolve()):
        raise SystemExit(
            f"infoflow: error: hydra.sweep.subdir must name a folder inside hydra.sweep.dir, "
            f"got {subdir!r}"
        )


def unwritable(err: OSError) -> str:
    """A place the sweep must write and cannot, named with what to change."""
    return (
        f"cannot write {err.filename or 'the sweep directory'}: {err.strerror or err}; choose "
        "a writable hydra.sweep.dir=DIR (and runtime.cache.dir=DIR, or "
        "runtime.cache.enabled=false, when the cache is the place)"
    )


def how_it_runs(plan: Plan, max_stack: int) -> str:
    """How the plan runs the jobs, for the launch line."""
    stacked = [s for s in plan.stacks if len(s) > 1]
    how = "one after another"
    if stacked:
        how = (
            f"{sum(map(len, stacked))} of them as {len(stacked)} stack(s) of seeds trained "
            f"together (hydra.launcher.max_stack={max_stack})"
        )
    if plan.shared:
        how += f", {plan.shared} training config(s) share their evaluation passes"
    return how


def run_nested(launcher: Any, stack: Sequence[PlannedJob]) -> list[Any]:
    """The jobs of a stack, each inside its own ``run_job``, nested: job k's task sets job k
    up (in its directory, with its Hydra config) and enters job k+1's ``run_job``; inside the
    last one the stack trains. So every job gets its directory, its ``.hydra/`` and its job
    callbacks, ``on_job_end`` after the stack's training, as under Hydra's basic launcher. A
    stack of one is one job run as the basic launcher runs it."""
    setups: list[runner.JobSetup] = []
    returns: list[Any] = []

    def enter(k: int) -> None:
        if k == len(stack):
            if setups:
                runner.run_stack(setups)
            return

        def task(cfg: DictConfig) -> None:
            setup = runner.open_job(cfg, HydraConfig.get(), stack[k].spec)
            if setup is not None:
                setups.append(setup)
            enter(k + 1)

        returns.append(
            run_job(
                hydra_context=launcher.hydra_context,
                task_function=task,
                config=stack[k].config,
                job_dir_key="hydra.sweep.dir",
                job_subdir_key="hydra.sweep.subdir",
            )
        )

    enter(0)
    return returns[::-1]  # the innermost job returned first
