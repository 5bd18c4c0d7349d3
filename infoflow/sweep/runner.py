"""The runner: set a job up from its spec, and train a stack of jobs.

A *stack* is the jobs of a sweep whose configs differ only in ``seed``: they train as one
stacked model (:func:`infoflow.training.loop.train_stack`), each keeping its own directory,
status, table and log. A single run, and every job under another launcher, is a stack of one.
infoflow's launcher (:mod:`infoflow.sweep.launcher`) calls :func:`open_job` for each job of a
stack inside that job's Hydra ``run_job``, then :func:`run_stack` once; ``python -m infoflow``
does the same for its one job.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import get_method, instantiate, to_absolute_path
from omegaconf import DictConfig, OmegaConf

from infoflow import spec as specs
from infoflow.errors import UserError
from infoflow.estimators.cost import cost_warning
from infoflow.spec import JobSpec
from infoflow.sweep.cache import TrainCache
from infoflow.sweep.job import Job, interrupt_exit
from infoflow.sweep.sharing import SharedEstimates, plan_path
from infoflow.training.data import check_dataset, check_fits
from infoflow.training.device import (
    deterministic_kernels,
    hidden_gpus,
    keep_freed_memory,
    resolve_device,
)
from infoflow.training.loop import Member, TrainerConfig, train_stack
from infoflow.training.models import build_model
from infoflow.training.probe import Probe
from infoflow.training.trainer import get_rng_state

log = logging.getLogger("infoflow")


def build(node: Any, **kwargs: Any) -> Any:
    """``instantiate`` a config group's object; our own errors (a missing data set, a rule
    broken) come out as they are, not wrapped in Hydra's InstantiationException.

    A ``_partial_`` node (an estimator, an optimizer) becomes a plain ``functools.partial``:
    Hydra's partials check their target policy at every call, and an estimator is called for
    every layer at every evaluation.
    """
    if node.get("_partial_", False):
        params = dict(node)
        target = get_method(params.pop("_target_"))
        params.pop("_partial_")
        return functools.partial(target, **params, **kwargs)
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, UserError):
            raise err.__cause__ from None
        raise


def build_net(node: Mapping[str, Any], in_shape: Sequence[int], n_classes: int) -> torch.nn.Module:
    """The model node's net: its ``_target_`` (any callable returning an ``nn.Module``) called
    with the node's arguments, and ``in_shape``/``n_classes`` when it takes them."""
    try:
        factory = instantiate(dict(node), _partial_=True, _convert_="all")
    except InstantiationException as err:
        if isinstance(err.__cause__, UserError):
            raise err.__cause__ from None
        raise
    return build_model(factory, {}, in_shape, n_classes)


def n_probed(data: Any, spec: JobSpec) -> int:
    """How many samples the estimator sees (``probe.samples``)."""
    samples = spec.node("probe.samples")
    n_eval, n_train = len(data.y_eval), len(data.y_train)
    return {"eval": n_eval, "train": n_train}.get(samples, n_eval + n_train)


def model_label(spec: JobSpec, hydra_cfg: DictConfig) -> str:
    """The ``model`` column: the option's name, or the ``_target_`` when the command line set
    one (on top of an option: its name would label another net) or the option is ``custom``."""
    choice = str(hydra_cfg.runtime.choices.get("model"))
    overridden = any(
        o.lstrip("+").split("=", 1)[0] == "model._target_" for o in hydra_cfg.overrides.task
    )
    return str(spec.node("model._target_")) if overridden or choice == "custom" else choice


@dataclass
class JobSetup:
    """A job set up and ready to train: its directory, spec and the pieces built from it."""

    job: Job
    spec: JobSpec
    data: Any  # infoflow.training.data.Dataset, on the job's device
    model: torch.nn.Module
    make_optimizer: Any  # params -> optimizer (the optimizer node)
    estimator: Any
    cache: TrainCache | None
    shared: SharedEstimates | None
    log_files: list[logging.FileHandler]  # its Hydra job log, where its lines belong
    probe: Probe  # the probed modules of its net, checked before training
    rng: torch.Tensor  # the global generator's state its net's draws start from
    stack: str = "exact"  # hydra.launcher.stack: how its stack trains (stack_mode)


