"""infoflow's Hydra launcher: it receives every job of a sweep, plans groups and runs them.

``conf/config.yaml`` makes it the default (``override hydra/launcher: infoflow``); Hydra finds it
through the ``hydra_plugins.infoflow_launcher`` package shipped with infoflow, and it uses
Hydra's public API only: each job goes through ``hydra.core.utils.run_job`` (its directory, its
``.hydra/``, the job callbacks), in this process, one group after the other.

The plan, computed from the job configs the launcher composes anyway:

- jobs whose configs differ only in ``estimator``/``probe`` keys see the same networks: they
  train once through the training cache and share their evaluation passes (the launcher writes
  the plan of :mod:`infoflow.sharing` before the first job starts);
- jobs whose configs differ only in ``seed`` train together as one stacked model
  (:func:`infoflow.__main__.run_group`): a *stack*, of at most ``hydra.launcher.max_stack``
  seeds (groups split when it is hit), never twice the same seed. Each job keeps its own
  directory, status, table and run id; a seed's numbers do not depend on its stack-mates.

Options (``hydra.launcher.*``): ``max_stack`` (an integer >= 1; 1 trains every job alone).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from infoflow.errors import UserError

log = logging.getLogger(__name__)

#: the options of ``hydra.launcher`` besides ``_target_``, with their defaults
OPTIONS = {"max_stack": 32}


class LauncherError(UserError, ValueError):
    """A launcher option breaks a rule; the message names the key, the rule and the value."""


def check_options(options: dict[str, Any]) -> int:
    """Validate ``hydra.launcher``'s options; return ``max_stack``.

    Raises
    ------
    LauncherError
        for an option the launcher does not know or a ``max_stack`` that is not an integer
        >= 1, naming the key, the rule and the value.
    """
    for key, value in options.items():
        if key not in OPTIONS:
            raise LauncherError(
                f"hydra.launcher.{key} is not an option of infoflow's launcher: its options are "
                f"{', '.join(OPTIONS)}; got hydra.launcher.{key}={value!r}"
            )
    max_stack = options.get("max_stack", OPTIONS["max_stack"])
    if not isinstance(max_stack, int) or isinstance(max_stack, bool) or max_stack < 1:
        raise LauncherError(
            "hydra.launcher.max_stack must be an integer >= 1 (the most seeds trained as one "
            f"stacked model; 1 trains every job alone), got {max_stack!r}"
        )
    return max_stack


def register_launcher() -> None:
    """Make ``hydra/launcher=infoflow`` known to Hydra however infoflow is installed.

    Hydra finds plugins by listing the folders of the ``hydra_plugins`` namespace package; an
    editable install (``pip install -e .``) maps our package through an import hook that such a
    listing does not see, so a run from outside the checkout would not find the default
    launcher. Importing the plugin module stores its config node; ``Plugins.register`` is
    Hydra's public way to add a plugin class by hand (a second registration is a no-op).
    """
    from hydra.core.plugins import Plugins

    from hydra_plugins.infoflow_launcher.infoflow_launcher import InfoflowLauncher

    Plugins.instance().register(InfoflowLauncher)


class ComposeOnce:
    """A sweep's config loader that composes each job's config once.

    Hydra's sweeper composes every job of a batch to check it before launching
    (``Sweeper.validate_batch_is_legal``: "This repeat work the launcher will do"), and this
    launcher composes them again to plan and run them: about 0.14 s a job here, a tenth of the
    README's 8-job digits sweep. The sweeper and the launcher share one ``HydraContext``;
    :meth:`InfoflowLauncher.setup` puts this wrapper in it, so the launcher takes each config
    the check composed (once: it then owns it) and composes only what was not checked.
    """

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.composed: dict[tuple[int, tuple[str, ...]], DictConfig] = {}

    def load_sweep_config(
        self, master_config: DictConfig, sweep_overrides: list[str]
    ) -> DictConfig:
        key = (id(master_config), tuple(sweep_overrides))
        if key not in self.composed:
            self.composed[key] = self.loader.load_sweep_config(master_config, sweep_overrides)
        return self.composed[key]

    def take(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        """The job's config, composed by the check or now; the launcher's own from here on."""
        config = self.composed.pop((id(master_config), tuple(sweep_overrides)), None)
        if config is None:
            config = self.loader.load_sweep_config(master_config, sweep_overrides)
        return config

    def __getattr__(self, name: str) -> Any:  # the rest of the ConfigLoader interface
        return getattr(self.loader, name)


def compose_once(context: Any) -> ComposeOnce:
    """``context.config_loader`` (a ``HydraContext``'s), wrapped in :class:`ComposeOnce` once."""
    if not isinstance(context.config_loader, ComposeOnce):
        context.config_loader = ComposeOnce(context.config_loader)
    return context.config_loader


# ---------------------------------------------------------------------------------------------
# the plan


@dataclass
class PlannedJob:
    """One job of the sweep: its index, overrides and composed config (with ``hydra``)."""

    idx: int
    overrides: list[str]
    config: DictConfig
    task: dict[str, Any] | None = None  # the resolved config without hydra; None: invalid
    error: str | None = None  # why it is not grouped


@dataclass
class Plan:
    """Stacks of jobs in launch order and the number of shared-evaluation plans written."""

    stacks: list[list[PlannedJob]] = field(default_factory=list)
    shared: int = 0


def group_key(task: dict[str, Any]) -> str:
    """What jobs of one stack have in common: the whole config but the seed."""
    from infoflow import io

    return io.config_hash({k: v for k, v in task.items() if k != "seed"})


def make_stacks(jobs: Sequence[PlannedJob], max_stack: int) -> list[list[PlannedJob]]:
    """Jobs that differ only in ``seed``, in stacks of at most ``max_stack`` distinct seeds.

    A job whose config is invalid runs alone (and fails alone, with its own message). The stacks
    come in the order of their first job.
    """
    stacks: list[list[PlannedJob]] = []
    open_stacks: dict[str, list[list[PlannedJob]]] = {}
    for job in jobs:
        if job.task is None:
            stacks.append([job])
            continue
        seed = job.task.get("seed")
        candidates = open_stacks.setdefault(group_key(job.task), [])
        for stack in candidates:
            if len(stack) < max_stack and all(j.task.get("seed") != seed for j in stack):
                stack.append(job)
                break
        else:  # the same seed twice would wait for its own training lock: another stack
            stack = [job]
            candidates.append(stack)
            stacks.append(stack)
    return stacks


def plan_jobs(jobs: Sequence[PlannedJob], max_stack: int, sweep_dir: str, cwd: str) -> Plan:
    """Validate every job's config, write the shared-evaluation plans, make the stacks."""
    from infoflow.config import validate
    from infoflow.job import cache_dir, estimate_spec, training_config
    from infoflow.sharing import plan_sweep

    entries = []
    for job in jobs:
        task = OmegaConf.masked_copy(job.config, [k for k in job.config if k != "hydra"])
        try:
            validate(task)
            job.task = OmegaConf.to_container(task, resolve=True)
        except Exception as err:  # the job meets it again and fails alone with it
            job.task, job.error = None, f"{type(err).__name__}: {err}"
            continue
        root = cache_dir(task.runtime, sweep_dir, cwd=cwd)
        entries.append((root, training_config(task), estimate_spec(task)))
    shared = plan_sweep(entries) if len(jobs) > 1 else 0
    return Plan(make_stacks(jobs, max_stack), shared)


# ---------------------------------------------------------------------------------------------
# running


def launch(
    launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
) -> list[Any]:
    """Compose, plan and run the jobs (``Launcher.launch`` of
    :class:`hydra_plugins.infoflow_launcher.infoflow_launcher.InfoflowLauncher`)."""
    from hydra.core.utils import configure_log, filter_overrides, setup_globals
    from hydra.utils import to_absolute_path

    setup_globals()
    config, context = launcher.config, launcher.hydra_context
    try:
        max_stack = check_options(launcher.options)
    except LauncherError as err:  # one line, as every bad input; no job has started
        raise SystemExit(f"infoflow: error: {err}") from None
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    sweep_dir = to_absolute_path(str(config.hydra.sweep.dir))
    Path(sweep_dir).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    jobs = []
    loader = compose_once(context)  # set up by InfoflowLauncher.setup
    for i, overrides in enumerate(job_overrides):
        idx = initial_job_idx + i
        sweep_config = loader.take(config, list(overrides))
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = idx
            sweep_config.hydra.job.num = idx
        jobs.append(PlannedJob(idx, list(overrides), sweep_config))
    wiring = group_wiring(launcher.task_function)
    plan = plan_jobs(jobs, max_stack if wiring else 1, sweep_dir, str(config.hydra.runtime.cwd))
    stacked = [s for s in plan.stacks if len(s) > 1]
    log.info(
        "Launching %d jobs in this process: %s%s; planned in %.2fs",
        len(jobs),
        f"{sum(map(len, stacked))} of them as {len(stacked)} stack(s) of seeds trained together "
        f"(hydra.launcher.max_stack={max_stack})"
        if stacked
        else "one after another",
        f", {plan.shared} training config(s) share their evaluation passes" if plan.shared else "",
        time.perf_counter() - t0,
    )
    returns: dict[int, Any] = {}
    for stack in plan.stacks:
        for job in stack:
            log.info("\t#%d : %s", job.idx, " ".join(filter_overrides(job.overrides)))
        if wiring is None or len(stack) == 1:
            ran = [run_alone(launcher, job) for job in stack]
        else:
            ran = run_stacked(launcher, stack, *wiring)
        returns.update(zip((j.idx for j in stack), ran))
        configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    return [returns[j.idx] for j in jobs]


def group_wiring(task_function: Callable) -> tuple[Callable, Callable] | None:
    """``(open_job, run_group)`` of the task function's module (``infoflow.__main__``), or
    None for a task function that has no group wiring (each job then runs alone)."""
    module = sys.modules.get(getattr(task_function, "__module__", ""), None)
    open_job = getattr(module, "open_job", None)
    run_group = getattr(module, "run_group", None)
    return (open_job, run_group) if callable(open_job) and callable(run_group) else None


def _run_job(launcher: Any, job: PlannedJob, task_function: Callable) -> Any:
    from hydra.core.utils import run_job

    return run_job(
        hydra_context=launcher.hydra_context,
        task_function=task_function,
        config=job.config,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )


def run_alone(launcher: Any, job: PlannedJob) -> Any:
    """One job, as Hydra's basic launcher runs it."""
    return _run_job(launcher, job, launcher.task_function)


def run_stacked(
    launcher: Any, stack: Sequence[PlannedJob], open_job: Callable, run_group: Callable
) -> list[Any]:
    """The jobs of a stack, each inside its own ``run_job``, nested: job k's task sets job k
    up (in its directory, with its Hydra config) and enters job k+1's ``run_job``; inside the
    last one the stack trains. So every job gets its directory, its ``.hydra/`` and its job
    callbacks, ``on_job_end`` after the stack's training, as under Hydra's basic launcher."""
    from hydra.core.hydra_config import HydraConfig

    setups: list[Any] = []
    returns: list[Any] = []

    def enter(k: int) -> None:
        if k == len(stack):
            ready = [s for s in setups if s is not None]
            if ready:
                run_group(ready)
            return

        def task(cfg: DictConfig) -> None:
            setups.append(open_job(cfg, HydraConfig.get()))
            enter(k + 1)

        returns.append(_run_job(launcher, stack[k], task))

    enter(0)
    return returns[::-1]  # the innermost job returned first
