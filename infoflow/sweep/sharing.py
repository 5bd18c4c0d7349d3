"""One evaluation pass for every job of a sweep that sees the same networks.

Jobs with the same training key (:func:`infoflow.sweep.job.training_key`) train once through the
training cache, so they see bit-identical networks at every evaluation point; what differs is
what they measure on them, their *estimate spec* (``estimator``, ``probe``). Before any job
runs, infoflow's launcher (:mod:`infoflow.sweep.launcher`), which makes every job's spec anyway,
writes per training config shared by several specs the list of those specs (:func:`plan_sweep`)::

    <cache root>/plans/<training config hash>.json              {"specs": [spec, ...]}
    <cache root>/<training key>/estimates/<spec hash>/point_XXXX.pt   a spec's rows at a point

At each point, the first job of the group to evaluate runs the evaluation split through the net
once, estimates its own rows and those of every other spec of the plan, and stores the others'
rows; their jobs read them instead of evaluating again. The rows are exactly what those jobs
would have computed (same net, same probes, same estimator code: tested). Rows live under the
full training key (data content and code version included) and a spec's folder is keyed by
its config and the code version, so stored rows are never served to other data or code.
Without a plan (a single run, another launcher) each job estimates for itself and still reuses
rows stored earlier.

An error in another spec's estimator is logged and left to that job, which then estimates for
itself and fails with its own message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from infoflow import io
from infoflow.sweep.cache import TrainCache

log = logging.getLogger(__name__)

PLANS_DIR = "plans"
ROWS_DIR = "estimates"


def plan_path(cache_root: str | Path, training_config: Mapping[str, Any]) -> Path:
    """Where the plan of the jobs training ``training_config`` lives."""
    return Path(cache_root) / PLANS_DIR / f"{io.config_hash(dict(training_config))[:20]}.json"


def spec_hash(spec: Mapping[str, Any], code: str) -> str:
    return io.config_hash({"spec": dict(spec), "code": code})[:20]


# ---------------------------------------------------------------------------------------------
# the plan, written by infoflow's launcher before any job runs


def plan_sweep(jobs: Iterable[tuple[Path | None, Mapping, Mapping]]) -> int:
    """Write a plan for every training config that several estimate specs share.

    Parameters
    ----------
    jobs
        ``(cache root or None, training config, estimate spec)`` per valid job of the sweep
        (see :func:`infoflow.sweep.launcher.plan_jobs`).

    Returns
    -------
    int
        The number of training configs whose jobs will share evaluation passes.
    """
    groups: dict[Path, dict[str, dict]] = {}
    for root, training, spec in jobs:
        if root is not None:
            groups.setdefault(plan_path(root, training), {})[io.config_hash(dict(spec))] = dict(
                spec
            )
    shared = 0
    for path, specs in groups.items():
        if len(specs) > 1:
            io.write_json({"specs": list(specs.values())}, path)
            shared += 1
    return shared


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
        The job's training cache (its folder holds the rows).
    plan : path
        The plan of the job's training config (:func:`plan_path`), absent without one.
    spec : mapping
        This job's estimate spec (:func:`estimate_spec`).
    build : callable
        estimator config (mapping) -> estimator function; used for the other specs.
    """

    def __init__(
        self,
        cache: TrainCache,
        plan: Path,
        spec: Mapping[str, Any],
        build: Callable[[Any], Estimator],
    ) -> None:
        self.code = io.code_version()
        self.dir = cache.dir / ROWS_DIR
        self.key = spec_hash(spec, self.code)
        planned, _ = io.load_json(plan)
        self.siblings: list[Sibling] = []
        for other in (planned or {}).get("specs", []):
            key = spec_hash(other, self.code)
            if key == self.key or _pass(other) != _pass(spec):
                continue  # another batch size rounds differently, other samples: another pass
            self.siblings.append(Sibling(key, _build_or_none(build, other), _probes_output(other)))

    @property
    def needs_output(self) -> bool:
        """Whether some other spec measures the softmax output."""
        return any(s.probe_output for s in self.siblings)

    def path(self, key: str, index: int) -> Path:
        return self.dir / key / f"point_{index:04d}.pt"

    def load(self, index: int) -> Rows | None:
        """This job's rows at point ``index`` if another job stored them, else None."""
        stored = io.load_torch(self.path(self.key, index))
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
            io.save_torch({"rows": rows, "time": time.time()}, self.path(s.key, index))
            done += 1
        return done


def _probes_output(spec: Mapping[str, Any]) -> bool:
    return bool((spec.get("probe") or {}).get("output", False))


def _pass(spec: Mapping[str, Any]) -> tuple:
    """What makes two specs' evaluation passes one: the batch size, the samples and the layers
    probed."""
    probe = spec.get("probe") or {}
    layers = probe.get("layers")
    return (
        probe.get("batch_size"),
        probe.get("samples", "eval"),
        None if layers is None else tuple(layers),
    )


def _build_or_none(build: Callable[[Any], Estimator], spec: Mapping[str, Any]) -> Estimator | None:
    try:
        return build(spec["estimator"])
    except Exception as err:
        log.debug("cannot build another job's estimator %s: %s", spec.get("estimator"), err)
        return None
