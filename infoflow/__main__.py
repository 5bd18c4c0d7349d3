"""``python -m infoflow``: one job = one network, one data set, one optimizer, one seed.

Wiring only: the job's directory and its one failure route (:class:`infoflow.job.Job`),
validation, the pieces built from their config groups (:func:`open_job`), the loop
(:func:`run_group`: the seeds of a group as one stacked model, a single run as a stack of one).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import get_method, instantiate, to_absolute_path
from omegaconf import DictConfig, OmegaConf

from infoflow.config import UserError, deterministic_kernels, hidden_gpus, resolve_device, validate
from infoflow.job import (
    Interrupted,
    Job,
    cache_dir,
    estimate_spec,
    interrupt_exit,
    job_config_hash,
    job_meta,
    register_resolvers,
    resolve_threads,
    training_config,
    training_key,
)
from infoflow.launcher import register_launcher
from infoflow.paths import config_dir
from infoflow.sharing import SharedEstimates, plan_path
from infoflow.store import TrainCache
from infoflow.train import Member, TrainerConfig, run_stack

log = logging.getLogger("infoflow")
register_resolvers()
register_launcher()


def build(node: Any, **kwargs: Any) -> Any:
    """``instantiate`` a config group's object; our own errors (a missing data set, a rule
    broken) come out as they are, not wrapped in Hydra's InstantiationException.

    A ``_partial_`` node (an estimator, an optimizer) becomes a plain ``functools.partial``:
    Hydra's partials check their target policy at every call, about 5 ms each, and an
    estimator is called for every layer at every evaluation.
    """
    if node.get("_partial_", False):
        params = (
            OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
        )
        target = get_method(params.pop("_target_"))
        params.pop("_partial_")
        return functools.partial(target, **params, **kwargs)
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, UserError):
            raise err.__cause__ from None
        raise


@dataclass
class JobSetup:
    """A job set up and ready to train: its directory, config and the pieces built from it."""

    job: Job
    cfg: DictConfig
    data: Any  # infoflow.data.Dataset, on the job's device
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer  # over this job's model alone
    make_optimizer: Any  # params -> optimizer (cfg.optimizer)
    estimator: Any
    cache: TrainCache | None
    shared: SharedEstimates | None
    log_files: list[logging.FileHandler]  # its Hydra job log, where its lines belong


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def main(cfg: DictConfig) -> None:
    """One job, a stack of one (infoflow's launcher runs a sweep's seeds with
    :func:`open_job` and :func:`run_group`; the other launchers call this per job)."""
    setup = open_job(cfg, HydraConfig.get())
    if setup is not None:
        run_group([setup])


def open_job(cfg: DictConfig, hydra_cfg: DictConfig) -> JobSetup | None:
    """Set a job up: its directory, validation, device, data, net, optimizer, estimator and
    training cache. None when it has nothing to do (completed, resumed) or has failed already
    (its status says why; a single run exits)."""
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    job = Job(hydra_cfg.runtime.output_dir, config_hash=None, multirun=multirun)
    setup = None
    with job.running():
        job.config_hash = job_config_hash(cfg)
        job.seed = int(cfg.seed) if isinstance(cfg.get("seed"), int) else None
        # before validating: a job that fails must not leave an earlier job's rows under its name
        if job.prepare(resume=OmegaConf.select(cfg, "runtime.resume") is True):
            return None
        validate(cfg)
        device = resolve_device(cfg.runtime.device)
        if cfg.runtime.device == "auto" and device.type == "cpu" and (hidden := hidden_gpus()):
            log.warning("runtime.device=auto runs on the CPU: %s", hidden)
        deterministic_kernels(device)
        torch.set_num_threads(resolve_threads(cfg.runtime.threads, hydra_cfg.launcher))
        data = build(cfg.data)
        fingerprint = data.fingerprint  # of the content as read, before it moves to the device
        data = data.to(device)
        torch.manual_seed(cfg.seed)
        model = build(cfg.model, in_shape=data.in_shape, n_classes=data.n_classes).to(device)
        make_optimizer = build(cfg.optimizer)
        optimizer = make_optimizer(model.parameters())
        estimator = build(cfg.estimator)
        job.meta = job_meta(cfg, job.run_id, hydra_cfg.runtime.choices, device.type, data.source)
        sweep_dir = to_absolute_path(hydra_cfg.sweep.dir) if multirun else None
        root = cache_dir(cfg.runtime, sweep_dir, cwd=hydra_cfg.runtime.cwd)
        cache = shared = None
        if root is not None:
            key = training_key(cfg, device, fingerprint)
            cache = TrainCache(root, key, wait_s=cfg.runtime.cache.wait_s)
            plan = plan_path(root, training_config(cfg))
            shared = SharedEstimates(cache, plan, estimate_spec(cfg), build=build)
        log.info(
            "%s on %s (%s), %s, seed %s, device %s, %d threads, cache %s -> %s",
            hydra_cfg.runtime.choices["model"],
            data.name,
            data.in_shape,
            type(optimizer).__name__,
            cfg.seed,
            device,
            torch.get_num_threads(),
            cache.dir if cache else "off",
            job.path,
        )
        files = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
        setup = JobSetup(
            job, cfg, data, model, optimizer, make_optimizer, estimator, cache, shared, files
        )
    return setup


def run_group(setups: Sequence[JobSetup]) -> None:
    """Train jobs whose configs differ only in ``seed`` as one stacked model
    (:func:`infoflow.train.run_stack`); each keeps its own directory, status and table.

    A seed that fails alone (its loss diverged, its estimator, its files) is marked failed and
    the others go on; what stops the whole stack is written to every job it stopped.
    """
    first = setups[0]
    members = [
        Member(s.model, int(s.cfg.seed), s.estimator, s.job, s.cache, s.shared) for s in setups
    ]
    jobs = {id(m): s.job for m, s in zip(members, setups)}
    if len(setups) == 1:
        optimizer = first.optimizer
    else:
        optimizer = first.make_optimizer([p for s in setups for p in s.model.parameters()])
    try:
        with stack_logs(setups):
            if len(setups) > 1:
                seeds = ", ".join(str(m.seed) for m in members)
                log.info("seeds %s trained as one stacked model", seeds)
            run_stack(
                members,
                optimizer,
                first.data,
                TrainerConfig(**first.cfg.trainer),
                probe_output=first.cfg.probe.output,
                eval_batch_size=first.cfg.probe.batch_size,
                resume=first.cfg.runtime.resume,
                probe_samples=first.cfg.probe.samples,
                on_error=lambda m, err: jobs[id(m)].failed(err),
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


class SeedLines(logging.Filter):
    """Lets through the lines of one seed and the lines of no seed in particular."""

    def __init__(self, seed: int | None) -> None:
        super().__init__()
        self.seed = seed

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "seed", None) in (None, self.seed)


@contextlib.contextmanager
def stack_logs(setups: Sequence[JobSetup]) -> Iterator[None]:
    """While a stack trains, every job's log file gets the stack's common lines and the lines of
    its own seed (records carry ``seed``). Hydra configures logging per job, so when the stack
    starts only the last job's file is open: the others are opened again, appending."""
    if len(setups) < 2:
        yield
        return
    root = logging.getLogger()
    added: list[logging.Handler] = []
    filtered: list[tuple[logging.Handler, logging.Filter]] = []
    for setup in setups:
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
        for handler, seed_only in filtered:
            handler.removeFilter(seed_only)
        for handler in added:
            root.removeHandler(handler)
            handler.close()


def cli() -> None:
    """The command line (``python -m infoflow``, ``infoflow``): an interrupt that arrives
    outside a job (between a sweep's jobs, while it merges) ends it with one line, too."""
    try:
        main()
    except KeyboardInterrupt as err:
        name = err.args[0] if isinstance(err, Interrupted) and err.args else "SIGINT"
        print(f"infoflow: interrupted by {name}", file=sys.stderr)
        raise interrupt_exit(err) from None


if __name__ == "__main__":
    cli()
