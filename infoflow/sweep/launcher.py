"""infoflow's Hydra launcher: it receives every job of a sweep, plans stacks and runs them.

``conf/config.yaml`` makes it the default (``override hydra/launcher: infoflow``); the plugin
class in ``hydra_plugins.infoflow_launcher`` delegates here. It uses Hydra's public API only:
each job's config is composed by the ``HydraContext``'s config loader, as Hydra's basic launcher
does, and each job goes through ``hydra.core.utils.run_job`` (its directory, its ``.hydra/``,
the job callbacks).

The plan, computed from the jobs' specs (:class:`infoflow.spec.JobSpec`, one per job, which the
runner then uses as it is):

- jobs whose configs differ only in ``estimator``/``probe`` keys see the same networks: they
  train once through the training cache and share their evaluation passes (the launcher writes
  the plan of :mod:`infoflow.sweep.sharing` before the first job starts);
- jobs whose configs differ only in ``seed`` train together as one *stack*
  (:func:`infoflow.sweep.runner.run_stack`) of at most ``hydra.launcher.max_stack`` seeds
  (larger groups are split), never twice the same seed. Each job keeps its own directory,
  status, table and run id; a seed's numbers do not depend on its stack-mates;
- stacks that share a training key (the same nets, other estimators) form one *unit*, run in
  order by one process: the first trains and evaluates for all, the others read the cache;
  units share nothing, so they run at once in ``hydra.launcher.n_workers`` worker processes
  (:mod:`infoflow.sweep.workers`), each with its own torch threads. When there are fewer units
  than workers, big units are split by seed (a 20-seed stack on 2 workers: two stacks of 10).
  One worker, or one unit, runs in this process.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional  # noqa: UP035 - Hydra's structured configs

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import (
    JobReturn,
    JobStatus,
    configure_log,
    filter_overrides,
    run_job,
    setup_globals,
)
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf, open_dict

from infoflow import io
from infoflow.errors import UserError
from infoflow.spec import JobSpec
from infoflow.sweep import runner, workers
from infoflow.sweep.compose import compose_jobs
from infoflow.sweep.job import (
    UNRECORDED,
    Interrupted,
    catch_signals,
    interrupt_exit,
    mark_lost,
    register_resolvers,
)
from infoflow.sweep.sharing import plan_sweep
from infoflow.sweep.slurm import run_units as slurm_units
from infoflow.training.batched import STACK_MODES
from infoflow.training.device import resolve_device

log = logging.getLogger(__name__)

#: the most seeds in one stack: each job of a stack nests one ``run_job`` in the previous one's
#: (so that each gets its callbacks around the stack's training), a few frames per seed, and
#: Python's recursion limit must hold them all
MAX_STACK = 128
#: the most worker processes ``hydra.launcher.n_workers`` may ask for
MAX_WORKERS = 1024
#: the fewest seeds a unit split across idle workers leaves in each part: a smaller stack gains
#: less from a core of its own than a worker's start (a fresh interpreter, torch, the data)
MIN_SPLIT = 4


@dataclass
class LauncherConf:
    """``hydra/launcher: infoflow``; its keys are the launcher's options."""

    _target_: str = "hydra_plugins.infoflow_launcher.infoflow_launcher.InfoflowLauncher"
    # the most seeds trained as one stack (memory); larger seed groups are split
    max_stack: int = 32
    # exact: each seed's layers as alone, bit for bit; batched: one kernel over a seed axis
    # (infoflow.training.batched), a seed alone up to float rounding
    stack: str = "exact"
    # worker processes running independent units at once; null: the cores divided by the
    # threads each job uses (runtime.threads), 1 on a GPU
    n_workers: Optional[int] = None  # noqa: UP045 - Hydra's structured configs want Optional
    # where the units run: local (worker processes here) | slurm (one Slurm job per unit,
    # through submitit, with the keys below)
    executor: str = "local"
    partition: Optional[str] = None  # noqa: UP045 - null: the cluster's default partition
    account: Optional[str] = None  # noqa: UP045
    qos: Optional[str] = None  # noqa: UP045
    constraint: Optional[str] = None  # noqa: UP045
    timeout_min: int = 60  # minutes per Slurm job
    gpus_per_node: Optional[int] = None  # noqa: UP045
    cpus_per_task: Optional[int] = None  # noqa: UP045 - a unit's torch threads (auto)
    mem_gb: Optional[int] = None  # noqa: UP045
    array_parallelism: int = 256  # Slurm jobs of the sweep running at once
    max_num_timeout: int = 0  # requeues after a time limit or preemption (resumed)
    additional_parameters: Dict[str, Any] = field(default_factory=dict)  # noqa: UP006 - sbatch


