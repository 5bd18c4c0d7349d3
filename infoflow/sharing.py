"""One evaluation pass for every job of a sweep that sees the same networks.

Jobs with the same training key (see :func:`infoflow.job.training_key`) train once through the
training cache, so they see bit-identical networks at every evaluation point; what differs is
what they estimate from them: the estimator and its keys, ``probe.output``. Before any job
runs, the sweep's callback expands the sweep as Hydra's basic sweeper does, composes every
job's config and writes, per training key, the list of those *estimate specs*::

    <cache.dir>/<key>/estimates.json         {"specs": [spec, ...]}
    <cache.dir>/<key>/estimates/<spec hash>/point_XXXX.pt   rows of that spec at point XXXX

At each point, the first job of the group to evaluate runs the evaluation split through the net
once, estimates its own rows and those of every other spec in the list, and stores the others'
rows; their jobs read them instead of evaluating again. The rows are exactly what those jobs
would have computed (same net, same probes, same estimator code: tested). A spec's folder is
keyed by its config and a hash of the estimator code, so stored rows are never served to other
code. Turned off with the training cache (``cache.enabled=false``); without a plan (a single
run, another sweeper) each job estimates for itself and still reuses rows stored earlier.

An error in another spec's estimator is logged and left to that job, which then estimates for
itself and fails with its own message.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from infoflow.store import TrainCache, config_hash, load_json, load_torch, save_json, save_torch

log = logging.getLogger(__name__)

PLAN_FILE = "estimates.json"
ROWS_DIR = "estimates"
ESTIMATOR_CODE = ("estimators",)  # folders under infoflow/ whose sources shape the estimates
TRAINING_PART = ("model", "data", "optimizer", "seed", "device")  # in the training key
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def estimator_code_version() -> str:
    """A hash of the estimator sources with the NumPy and torch versions."""
    here = Path(__file__).parent
    digest = hashlib.sha256(f"{np.__version__} {torch.__version__}".encode())
    for folder in ESTIMATOR_CODE:
        for path in sorted((here / folder).glob("*.py")):
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def estimate_spec(result_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """What a job estimates from the networks of its training key.

    Parameters
    ----------
    result_cfg : mapping
        The job's config without runtime keys (:func:`infoflow.job.result_config`).

    Returns
    -------
    dict
        Every top-level key that is not part of the training key (the estimator, ``probe``,
        and any other), plus ``trainer.eval_batch_size``.
    """
    spec = {k: v for k, v in result_cfg.items() if k not in (*TRAINING_PART, "trainer")}
    spec["eval_batch_size"] = result_cfg.get("trainer", {}).get("eval_batch_size")
    return spec


def spec_hash(spec: Mapping[str, Any], code: str) -> str:
    return config_hash({"spec": dict(spec), "code": code})[:20]


# ---------------------------------------------------------------------------------------------
# the plan, written by the sweep's callback before any job runs


def sweep_overrides(config: DictConfig) -> list[list[str]] | None:
    """Every job's overrides, as Hydra's basic sweeper expands them; None for other sweepers."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if OmegaConf.select(config, "hydra.sweeper._target_") != BASIC_SWEEPER:
        return None
    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    args = [f"{k}={v}" for k, v in params.items()]
    args += list(OmegaConf.select(config, "hydra.overrides.task") or [])
    loader = GlobalHydra.instance().config_loader()
    parsed = OverridesParser.create(config_loader=loader).parse_overrides(args)
    return BasicSweeper.split_arguments(parsed, None)[0]


def plan_sweep(config: DictConfig, compose: Callable[[list[str]], DictConfig] | None = None) -> int:
    """Write ``estimates.json`` for every training key of the sweep shared by several specs.

    Parameters
    ----------
    config : DictConfig
        The multirun's config (``on_multirun_start``), with its ``hydra`` node.
    compose : callable, optional
        overrides -> job config; default: ``hydra.compose`` of the sweep's config name.

    Returns
    -------
    int
        The number of training keys whose jobs will share evaluation passes. Never raises:
        a sweep that cannot be planned runs as without sharing (logged at debug level).
    """
    t0 = time.perf_counter()
    try:
        jobs = sweep_overrides(config)
        if not jobs or len(jobs) < 2:
            return 0
        compose = compose or _hydra_compose(str(config.hydra.job.config_name))
        groups: dict[Path, dict[str, dict]] = {}
        for overrides in jobs:
            found = _job_group(compose(overrides), config)
            if found is not None:
                folder, spec = found
                groups.setdefault(folder, {})[config_hash(spec)] = spec
        shared = 0
        for folder, specs in groups.items():
            if len(specs) > 1:
                save_json({"specs": list(specs.values())}, folder / PLAN_FILE)
                shared += 1
        if shared:
            log.info(
                "%d training key(s) share their evaluation passes between jobs (planned in %.2fs)",
                shared,
                time.perf_counter() - t0,
            )
        return shared
    except Exception as err:  # planning is an optimisation: never stop a sweep for it
        log.debug("no shared evaluation plan: %s: %s", type(err).__name__, err)
        return 0


