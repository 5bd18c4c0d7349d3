"""``python -m infoflow``: one job = one network, one data set, one optimizer, one seed.

Wiring only: the job's directory and its one failure route (:class:`infoflow.job.Job`),
validation, the pieces built from their config groups, the loop.
"""

from __future__ import annotations

import functools
import logging
import sys
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
from infoflow.paths import config_dir
from infoflow.sharing import SharedEstimates, plan_path
from infoflow.store import TrainCache
from infoflow.train import TrainerConfig, run

log = logging.getLogger("infoflow")
register_resolvers()


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


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    job = Job(hydra_cfg.runtime.output_dir, config_hash=None, multirun=multirun)
    with job.running():
        job.config_hash = job_config_hash(cfg)
        # before validating: a job that fails must not leave an earlier job's rows under its name
        if job.prepare(resume=OmegaConf.select(cfg, "runtime.resume") is True):
            return
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
        optimizer = build(cfg.optimizer)(model.parameters())
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
            "%s on %s (%s), %s, device %s, %d threads, cache %s -> %s",
            hydra_cfg.runtime.choices["model"],
            data.name,
            data.in_shape,
            type(optimizer).__name__,
            device,
            torch.get_num_threads(),
            cache.dir if cache else "off",
            job.path,
        )
        run(
            model,
            optimizer,
            data,
            estimator,
            TrainerConfig(**cfg.trainer),
            cfg.seed,
            probe_output=cfg.probe.output,
            eval_batch_size=cfg.probe.batch_size,
            recorder=job,
            resume=cfg.runtime.resume,
            probe_samples=cfg.probe.samples,
            cache=cache,
            shared=shared,
        )


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