#: the options of ``hydra.launcher`` besides ``_target_``, with their defaults
OPTIONS = {
    f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
    for f in dataclasses.fields(LauncherConf)
    if f.name != "_target_"
}
#: where units may run (``hydra.launcher.executor``)
EXECUTORS = ("local", "slurm")
#: the options that only ``executor=slurm`` reads (submitit's keys)
SLURM_OPTIONS = tuple(list(OPTIONS)[list(OPTIONS).index("partition") :])
#: the Slurm options that are counts, with the least value each may take
SLURM_COUNTS = {
    "timeout_min": 1,
    "gpus_per_node": 0,
    "cpus_per_task": 1,
    "mem_gb": 1,
    "array_parallelism": 1,
    "max_num_timeout": 0,
}


class LauncherError(UserError, ValueError):
    """A launcher option breaks a rule; the message names the key, the rule and the value."""


def check_options(options: dict[str, Any]) -> int:
    """Validate ``hydra.launcher``'s options; return ``max_stack``.

    Raises
    ------
    LauncherError
        for an option the launcher does not know, a ``max_stack`` that is not an integer
        in 1..:data:`MAX_STACK` or a ``stack`` that is not one of
        :data:`infoflow.training.batched.STACK_MODES`, naming the key, the rule and the value.
    """
    for key, value in options.items():
        if key not in OPTIONS:
            raise LauncherError(
                f"hydra.launcher.{key} is not an option of infoflow's launcher: its options are "
                f"{', '.join(OPTIONS)}; got hydra.launcher.{key}={value!r}"
            )
    max_stack = options.get("max_stack", OPTIONS["max_stack"])
    if not _int_in(max_stack, 1, MAX_STACK):
        raise LauncherError(
            f"hydra.launcher.max_stack must be an integer between 1 and {MAX_STACK} (the most "
            f"seeds trained as one stack; 1 trains every job alone), got {max_stack!r}"
        )
    stack = options.get("stack", OPTIONS["stack"])
    if stack not in STACK_MODES:
        raise LauncherError(
            f"hydra.launcher.stack must be one of {', '.join(STACK_MODES)} (exact: each seed "
            f"bit for bit as alone; batched: one kernel over the seeds), got {stack!r}"
        )
    n_workers = options.get("n_workers")
    if n_workers is not None and not _int_in(n_workers, 1, MAX_WORKERS):
        raise LauncherError(
            f"hydra.launcher.n_workers must be null (the cores divided by each job's threads) "
            f"or an integer between 1 and {MAX_WORKERS} (worker processes running units at "
            f"once), got {n_workers!r}"
        )
    _check_executor(options)
    return max_stack


def _int_in(value: Any, least: int, most: float = float("inf")) -> bool:
    """``value`` is an integer (not a bool) in ``least..most``."""
    return isinstance(value, int) and not isinstance(value, bool) and least <= value <= most


def _check_executor(options: dict[str, Any]) -> None:
    """``executor`` is local or slurm; Slurm's keys are counts where they count, and are not
    given to the local executor, which would ignore them."""
    executor = options.get("executor", OPTIONS["executor"])
    if executor not in EXECUTORS:
        raise LauncherError(
            f"hydra.launcher.executor must be one of {', '.join(EXECUTORS)} (local: worker "
            f"processes on this machine; slurm: one Slurm job per unit), got {executor!r}"
        )
    for key, least in SLURM_COUNTS.items():
        value = options.get(key, OPTIONS[key])
        if value is None and OPTIONS[key] is None:
            continue
        if not _int_in(value, least):
            raise LauncherError(
                f"hydra.launcher.{key} must be an integer >= {least}, got {value!r}"
            )
    given = [k for k in SLURM_OPTIONS if k in options and options[k] != OPTIONS[k]]
    if executor == "local" and given:
        raise LauncherError(
            f"hydra.launcher.{given[0]} is a Slurm option: it needs hydra.launcher.executor=slurm "
            f"(the local executor runs units on this machine), got hydra.launcher.{given[0]}="
            f"{options[given[0]]!r}"
        )


# ---------------------------------------------------------------------------------------------
# the plan


@dataclass
class PlannedJob:
    """One job of the sweep: its index, overrides, composed config (with ``hydra``) and spec."""

    idx: int
    overrides: list[str]
    config: DictConfig
    spec: JobSpec | None = None  # None: its config breaks a rule; the job fails alone with it
    # its training config but the seed, with its training cache; None without a cache: the
    # jobs with equal ones and the same seed train once and share their evaluation passes
    trains_with: str | None = None


