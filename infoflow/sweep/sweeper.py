"""infoflow's Hydra sweeper: Hydra's basic sweeper, less its second composition of every job.

``conf/config.yaml`` makes it the default (``override hydra/sweeper: infoflow``); the plugin
class in ``hydra_plugins.infoflow_sweeper`` delegates here. It expands a sweep as Hydra's basic
sweeper does (the cartesian product of the swept values, ``hydra.sweeper.params`` first, the
jobs in the same order, in batches of ``max_batch_size``), saves ``multirun.yaml`` and hands
each batch to the launcher.

The one difference: Hydra's basic sweeper composes every job's config once to check the
batch, and the launcher composes it again to run it. infoflow's launcher composes every job
of the batch before it starts any (its plan needs them all), which is that same check, so
under it the sweeper leaves the batch to the launcher: one composition per job instead of two
(about 60 ms each here, 40 of them in a 10-seed sweep of the four nets, where they were 15%
of the wall time). Under any other launcher the batch is checked as by Hydra's sweeper.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional  # noqa: UP035 - Hydra's structured configs

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf

log = logging.getLogger(__name__)

#: the ``_target_`` of the sweepers whose jobs :func:`expand` knows in advance
SWEEPER = "hydra_plugins.infoflow_sweeper.infoflow_sweeper.InfoflowSweeper"
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"  # compared only


@dataclass
class SweeperConf:
    """``hydra/sweeper: infoflow``; the keys of Hydra's basic sweeper."""

    _target_: str = SWEEPER
    # jobs handed to the launcher at once; null: all of them
    max_batch_size: Optional[int] = None  # noqa: UP045 - Hydra's structured configs
    # swept values set in a config (key: "v1,v2"), before those of the command line
    params: Optional[Dict[str, str]] = None  # noqa: UP006, UP045


def expand(
    params: Mapping[str, str] | None, arguments: Sequence[str], config_loader: Any = None
) -> list[list[str]]:
    """Every job's overrides, in launch order: the cartesian product of the swept values of
    ``params`` then ``arguments`` (a key given twice keeps its first place and its last
    values, as in Hydra's basic sweeper).

    Raises ``HydraException`` for a sweep that is not a list of values (an interval).
    """
    args = [f"{k}={v}" for k, v in (params or {}).items()] + list(arguments)
    overrides = OverridesParser.create(config_loader=config_loader).parse_overrides(args)
    choices: dict[str, list[str]] = {}
    for o in overrides:
        key = o.get_key_element()
        if not o.is_sweep_override():
            choices[key] = [f"{key}={o.get_value_element_as_str()}"]
        elif o.is_discrete_sweep():
            choices[key] = [f"{key}={v}" for v in o.sweep_string_iterator()]
        else:
            assert o.value_type is not None
            raise HydraException(f"the sweeper does not support sweep type: {o.value_type.name}")
    return [list(job) for job in itertools.product(*choices.values())]


def batches(jobs: list[list[str]], max_batch_size: int | None) -> list[list[list[str]]]:
    """The jobs in launch batches of ``max_batch_size`` (None or -1: one batch)."""
    if max_batch_size is None or max_batch_size == -1:
        return [jobs]
    if max_batch_size <= 0:
        raise HydraException(f"hydra.sweeper.max_batch_size must be > 0, got {max_batch_size}")
    return [jobs[i : i + max_batch_size] for i in range(0, len(jobs), max_batch_size)]


def sweep(sweeper: Any, arguments: list[str]) -> list[Sequence[Any]]:
    """``Sweeper.sweep`` of infoflow's sweeper plugin: the batches launched one after the other;
    a failed job's exception is raised after its batch, as by Hydra's basic sweeper."""
    config, launcher, context = sweeper.config, sweeper.launcher, sweeper.hydra_context
    jobs = expand(sweeper.params, arguments, context.config_loader)
    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(config, sweep_dir / "multirun.yaml")
    returns: list[Sequence[Any]] = []
    first = 0
    for batch in batches(jobs, sweeper.max_batch_size):
        if not getattr(launcher, "composes_every_job_first", False):
            sweeper.validate_batch_is_legal(batch)  # the launcher would start jobs one by one
        results = launcher.launch(batch, initial_job_idx=first)
        for r in results:
            _ = r.return_value  # raises the job's exception, as Hydra's basic sweeper does
        first += len(batch)
        returns.append(results)
    return returns