def open_job(
    cfg: DictConfig, hydra_cfg: DictConfig, spec: JobSpec | None = None
) -> JobSetup | None:
    """Set a job up: its directory, spec (``spec`` when the launcher's plan made it), device,
    data, net, optimizer, estimator and training cache. None when it has nothing to do
    (completed, resumed) or has failed already (its status says why; a single run exits)."""
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    job = Job(hydra_cfg.runtime.output_dir, config_hash=None, multirun=multirun)
    with job.running():
        config = None if spec else specs.plain(cfg)  # converted once: hashed, then validated
        job.config_hash = spec.config_hash if spec else specs.config_hash(config)
        job.seed = cfg.get("seed") if isinstance(cfg.get("seed"), int) else None
        # before validating: a job that fails must not leave an earlier job's rows under its name
        if job.prepare(resume=OmegaConf.select(cfg, "runtime.resume") is True):
            return None
        spec = spec or JobSpec.of(config)
        job.flush_s = float(spec.runtime.get("flush_s", 0))
        return _set_up(job, spec, hydra_cfg)
    return None


def _set_up(job: Job, spec: JobSpec, hydra_cfg: DictConfig) -> JobSetup:
    runtime = spec.runtime
    device = resolve_device(runtime["device"])
    if runtime["device"] == "auto" and device.type == "cpu" and (hidden := hidden_gpus()):
        log.warning("runtime.device=auto runs on the CPU: %s", hidden)
    deterministic_kernels(device)
    torch.set_num_threads(resolve_threads(runtime["threads"], hydra_cfg.launcher))
    keep_freed_memory()  # this process trains: a step's freed tensors are the next step's
    data_choice = hydra_cfg.runtime.choices.get("data")
    data = check_dataset(
        build(spec.config["data"]), f"data={data_choice} ({spec.node('data._target_')})"
    )
    fingerprint = data.fingerprint  # of the content as read, before it moves to the device
    if device.type != "cpu":  # refused before moving, with its size and the device's limit
        check_fits(data.nbytes, device, f"data={data_choice}")
    data = data.to(device)
    torch.manual_seed(spec.seed)
    model = build_net(spec.config["model"], data.in_shape, data.n_classes).to(device)
    rng = get_rng_state(device)  # where the seed's own draws (Dropout) start
    probe = Probe.of(model, spec.node("probe.layers"), data.x_eval[:1])  # before any training
    make_optimizer = build(spec.config["optimizer"])
    estimator = build(spec.config["estimator"])
    if warning := cost_warning(estimator, list(probe.units), n_probed(data, spec)):
        log.warning(warning)  # before training: the cheaper estimators are named
    choices = {**hydra_cfg.runtime.choices, "model": model_label(spec, hydra_cfg)}
    stack = stack_mode(hydra_cfg)
    job.meta = spec.meta(job.run_id, choices, device.type, data.source, stack)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    sweep_dir = to_absolute_path(hydra_cfg.sweep.dir) if multirun else None
    root = spec.cache_root(sweep_dir, cwd=hydra_cfg.runtime.cwd)
    cache = shared = None
    if root is not None:
        cache = TrainCache(
            root,
            spec.training_key(device.type, fingerprint, stack),
            wait_s=runtime["cache"]["wait_s"],
        )
        plan = plan_path(root, spec.training)
        shared = SharedEstimates(cache, plan, spec.estimate, build=build)
    log.info(
        "%s on %s (%s), probing %s, %s, seed %s, device %s, %d threads, cache %s -> %s",
        choices["model"]
        + (f" {spec.node('model.name')}" if choices["model"] == "torchvision" else ""),
        data.name,
        data.in_shape,
        ", ".join(f"{n} ({u})" for n, u in zip(probe.names, probe.units)),
        spec.config["optimizer"]["_target_"].rsplit(".", 1)[-1],
        spec.seed,
        device,
        torch.get_num_threads(),
        cache.dir if cache else "off",
        job.path,
    )
    files = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    return JobSetup(
        job, spec, data, model, make_optimizer, estimator, cache, shared, files, probe, rng, stack
    )


def stack_mode(hydra_cfg: DictConfig) -> str:
    """``hydra.launcher.stack`` of a sweep under infoflow's launcher (which validated it);
    ``exact`` for a single run and under every other launcher (each job alone)."""
    launcher = hydra_cfg.launcher if hydra_cfg.mode == RunMode.MULTIRUN else None
    if not hasattr(launcher, "get"):
        return "exact"
    if not str(launcher.get("_target_", "")).startswith("hydra_plugins.infoflow_launcher."):
        return "exact"
    return str(launcher.get("stack", "exact"))