Stack = list[PlannedJob]
#: stacks run in order by one process: those sharing a training key (see :func:`make_units`)
Unit = list[Stack]


@dataclass
class Plan:
    """Stacks of jobs in launch order, the number of shared-evaluation plans written and the
    units that run at once (:func:`make_units`; one unit holding every stack until then)."""

    stacks: list[Stack] = field(default_factory=list)
    shared: int = 0
    units: list[Unit] = field(default_factory=list)


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
        if root is not None:
            training = {k: v for k, v in job.spec.training.items() if k != "seed"}
            job.trains_with = io.config_hash({"root": str(root), "training": training})
    shared = plan_sweep(entries) if len(jobs) > 1 else 0
    stacks = make_stacks(jobs, max_stack)
    return Plan(stacks, shared, [stacks])


def make_units(stacks: Sequence[Stack], n_workers: int) -> list[Unit]:
    """The stacks in units that share nothing, split by seed to give ``n_workers`` work.

    Stacks with a job of the same training key (:attr:`PlannedJob.trains_with` and seed) are
    one unit, in plan order: the first trains through the cache and evaluates for the others,
    which read. While there are fewer units than workers, the unit with the most seeds per
    part is cut into one part more, as long as each part keeps :data:`MIN_SPLIT` seeds: a
    unit's seeds, in order, in near-equal runs; each part holds its seeds' jobs of every stack
    of the unit (so its stacks still share their training keys).
    """
    units = _by_training_key(stacks)
    seeds = [_seeds(u) for u in units]
    parts = [1] * len(units)
    for _ in range(max(0, n_workers - len(units))):
        best = max(
            (k for k in range(len(units)) if len(seeds[k]) // (parts[k] + 1) >= MIN_SPLIT),
            key=lambda k: len(seeds[k]) / parts[k],
            default=None,
        )
        if best is None:
            break
        parts[best] += 1
    out: list[Unit] = []
    for unit, its_seeds, n in zip(units, seeds, parts):
        for chunk in _runs(its_seeds, n):
            part = [[j for j in stack if j.spec is None or j.spec.seed in chunk] for stack in unit]
            out.append([stack for stack in part if stack])
    return out


def _by_training_key(stacks: Sequence[Stack]) -> list[Unit]:
    """Stacks joined (in plan order) when a job of one shares its training key with a job of
    the other."""
    owner: dict[tuple[str, int], int] = {}  # training key -> the unit holding it
    units: list[Unit | None] = []
    for stack in stacks:
        keys = [(j.trains_with, j.spec.seed) for j in stack if j.trains_with is not None]
        joined = sorted({owner[k] for k in keys if k in owner})
        unit: Unit = [s for u in joined for s in units[u]] + [stack]
        for u in joined:
            units[u] = None
        units.append(unit)
        for s in unit:
            for j in s:
                if j.trains_with is not None:
                    owner[j.trains_with, j.spec.seed] = len(units) - 1
    kept = [u for u in units if u is not None]
    return sorted(kept, key=lambda u: min(j.idx for s in u for j in s))


def _seeds(unit: Unit) -> list[int]:
    """A unit's seeds in the order they come (jobs without a spec have none)."""
    return list(dict.fromkeys(j.spec.seed for s in unit for j in s if j.spec is not None))


def _runs(items: list[int], n: int) -> list[set[int]]:
    """``items`` in ``n`` consecutive runs whose lengths differ by at most one."""
    if n <= 1:
        return [set(items)]
    size, extra = divmod(len(items), n)
    runs, at = [], 0
    for k in range(n):
        step = size + (k < extra)
        runs.append(set(items[at : at + step]))
        at += step
    return runs


def default_workers(jobs: Sequence[PlannedJob]) -> int:
    """``hydra.launcher.n_workers=null``: the cores divided by the most threads a job uses
    (``runtime.threads``; ``auto`` counts ``OMP_NUM_THREADS`` when set, else every core, as a
    job alone takes them); 1 when a job runs on a GPU, whose processes would share one device.

    So jobs at ``runtime.threads=auto`` run one after the other on every core, and jobs that
    name their threads (``runtime.threads=1``: the IB papers' small nets, whose steps gain
    nothing from a second thread) run side by side, one per core: a net big enough to split
    its kernels across threads (the CNN on Fashion-MNIST) runs faster on all the cores than
    on one core beside the others, and one on a core of its own would set the sweep's pace.
    """
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    per_job = int(env) if env.isdigit() and int(env) >= 1 else runner.cores()
    most = 1
    for job in jobs:
        if job.spec is None:
            continue
        runtime = job.spec.runtime
        try:
            if resolve_device(runtime.get("device", "auto")).type != "cpu":
                return 1
        except ValueError:  # the job fails alone with it
            continue
        threads = runtime.get("threads", "auto")
        most = max(most, per_job if threads == "auto" else int(threads))
    return max(1, runner.cores() // most)


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
    configs = compose_jobs(context.config_loader, config, job_overrides)
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
    options = {**OPTIONS, **launcher.options}
    slurm = options["executor"] == "slurm"
    parallel = place_units(plan, jobs, options)
    log.info(
        "Launching %d jobs %s: %s; planned in %.2fs",
        len(jobs),
        (
            f"as {len(plan.units)} Slurm job(s), one per unit"
            if slurm
            else f"in {parallel} worker processes"
            if parallel > 1
            else "in this process"
        ),
        how_it_runs(plan, max_stack),
        time.perf_counter() - t0,
    )
    logging_cfg = (config.hydra.hydra_logging, config.hydra.verbose)
    if slurm:
        returns = run_units(context, plan.units, logging_cfg, sweep_dir, options)
    elif parallel > 1:
        returns = run_units(context, plan.units, logging_cfg, sweep_dir, None, parallel)
    else:
        returns = {}
        for stack in (s for unit in plan.units for s in unit):
            say_jobs(stack)
            returns.update(zip((j.idx for j in stack), run_nested(context, stack)))
            configure_log(*logging_cfg)
    return [returns.get(j.idx) or lost_return(j) for j in jobs]


def place_units(plan: Plan, jobs: Sequence[PlannedJob], options: dict[str, Any]) -> int:
    """Set the plan's units for where they run; return how many run at once here.

    Slurm: one Slurm job per unit (``n_workers``, when given, splits them as locally).
    Local: ``n_workers`` (or :func:`default_workers`) processes; with one, every stack in this
    process, in plan order.
    """
    if options["executor"] == "slurm":
        plan.units = make_units(plan.stacks, options["n_workers"] or 1)
        return 1
    n_workers = options["n_workers"] or default_workers(jobs)
    if n_workers > 1:
        plan.units = make_units(plan.stacks, n_workers)
    return min(n_workers, len(plan.units))


def say_jobs(stack: Stack) -> None:
    for job in stack:
        log.info("\t#%d : %s", job.idx, " ".join(filter_overrides(job.overrides)))


# ---------------------------------------------------------------------------------------------
# units in worker processes


@dataclass
class UnitResult:
    """What a unit's process sends back: each job's ``JobReturn``, the signal that stopped it
    (None when it ran to its end) and the jobs whose directory could not hold a status."""

    returns: dict[int, Any]
    signum: int | None = None
    unrecorded: dict[str, str] = field(default_factory=dict)


def run_unit(
    context: Any, state: Any, unit: Unit, logging_cfg: tuple, resume: bool = False
) -> UnitResult:
    """Run a unit's stacks in order, in a process of its own (a worker, a Slurm job): Hydra's
    globals from the launching process (``Singleton`` state), each job through ``run_job``
    as in the launching process. SIGINT and SIGTERM stop it as they stop a sweep: the
    running jobs end ``interrupted``, the others do not start. ``resume``: the unit runs
    again (a requeued Slurm job): its jobs continue from their files
    (``runtime.resume=true``)."""
    setup_globals()
    Singleton.set_state(state)
    register_resolvers()
    configure_log(*logging_cfg)
    if resume:
        for job in (j for stack in unit for j in stack):
            with open_dict(job.config):
                job.config.runtime.resume = True
            job.spec = JobSpec.of(job.config) if job.spec is not None else None
    catch_signals()
    returns: dict[int, Any] = {}
    signum = None
    try:
        for stack in unit:
            say_jobs(stack)
            returns.update(zip((j.idx for j in stack), run_nested(context, stack)))
            configure_log(*logging_cfg)
    except KeyboardInterrupt as err:  # between two jobs
        signum = err.signum if isinstance(err, Interrupted) else int(signal.SIGINT)
    except SystemExit as err:  # a job's interrupt_exit: 128 + the signal
        if not (isinstance(err.code, int) and err.code > 128):
            raise
        signum = err.code - 128
    return UnitResult(returns, signum, dict(UNRECORDED))


def run_units(
    context: Any,
    units: Sequence[Unit],
    logging_cfg: tuple,
    sweep_dir: str,
    slurm: dict[str, Any] | None = None,
    n: int = 1,
) -> dict[int, Any]:
    """Run ``units`` in ``n`` local worker processes, or as Slurm jobs (``slurm``: the
    launcher's options); each job's ``JobReturn`` by index.

    A local worker gets ``OMP_NUM_THREADS`` = the cores divided by ``n`` unless it is set (a
    job with ``runtime.threads=auto`` takes it). A unit whose process died, or that failed
    outside its jobs, has its running jobs marked ``failed`` with the reason; the others go
    on. A signal to this process stops the sweep: raises ``SystemExit`` 128 + its number once
    the busy units have written their jobs' statuses; so does a signal to a local worker alone.
    A Slurm unit stopped by ``scancel`` ends alone (its jobs ``interrupted``).
    """
    tasks = [(run_unit, (context, Singleton.get_state(), unit, logging_cfg)) for unit in units]
    returns: dict[int, Any] = {}

    def on_done(i: int, outcome: workers.Outcome) -> int | None:
        if outcome.error is not None:
            lost(units[i], outcome.error, sweep_dir)
            return None
        result: UnitResult = outcome.value
        returns.update(result.returns)
        UNRECORDED.update(result.unrecorded)
        if slurm is not None and result.signum is not None:
            log.error(
                "jobs %s: their Slurm job was stopped by %s; runtime.resume=true continues them",
                ", ".join(f"#{j.idx}" for stack in units[i] for j in stack),
                signal.Signals(result.signum).name,
            )
            return None
        return result.signum

    catch_signals()
    try:
        if slurm is not None:
            slurm_units(tasks, slurm, sweep_dir, on_done)
        else:
            env = {}
            if not os.environ.get("OMP_NUM_THREADS", "").strip():
                env["OMP_NUM_THREADS"] = str(max(1, runner.cores() // n))
            workers.run_tasks(tasks, n, env, on_done)
    except KeyboardInterrupt as err:
        raise interrupt_exit(err) from None
    return returns


def lost(unit: Unit, why: str, sweep_dir: str) -> None:
    """A unit ended without a result: its jobs that were running are marked ``failed``."""
    first = why.strip().splitlines()[-1]
    marked = [j.idx for s in unit for j in s if mark_lost(job_dir(j, sweep_dir), first)]
    log.error(
        "jobs %s: %s%s",
        ", ".join(f"#{j.idx}" for s in unit for j in s),
        first,
        f"; jobs {', '.join(f'#{i}' for i in marked)} marked failed" if marked else "",
    )
    if "\n" in why.strip():
        log.debug("%s", why)


def job_dir(job: PlannedJob, sweep_dir: str) -> Path:
    return Path(sweep_dir) / str(OmegaConf.select(job.config, "hydra.sweep.subdir"))


def lost_return(job: PlannedJob) -> JobReturn:
    """The ``JobReturn`` of a job whose process gave none (its status says what happened)."""
    ret = JobReturn(overrides=list(job.overrides), cfg=job.config, status=JobStatus.COMPLETED)
    ret.return_value = None
    return ret


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
    stacked = [s for unit in plan.units for s in unit if len(s) > 1]
    how = "one after another"
    if stacked:
        how = (
            f"{sum(map(len, stacked))} of them as {len(stacked)} stack(s) of seeds trained "
            f"together (hydra.launcher.max_stack={max_stack})"
        )
    if plan.shared:
        how += f", {plan.shared} training config(s) share their evaluation passes"
    return how


def run_nested(context: Any, stack: Sequence[PlannedJob]) -> list[Any]:
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
                hydra_context=context,
                task_function=task,
                config=stack[k].config,
                job_dir_key="hydra.sweep.dir",
                job_subdir_key="hydra.sweep.subdir",
            )
        )

    try:
        enter(0)
    except (KeyboardInterrupt, SystemExit) as err:
        # a signal between two set-ups, or before the stack's training began: the jobs set
        # up so far have no status yet, and get theirs (a job's own handler wrote its own)
        code = err.code if isinstance(err, SystemExit) else None
        if isinstance(err, SystemExit) and not (isinstance(code, int) and code > 128):
            raise
        signal_err = err if isinstance(err, KeyboardInterrupt) else Interrupted(code - 128)
        for setup in setups:
            if not setup.job.ended:
                setup.job.interrupted(signal_err)
        raise interrupt_exit(signal_err) from None
    return returns[::-1]  # the innermost job returned first