def _hydra_compose(config_name: str) -> Callable[[list[str]], DictConfig]:
    from hydra import compose

    return lambda overrides: compose(config_name=config_name, overrides=overrides)


def _job_group(cfg: DictConfig, sweep_config: DictConfig) -> tuple[Path, dict] | None:
    """(the cache folder of the job's training key, its estimate spec), or None when the job
    has an invalid config or no training cache."""
    from hydra.utils import to_absolute_path

    from infoflow.config import ConfigError, resolve_device, validate
    from infoflow.job import cache_dir, result_config, training_key, validate_job_keys

    try:
        validate(cfg)
        validate_job_keys(cfg)
        device = resolve_device(cfg.device)
    except ConfigError:
        return None  # that job fails on its own, with its message
    sweep_dir = to_absolute_path(str(sweep_config.hydra.sweep.dir))
    root = cache_dir(cfg, sweep_dir, cwd=str(sweep_config.hydra.runtime.cwd))
    if root is None:
        return None
    cache = TrainCache(root, training_key(cfg, device))
    return cache.dir, estimate_spec(result_config(cfg))


# ---------------------------------------------------------------------------------------------
# the job's side


Rows = list[dict[str, Any]]
Estimator = Callable[..., dict]


@dataclass
class Sibling:
    """Another spec of this training key: its estimator and whether it probes the output."""

    key: str  # spec hash: its rows' folder
    estimator: Estimator | None  # None: could not be built; left to its own job
    probe_output: bool


class SharedEstimates:
    """This job's access to the rows stored per spec and point under its training key.

    Parameters
    ----------
    cache : TrainCache
        The job's training cache (its folder holds the plan and the rows).
    spec : mapping
        This job's estimate spec (:func:`estimate_spec`).
    build : callable
        estimator config (mapping) -> estimator function; used for the other specs.
    """

    def __init__(
        self,
        cache: TrainCache,
        spec: Mapping[str, Any],
        build: Callable[[Any], Estimator],
    ) -> None:
        self.code = estimator_code_version()
        self.dir = cache.dir / ROWS_DIR
        self.key = spec_hash(spec, self.code)
        plan = load_json(cache.dir / PLAN_FILE) or {}
        self.siblings: list[Sibling] = []
        for other in plan.get("specs", []):
            key = spec_hash(other, self.code)
            if key == self.key or other.get("eval_batch_size") != spec.get("eval_batch_size"):
                continue  # another eval batch size rounds differently: not the same pass
            self.siblings.append(Sibling(key, _build_or_none(build, other), _probes_output(other)))

    @property
    def needs_output(self) -> bool:
        """Whether some other spec measures the softmax output."""
        return any(s.probe_output for s in self.siblings)

    def path(self, key: str, index: int) -> Path:
        return self.dir / key / f"point_{index:04d}.pt"

    def load(self, index: int) -> Rows | None:
        """This job's rows at point ``index`` if another job stored them, else None."""
        stored = load_torch(self.path(self.key, index))
        return list(stored["rows"]) if stored else None

    def estimate_others(
        self,
        index: int,
        make_rows: Callable[[Estimator, Sequence[torch.Tensor], bool], Rows],
        layers: Sequence[torch.Tensor],
    ) -> int:
        """Estimate and store the rows of every other spec missing at point ``index``.

        ``make_rows(estimator, layers, probe_output)`` measures one spec's rows from this
        point's probes (``layers`` holds the softmax output last when any spec needs it).
        Returns the number of specs estimated.
        """
        done = 0
        for s in self.siblings:
            if s.estimator is None or self.path(s.key, index).exists():
                continue
            try:
                rows = make_rows(s.estimator, layers, s.probe_output)
            except Exception as err:  # that job will meet it and report it
                log.warning("estimate for another job of this training key failed: %s", err)
                s.estimator = None
                continue
            save_torch({"rows": rows, "time": time.time()}, self.path(s.key, index))
            done += 1
        return done


def _probes_output(spec: Mapping[str, Any]) -> bool:
    return bool((spec.get("probe") or {}).get("output", False))


def _build_or_none(build: Callable[[Any], Estimator], spec: Mapping[str, Any]) -> Estimator | None:
    try:
        return build(spec["estimator"])
    except Exception as err:
        log.debug("cannot build another job's estimator %s: %s", spec.get("estimator"), err)
        return None
