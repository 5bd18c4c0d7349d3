"""A sweep's job configs, composed by Hydra once per group of seeds.

Hydra composes a job's config from its overrides in about 60 ms here (reading the config
files, building the defaults tree, merging): for a 10-seed sweep of four nets, 40 compositions
that differ only in the value of ``seed``, 2.4 s of a sweep that trains in about 10. Jobs whose
overrides are the same but for one plain ``seed=<value>`` (the same place, no ``+``/``~``) get
the config Hydra composed for the group's first job, copied, with what an override of a value
changes in a composition (:func:`derive`): the value, set as Hydra sets it
(``OmegaConf.update(cfg, "seed", value, merge=True)``), the job's ``hydra.overrides.task``, and
``hydra.job.override_dirname`` made as Hydra makes it.

That is Hydra's composition, checked, not assumed: the group's last job is composed too, and
its derived config must equal it (every key and value, unresolved) for the others to be
derived; else every job of the group is composed, and the debug log says so. A group of two
is composed as it is. Only Hydra's public API is used (the ``HydraContext``'s config loader,
the override parser, OmegaConf).
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Sequence
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

#: the key whose values a group's jobs may differ in
SEED = "seed"
#: the fewest jobs in a group worth deriving: the first and the last are composed anyway
MIN_GROUP = 3


def compose_jobs(
    loader: Any, master: DictConfig, job_overrides: Sequence[Sequence[str]]
) -> list[DictConfig]:
    """Every job's config, in order, as ``loader.load_sweep_config(master, overrides)`` gives
    it; composed once per group of jobs that differ only in their ``seed`` value (see the
    module's notes).

    Parameters
    ----------
    loader
        Hydra's config loader (``HydraContext.config_loader``).
    master : DictConfig
        The sweep's config (the launcher's).
    job_overrides : sequence of sequences of str
        Each job's overrides, as the sweeper hands them to the launcher.
    """
    parser = OverridesParser.create()
    parsed = [parser.parse_overrides(list(o)) for o in job_overrides]
    groups: dict[tuple[str, ...], list[int]] = {}
    alone: list[int] = []
    for i, overrides in enumerate(parsed):
        at = _seed_at(overrides)
        if at is None:
            alone.append(i)
        else:
            rest = [o.input_line or "" for o in overrides]
            rest[at] = f"{SEED}=*"
            groups.setdefault(tuple(rest), []).append(i)
    configs: dict[int, DictConfig] = {}

    def compose(i: int) -> DictConfig:
        configs[i] = loader.load_sweep_config(master, list(job_overrides[i]))
        return configs[i]

    for i in alone:
        compose(i)
    for members in groups.values():
        if len(members) < MIN_GROUP:
            for i in members:
                compose(i)
            continue
        first, last = members[0], members[-1]
        base = compose(first)
        if not same(derive(base, master, parsed[last]), compose(last)):
            log.debug("derived config of job %d differs from Hydra's: composing its group", last)
            for i in members[1:-1]:
                compose(i)
            continue
        for i in members[1:-1]:
            configs[i] = derive(base, master, parsed[i])
    return [configs[i] for i in range(len(job_overrides))]


def _seed_at(overrides: Sequence[Override]) -> int | None:
    """The place of the one plain ``seed=<value>`` among a job's overrides, or None."""
    places = [k for k, o in enumerate(overrides) if o.key_or_group == SEED]
    if len(places) != 1:
        return None
    o = overrides[places[0]]
    plain = o.type == OverrideType.CHANGE and o.package is None and not o.is_sweep_override()
    return places[0] if plain else None


def derive(base: DictConfig, master: DictConfig, overrides: Sequence[Override]) -> DictConfig:
    """``base`` (a composed job config) as Hydra composes it for ``overrides``, which differ
    from base's only in the ``seed`` value: a copy with that value, the job's task overrides
    and their ``override_dirname``."""
    at = _seed_at(overrides)
    assert at is not None
    cfg = copy.deepcopy(base)
    OmegaConf.update(cfg, SEED, overrides[at].value(), merge=True)  # as Hydra applies it
    task = [o for o in overrides if not o.is_hydra_override()]
    cfg.hydra.overrides.task = [o.input_line for o in task]
    cfg.hydra.job.override_dirname = override_dirname(task, cfg.hydra.job.config.override_dirname)
    OmegaConf.copy_cache(from_config=master, to_config=cfg)  # as load_sweep_config does
    return cfg


def override_dirname(task: Sequence[Override], how: DictConfig) -> str:
    """``hydra.job.override_dirname``: the task overrides but ``how.exclude_keys``, sorted,
    joined by ``how.item_sep``, each ``=`` written ``how.kv_sep``."""
    lines = sorted(o.input_line or "" for o in task if o.key_or_group not in how.exclude_keys)
    return re.sub("[=]", how.kv_sep, how.item_sep.join(lines))


def same(a: DictConfig, b: DictConfig) -> bool:
    """Two configs with the same keys and values, interpolations unresolved."""
    return OmegaConf.to_container(a, resolve=False) == OmegaConf.to_container(b, resolve=False)