def run_stack(setups: Sequence[JobSetup]) -> None:
    """Train jobs whose configs differ only in ``seed`` as one stacked model; each keeps its
    own directory, status and table.

    A seed that fails alone (its loss diverged, its estimator, its files) is marked failed and
    the others go on; what stops the whole stack is written to every job it stopped.
    """
    first = setups[0].spec
    members = [
        Member(s.model, s.spec.seed, s.estimator, s.job, s.cache, s.shared, s.probe, s.rng)
        for s in setups
    ]
    jobs = {id(m): s.job for m, s in zip(members, setups)}
    # one optimizer over every seed's parameters: per-parameter state, so each seed's is the
    # state it would have alone
    optimizer = setups[0].make_optimizer([p for s in setups for p in s.model.parameters()])
    probe = first.config["probe"]
    try:
        with job_logs(setups):
            if len(setups) > 1:
                seeds = ", ".join(str(m.seed) for m in members)
                how = " (batched)" if setups[0].stack == "batched" else ""
                log.info("seeds %s trained as one stack%s", seeds, how)
            train_stack(
                members,
                optimizer,
                setups[0].data,
                TrainerConfig(**first.config["trainer"]),
                probe_output=probe["output"],
                eval_batch_size=probe["batch_size"],
                resume=first.runtime.get("resume", False),
                probe_samples=probe["samples"],
                on_error=lambda m, err: jobs[id(m)].failed(err),
                stack=setups[0].stack,
            )
    except KeyboardInterrupt as err:
        for m in members:
            if m.error is None and not m.finished:
                jobs[id(m)].interrupted(err)
        raise interrupt_exit(err) from None
    except Exception as err:
        for m in members:
            if m.error is None and not m.finished:
                jobs[id(m)].failed(err)


class NoDetail(logging.Filter):
    """Keeps a job's detail lines (records with ``detail`` true) off the console."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "detail", False)


class SeedLines(logging.Filter):
    """Lets through the lines of one seed and the lines of no seed in particular."""

    def __init__(self, seed: int | None) -> None:
        super().__init__()
        self.seed = seed

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "seed", None) in (None, self.seed)


@contextlib.contextmanager
def job_logs(setups: Sequence[JobSetup]) -> Iterator[None]:
    """While a stack trains, every job's log file gets the stack's common lines and the lines of
    its own seed (records carry ``seed``). Hydra configures logging per job, so when the stack
    starts only the last job's file is open: the others are opened again, appending. Lines
    marked ``detail`` go to the files only."""
    root = logging.getLogger()
    added: list[logging.Handler] = []
    consoles = [h for h in root.handlers if type(h) is logging.StreamHandler]
    filtered: list[tuple[logging.Handler, logging.Filter]] = [(h, NoDetail()) for h in consoles]
    for handler, quiet in filtered:
        handler.addFilter(quiet)
    for setup in setups if len(setups) > 1 else ():
        for handler in setup.log_files:
            seed_only = SeedLines(setup.job.seed)
            if handler in root.handlers:  # the last job's, open
                handler.addFilter(seed_only)
                filtered.append((handler, seed_only))
                continue
            again = logging.FileHandler(handler.baseFilename, mode="a", encoding=handler.encoding)
            again.setLevel(handler.level)
            again.setFormatter(handler.formatter)
            again.addFilter(seed_only)
            root.addHandler(again)
            added.append(again)
    try:
        yield
    finally:
        for handler, only in filtered:
            handler.removeFilter(only)
        for handler in added:
            root.removeHandler(handler)
            handler.close()


def cores() -> int:
    """CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1  # pragma: no cover


def resolve_threads(setting: Any, launcher: Any = None) -> int:
    """Torch threads for this job, so that parallel jobs do not oversubscribe the cores.

    ``setting`` (``runtime.threads``) if an int; for ``auto``: ``OMP_NUM_THREADS`` if set,
    else submitit's ``cpus_per_task``, else ``max(1, cores // n_jobs)`` of joblib (a negative
    ``n_jobs`` counts from the core count), else every core. ``launcher`` is
    ``hydra.launcher``.
    """
    if setting != "auto":
        return int(setting)
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) >= 1:
        return int(env)
    n = cores()
    launcher = launcher if hasattr(launcher, "get") else {}
    cpus = launcher.get("cpus_per_task")
    if isinstance(cpus, int) and cpus >= 1:
        return min(cpus, n)
    n_jobs = launcher.get("n_jobs")
    if isinstance(n_jobs, int) and n_jobs != 0:
        parallel = n_jobs if n_jobs > 0 else max(1, n + 1 + n_jobs)
        return max(1, n // min(parallel, n))
    return n
