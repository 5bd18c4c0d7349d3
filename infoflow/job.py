"""Job-level settings read from the composed config: validation of the job keys, identities
(config hash, training key, run id), the training-cache folder and the thread count.

Keys handled here (``conf/config.yaml``):

``resume`` (bool)
    re-running into the same directory skips completed jobs and resumes interrupted ones.
``threads`` (``auto`` or int >= 1)
    torch threads of this job; ``auto`` = ``OMP_NUM_THREADS`` if set, else the launcher's share
    of the cores (``cores // n_jobs`` under joblib, ``cpus_per_task`` under submitit), else
    every core.
``malloc`` (``retain`` or ``system``)
    ``retain`` keeps freed memory in the process (glibc's ``mallopt``, see
    :mod:`infoflow.allocator`): no page faults on every training step's tensors; ``system``
    leaves glibc's defaults. Process-wide: once a job of a sweep has set ``retain``, later jobs
    in that process keep it.
``cache.enabled`` (bool), ``cache.dir`` (path or null)
    the training cache; ``null`` means ``<sweep dir>/.train_cache`` in a multirun and no cache
    in a single run (its one job keeps its own checkpoint).

These keys change how a job runs, not its numbers, so they are left out of the table, the
config hash and the training key (``RUNTIME_KEYS``).
"""

from __future__ import annotations

import os
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from infoflow.allocator import MALLOC_MODES
from infoflow.config import ConfigError
from infoflow.schedule import canonical, parse_eval
from infoflow.store import code_version, config_hash

RUNTIME_KEYS = ("resume", "threads", "malloc", "cache")
EVAL_ONLY_TRAINER_KEYS = ("eval_batch_size",)
DATA_KEYS_NOT_SHAPING = ("download",)


def validate_job_keys(cfg: DictConfig) -> None:
    """Check ``trainer.eval``, ``resume``, ``threads``, ``malloc`` and ``cache.*``; raise
    ConfigError."""
    parse_eval(OmegaConf.select(cfg, "trainer.eval", default="epoch"))
    resume = OmegaConf.select(cfg, "resume", default=False)
    if not isinstance(resume, bool):
        raise ConfigError(f"resume must be true or false, got {resume!r}")
    threads = OmegaConf.select(cfg, "threads", default="auto")
    if threads != "auto" and not (
        isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1
    ):
        raise ConfigError(f"threads must be 'auto' or an integer >= 1, got {threads!r}")
    malloc = OmegaConf.select(cfg, "malloc", default="retain")
    if malloc not in MALLOC_MODES:
        raise ConfigError(f"malloc must be one of {list(MALLOC_MODES)}, got {malloc!r}")
    enabled = OmegaConf.select(cfg, "cache.enabled", default=True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"cache.enabled must be true or false, got {enabled!r}")
    where = OmegaConf.select(cfg, "cache.dir", default=None)
    if where is not None and not (isinstance(where, str) and where.strip()):
        raise ConfigError(f"cache.dir must be null or a non-empty path, got {where!r}")


def result_config(cfg: DictConfig) -> dict[str, Any]:
    """The config without the runtime keys, ``trainer.eval`` in its canonical string form."""
    c = OmegaConf.to_container(cfg, resolve=True)
    for key in RUNTIME_KEYS:
        c.pop(key, None)
    c.pop("hydra", None)
    if isinstance(c.get("trainer"), dict):
        c["trainer"]["eval"] = canonical(c["trainer"].get("eval", "epoch"))
    return c


def job_config_hash(cfg: DictConfig) -> str:
    """Identifies a job's results: resume and skip only trust files with the same hash."""
    return config_hash(result_config(cfg))


def training_key(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    """Everything that determines the trained states: what the training cache is keyed by.

    Model, data (less ``download``), optimizer, trainer (less the eval-only batch size, with
    the schedule), seed, the device type and a hash of the training code with the torch
    version. Estimator and probe keys are not in it: jobs that differ only there share states.
    """
    c = result_config(cfg)
    trainer = {k: v for k, v in c["trainer"].items() if k not in EVAL_ONLY_TRAINER_KEYS}
    data = {k: v for k, v in c["data"].items() if k not in DATA_KEYS_NOT_SHAPING}
    return {
        "model": c["model"],
        "data": data,
        "optimizer": c["optimizer"],
        "trainer": trainer,
        "seed": c["seed"],
        "device": device.type,
        "code": code_version(),
    }


def new_run_id() -> str:
    """Unique per job across sweeps: time stamp and 40 random bits."""
    return f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:10]}"


def cache_dir(cfg: DictConfig, sweep_dir: str | None, cwd: str | None = None) -> Path | None:
    """The training cache's root, or None when the cache is off.

    ``sweep_dir`` is the multirun's sweep directory (None in a single run); a relative
    ``cache.dir`` is taken from ``cwd`` (the directory the command was started in).
    """
    if not OmegaConf.select(cfg, "cache.enabled", default=True):
        return None
    where = OmegaConf.select(cfg, "cache.dir", default=None)
    if where is not None:
        return Path(cwd or os.getcwd()) / os.path.expanduser(where)
    if sweep_dir is None:
        return None
    return Path(sweep_dir).absolute() / ".train_cache"


def cores() -> int:
    """CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1  # pragma: no cover


def resolve_threads(setting: Any, launcher: Any = None) -> int:
    """Torch threads for this job so that parallel jobs do not oversubscribe the cores.

    Parameters
    ----------
    setting : "auto" or int
        ``threads``.
    launcher : mapping or None
        ``hydra.launcher`` (``n_jobs`` of joblib, ``cpus_per_task`` of submitit).

    Returns
    -------
    int
        ``setting`` if an int; for ``auto``: ``OMP_NUM_THREADS`` if set, else
        ``cpus_per_task``, else ``max(1, cores // n_jobs)`` (joblib's negative ``n_jobs``
        counts from the core count), else every core.
    """
    if setting != "auto":
        return int(setting)
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) >= 1:
        return int(env)
    n = cores()
    launcher = launcher or {}
    cpus = launcher.get("cpus_per_task") if hasattr(launcher, "get") else None
    if isinstance(cpus, int) and cpus >= 1:
        return min(cpus, n)
    n_jobs = launcher.get("n_jobs") if hasattr(launcher, "get") else None
    if isinstance(n_jobs, int) and n_jobs != 0:
        parallel = n_jobs if n_jobs > 0 else max(1, n + 1 + n_jobs)
        return max(1, n // min(parallel, n))
    return n
