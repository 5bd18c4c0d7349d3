"""``python -m infoflow``: one job = one network, one data set, one optimizer, one seed.

Wiring only: validate the config, build the pieces from their config groups, run the loop.
"""

from __future__ import annotations

import logging
import sys
import uuid
from datetime import datetime
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig

from infoflow.config import ConfigError, resolve_device, validate
from infoflow.data import DataError
from infoflow.results import GROUPS, JOB_TABLE, JobTable, flatten_config
from infoflow.train import TrainerConfig, run

log = logging.getLogger("infoflow")


def job_meta(cfg: DictConfig) -> dict:
    """The columns every row of this job carries: run id, group choices, config leaves."""
    choices = HydraConfig.get().runtime.choices
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    meta = {"run_id": f"{stamp}-{uuid.uuid4().hex[:10]}"}
    meta.update({g: choices.get(g) for g in GROUPS})
    meta.update(flatten_config(cfg))
    return meta


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        validate(cfg)
        device = resolve_device(cfg.device)
        data = instantiate(cfg.data).to(device)
    except (ConfigError, DataError) as err:
        sys.exit(f"infoflow: error: {err}")
    torch.manual_seed(cfg.seed)
    model = instantiate(cfg.model, in_shape=data.in_shape, n_classes=data.n_classes).to(device)
    optimizer = instantiate(cfg.optimizer)(model.parameters())
    estimator = instantiate(cfg.estimator)
    out = Path(HydraConfig.get().runtime.output_dir) / JOB_TABLE
    table = JobTable(out, job_meta(cfg))
    log.info(
        "%s on %s (%s), %s, device %s -> %s",
        HydraConfig.get().runtime.choices["model"],
        data.name,
        data.in_shape,
        type(optimizer).__name__,
        device,
        out,
    )
    run(
        model,
        optimizer,
        data,
        estimator,
        TrainerConfig(**cfg.trainer),
        cfg.seed,
        table.append,
        probe_output=cfg.probe.output,
    )


if __name__ == "__main__":
    main()
