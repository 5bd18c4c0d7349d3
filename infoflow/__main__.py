"""``python -m infoflow``: one job = one network, one data set, one optimizer, one seed.

Wiring only: validate the config, build the pieces from their config groups, run the loop.
"""

from __future__ import annotations

import gc
import logging
import sys

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate, to_absolute_path
from omegaconf import DictConfig

from infoflow.allocator import retain_freed_memory
from infoflow.config import (
    ConfigError,
    deterministic_kernels,
    hidden_gpus,
    resolve_device,
    validate,
)
from infoflow.data import DataError
from infoflow.job import (
    cache_dir,
    job_config_hash,
    new_run_id,
    resolve_threads,
    result_config,
    training_key,
    validate_job_keys,
)
from infoflow.results import GROUPS, JOB_TABLE, JobTable, flatten_config
from infoflow.sharing import SharedEstimates, estimate_spec
from infoflow.store import JobDir, TrainCache
from infoflow.train import TrainerConfig, TrainingDiverged, describe, run

log = logging.getLogger("infoflow")

# torch, Hydra and pandas leave ~370k objects that live as long as the process: moved to the
# permanent generation, they are not re-scanned by every full collection (0.68 s -> 0.33 s of
# collections in the 8-job Fashion-MNIST sweep)
gc.freeze()


def job_meta(cfg: DictConfig, run_id: str) -> dict:
    """The columns every row of this job carries: run id, group choices, config leaves."""
    choices = HydraConfig.get().runtime.choices
    meta = {"run_id": run_id}
    meta.update({g: choices.get(g) for g in GROUPS})
    meta.update(flatten_config(result_config(cfg)))
    return meta


def refuse(err: Exception, job: JobDir, multirun: bool) -> None:
    """Stop a job before training: a single run exits with the message; in a sweep the job is
    marked failed with it and the other jobs go on (the sweep exits 1 after its summary)."""
    if not multirun:
        sys.exit(f"infoflow: error: {err}")
    log.error("infoflow: error: %s", err)
    job.run_id = job.run_id or new_run_id()
    job.write_status("failed", 0, 0, error=str(err))


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        validate(cfg)
        validate_job_keys(cfg)
        device = resolve_device(cfg.device)
    except ConfigError as err:
        return refuse(err, JobDir(hydra_cfg.runtime.output_dir, run_id=new_run_id()), multirun)
    job = JobDir(hydra_cfg.runtime.output_dir, config_hash=job_config_hash(cfg))
    status = job.read_status() if cfg.resume else None
    if job.same_job(status) and status["status"] == "completed":
        log.info("resume: %s is completed, skipping", job.path)
        return
    job.run_id = status["run_id"] if job.same_job(status) else new_run_id()
    if cfg.device == "auto" and device.type == "cpu" and (hidden := hidden_gpus()):
        log.warning("device=auto runs on the CPU: %s", hidden)
    deterministic_kernels(device)
    torch.set_num_threads(resolve_threads(cfg.threads, hydra_cfg.launcher))
    malloc = "retain" if cfg.malloc == "retain" and retain_freed_memory() else "system"
    try:
        data = instantiate(cfg.data).to(device)
    except DataError as err:
        return refuse(err, job, multirun)
    torch.manual_seed(cfg.seed)
    model = instantiate(cfg.model, in_shape=data.in_shape, n_classes=data.n_classes).to(device)
    optimizer = instantiate(cfg.optimizer)(model.parameters())
    estimator = instantiate(cfg.estimator)
    table = JobTable(job.path / JOB_TABLE, job_meta(cfg, job.run_id))
    sweep_dir = to_absolute_path(hydra_cfg.sweep.dir) if multirun else None
    cache_root = cache_dir(cfg, sweep_dir, cwd=hydra_cfg.runtime.cwd)
    cache = TrainCache(cache_root, training_key(cfg, device)) if cache_root else None
    spec = estimate_spec(result_config(cfg))
    shared = SharedEstimates(cache, spec, build=instantiate) if cache else None
    log.info(
        "%s on %s (%s), %s, device %s, %d threads, malloc %s, cache %s -> %s",
        hydra_cfg.runtime.choices["model"],
        data.name,
        data.in_shape,
        type(optimizer).__name__,
        device,
        torch.get_num_threads(),
        malloc,
        cache.dir if cache else "off",
        table.path,
    )
    try:
        run(
            model,
            optimizer,
            data,
            estimator,
            TrainerConfig(**cfg.trainer),
            cfg.seed,
            table.append,
            probe_output=cfg.probe.output,
            job=job,
            cache=cache,
            resume=cfg.resume,
            shared=shared,
        )
    except Exception as err:
        # status.json says "failed" and why; in a sweep the other jobs go on (an exception
        # here would stop Hydra from merging the sweep), the sweep's summary lists the failure
        log.error("job failed: %s", describe(err), exc_info=not isinstance(err, TrainingDiverged))
        if not multirun:
            sys.exit(f"infoflow: error: {describe(err)}")


if __name__ == "__main__":
    main()
    gc.freeze()  # exit without a last collection over every object left (about 0.8 s)
