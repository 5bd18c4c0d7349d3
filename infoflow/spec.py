"""A job's config, once: validated into a frozen :class:`JobSpec` that everything else reads.

This module owns the config schema. A composed config has three parts (``conf/config.yaml``):

- what is trained: ``model``, ``data``, ``optimizer``, ``trainer``, ``seed``
  (:data:`TRAINING_KEYS`); with the device type, the data's content fingerprint and the code
  version they make the *training key*: jobs with equal keys see bit-identical networks, so the
  training cache trains them once;
- what is measured on those networks: ``estimator`` and ``probe`` (:data:`ESTIMATE_KEYS`), the
  job's *estimate spec*;
- how it runs: the ``runtime`` node (device, threads, resume, cache), left out of the tables and
  of every key as a whole.

The launcher's plan and the job both consume the spec; nothing downstream converts or
re-validates the config. Every rule broken raises :class:`ConfigError`, whose message names the
key, the rule and the value.

Imports: the base modules, :mod:`infoflow.training` (its option names and device rules) and
:mod:`infoflow.estimators` (their parameter rules). Never the sweep machinery or the report.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from infoflow import io
from infoflow.errors import UserError
from infoflow.estimators import check_params as check_estimator_params
from infoflow.estimators.exact import SOFTMAX_RULES
from infoflow.training.data import PROBE_SAMPLES
from infoflow.training.device import resolve_device
from infoflow.training.models import ACTIVATIONS, INITS
from infoflow.training.schedule import canonical, parse_eval


class ConfigError(UserError, ValueError):
    """A config value breaks a rule; the message names the key, the rule and the value."""


# ---------------------------------------------------------------------------------------------
# the schema

#: the top-level keys of a job's config; anything else is a typo (``+modle=mlp1``)
TOP_LEVEL = ("model", "data", "optimizer", "estimator", "seed", "probe", "trainer", "runtime")
#: the config groups, whose chosen option names become the table's columns
GROUPS = ("model", "data", "optimizer", "estimator")
#: what is trained: jobs equal in these (and device, data content, code) train the same nets
TRAINING_KEYS = ("model", "data", "optimizer", "trainer", "seed")
#: what is measured on the trained nets
ESTIMATE_KEYS = ("estimator", "probe")
#: how a job runs: out of the tables and of every key
RUNTIME = "runtime"
#: keys of the nodes without a ``_target_``
NODE_KEYS = {
    "probe": ("layers", "output", "batch_size", "samples"),
    "trainer": ("epochs", "batch_size", "eval"),
    "runtime": ("device", "threads", "resume", "flush_s", "cache"),
    "runtime.cache": ("enabled", "dir", "wait_s"),
}
#: arguments a group's object gets from the job, not from its config
PROVIDED = {
    "model": ("in_shape", "n_classes"),
    "optimizer": ("params",),
    "estimator": ("T", "X", "Y"),
}
#: the largest seed: torch's generators take 64-bit seeds and the tables store int64
MAX_SEED = 2**63 - 1
#: the most epochs: the schedule lists every evaluation point up front
MAX_EPOCHS = 1_000_000


def _int_in(low: int, high: int | None = None) -> tuple[Callable[[Any], bool], str]:
    rule = f"must be an integer >= {low}" + (f" and <= {high}" if high is not None else "")
    return (
        lambda v: (
            isinstance(v, int)
            and not isinstance(v, bool)
            and v >= low
            and (high is None or v <= high)
        )
    ), rule


def _positive_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def _bool(v: Any) -> bool:
    return isinstance(v, bool)


#: key -> (test, rule). A key absent from the config is not checked; a key present and null
#: breaks its rule unless it is in :data:`NULLABLE`.
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seed": _int_in(0, MAX_SEED),
    "trainer.epochs": _int_in(1, MAX_EPOCHS),
    "trainer.batch_size": _int_in(1),
    "probe.batch_size": _int_in(1),
    "probe.output": (_bool, "must be true or false"),
    "probe.layers": (
        lambda v: (
            isinstance(v, list)
            and bool(v)
            and all((isinstance(n, str) and n) or type(n) is int for n in v)
        ),  # nn.Sequential: 0, 1
        "must be null (the model's default layers) or a non-empty list of module names or "
        "globs, e.g. [fc1,fc2] or ['layer*']",
    ),
    "estimator.max_units": _int_in(1),
    "optimizer.lr": (_positive_number, "must be a finite number > 0"),
    "model.activation": (
        lambda v: v in ACTIVATIONS,
        f"must be one of {', '.join(sorted(ACTIVATIONS))}",
    ),
    "model.channels": _int_in(1),
    "model.init": (lambda v: v in INITS, f"must be one of {', '.join(INITS)}"),
    "model.quantize": (
        lambda v: isinstance(v, int) and not isinstance(v, bool) and 2 <= v <= 16,
        "must be null (no quantization) or a bit width, an integer from 2 to 16",
    ),
    "estimator.bits": (
        lambda v: isinstance(v, int) and not isinstance(v, bool) and 2 <= v <= 16,
        "must be null (model.quantize's, or 8) or an integer from 2 to 16",
    ),
    "estimator.softmax": (
        lambda v: v in SOFTMAX_RULES,
        f"must be one of {', '.join(SOFTMAX_RULES)} (how exact counts the softmax output)",
    ),
    "probe.samples": (
        lambda v: v in PROBE_SAMPLES,
        f"must be one of {', '.join(PROBE_SAMPLES)} (the samples fed to the estimator)",
    ),
    "runtime.device": (
        lambda v: isinstance(v, str) and v.split(":")[0] in ("auto", "cpu", "cuda", "mps"),
        "must be auto, cpu, cuda, cuda:N or mps",
    ),
    "runtime.threads": (
        lambda v: v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1),
        "must be 'auto' or an integer >= 1",
    ),
    "runtime.resume": (_bool, "must be true or false"),
    "runtime.flush_s": (
        lambda v: _positive_number(v) or (v == 0 and not isinstance(v, bool)),
        "must be a finite number >= 0 (seconds between a job's flushes; 0: every evaluation)",
    ),
    "runtime.cache.enabled": (_bool, "must be true or false"),
    "runtime.cache.dir": (
        lambda v: isinstance(v, str) and bool(v.strip()),
        "must be null or a non-empty path",
    ),
    "runtime.cache.wait_s": (_positive_number, "must be a finite number > 0"),
}
NULLABLE = frozenset(
    {"runtime.cache.dir", "probe.layers", "model.weights", "model.quantize", "estimator.bits"}
)


# ---------------------------------------------------------------------------------------------
# the config as plain data


def plain(cfg: DictConfig | Mapping) -> dict[str, Any]:
    """The job's config as plain data, resolved, without ``hydra``: the one conversion."""
    if isinstance(cfg, DictConfig):  # hydra's node left out before resolving: its resolvers
        cfg = OmegaConf.to_container(  # need a running Hydra
            OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True
        )
    return {k: v for k, v in cfg.items() if k != "hydra"}


def result_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """What a job's results depend on: the plain config without ``runtime``, ``trainer.eval`` in
    its canonical string form (``epoch`` and ``every:1`` are one schedule)."""
    c = {k: v for k, v in config.items() if k not in (RUNTIME, "hydra")}
    if isinstance(c.get("trainer"), dict):
        c["trainer"] = {**c["trainer"], "eval": _canonical_or_raw(c["trainer"].get("eval"))}
    return c


def _canonical_or_raw(value: Any) -> Any:
    try:
        return canonical("epoch" if value is None else value)
    except ValueError:  # not a schedule: validation says so; the hash still names the job
        return value


def config_hash(cfg: DictConfig | Mapping) -> str:
    """Identifies a job's results: resume and skip only trust files with the same hash. Defined
    before validation, so that a job that fails its rules still owns its directory."""
    return io.config_hash(result_config(plain(cfg)))


def select(config: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    """``config["a"]["b"]`` for ``"a.b"``, or ``default`` where a part is missing."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


# ---------------------------------------------------------------------------------------------
# validation

_ABSENT = object()


def validate(cfg: DictConfig | Mapping) -> None:
    """Check the keys, then every value that has a rule; raise :class:`ConfigError` on the
    first one broken."""
    _check(plain(cfg))


def _check(config: Mapping[str, Any]) -> None:
    check_keys(config)
    for key, (test, rule) in RULES.items():
        value = select(config, key, _ABSENT)
        if value is _ABSENT or (value is None and key in NULLABLE):
            continue
        if value is None or not test(value):
            raise ConfigError(f"{key} {rule}, got {value!r}")
    hidden = select(config, "model.hidden")
    if hidden is not None and (
        not isinstance(hidden, list)
        or not hidden
        or not all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in hidden)
    ):
        raise ConfigError(f"model.hidden must be a non-empty list of integers >= 1, got {hidden!r}")
    estimator = config.get("estimator")
    try:
        if isinstance(estimator, Mapping):  # its own rules (range, bin_width, noise_var, ...)
            check_estimator_params(estimator)
        parse_eval(select(config, "trainer.eval", "epoch"))
        resolve_device(select(config, "runtime.device", "auto"))
    except ValueError as err:
        raise ConfigError(str(err)) from None


def check_keys(config: Mapping[str, Any]) -> None:
    """Refuse keys nothing reads: a top-level key outside :data:`TOP_LEVEL`, a key of a node
    outside its known keys, a key of a group option that its object does not take
    (``+estimator.bin=10``)."""
    extra = [k for k in config if k not in (*TOP_LEVEL, "hydra")]
    if extra:
        raise ConfigError(
            f"{extra[0]} is not a config key: the top-level keys are {', '.join(TOP_LEVEL)} "
            f"(a config group is chosen without '+', e.g. model=mlp1), got {extra[0]}="
            f"{config[extra[0]]!r}"
        )
    for node, keys in NODE_KEYS.items():
        sub = select(config, node)
        for key in sub if isinstance(sub, Mapping) else ():
            if key not in keys:
                raise ConfigError(
                    f"{node}.{key} is not a config key: {node} has {', '.join(keys)}, "
                    f"got {node}.{key}={sub[key]!r}"
                )
    for group in GROUPS:
        node = config.get(group)
        if not isinstance(node, Mapping) or "_target_" not in node:
            continue
        accepted = _arguments(str(node["_target_"]))
        if accepted is None:
            continue  # takes **kwargs: its own checks apply
        for key in node:
            key = str(key)
            if not key.startswith("_") and key not in accepted:
                allowed = [a for a in accepted if a not in PROVIDED.get(group, ())]
                own = group == "model" and not str(node["_target_"]).startswith("infoflow.")
                raise ConfigError(
                    f"{group}.{key} is not a key of {group} {node['_target_']}: its keys are "
                    f"{', '.join(allowed) or '(none)'}; got {group}.{key}={node[key]!r}"
                    + (
                        f" ({group}.{key} comes from the model option the _target_ replaced: "
                        "start from model=custom, e.g. model=custom model._target_="
                        f"{node['_target_']}, or keep your model's config in your own folder "
                        "with --config-dir; docs/models.md)"
                        if own
                        else ""
                    )
                )


def _arguments(target: str) -> list[str] | None:
    """Argument names of the function or class ``target``, or None when it takes ``**kw``."""
    from hydra.utils import get_object

    try:
        obj = get_object(target)
    except Exception as err:
        raise ConfigError(
            f"_target_ must name an importable object, got {target!r}: {err}"
        ) from None
    params = inspect.signature(obj).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind is not inspect.Parameter.VAR_POSITIONAL]


# ---------------------------------------------------------------------------------------------
# the spec


@dataclass(frozen=True)
class JobSpec:
    """One job's validated config and the identities derived from it, computed once.

    Attributes
    ----------
    config
        The validated plain config, ``runtime`` included (no ``hydra``).
    result
        :func:`result_config` of it: what the job's numbers depend on.
    config_hash
        :func:`config_hash`: resume trusts only files written under the same hash.
    training
        The training part (:data:`TRAINING_KEYS`) and ``runtime.device``: jobs with equal ones
        train the same networks; the sweep's plan groups them by it.
    estimate
        ``estimator`` and ``probe``: what the job measures on those networks.
    stack_key
        A hash of the whole config but ``seed``: jobs with equal ones train as one stack.
    """

    config: Mapping[str, Any]
    result: Mapping[str, Any]
    config_hash: str
    training: Mapping[str, Any]
    estimate: Mapping[str, Any]
    stack_key: str

    @classmethod
    def of(cls, cfg: DictConfig | Mapping) -> JobSpec:
        """Validate ``cfg`` (a composed config, with or without ``hydra``) into a spec."""
        config = plain(cfg)
        _check(config)
        result = result_config(config)
        return cls(
            config=config,
            result=result,
            config_hash=io.config_hash(result),
            training={
                **{k: result.get(k) for k in TRAINING_KEYS},
                "device": select(config, "runtime.device"),
            },
            estimate={k: result.get(k) for k in ESTIMATE_KEYS},
            stack_key=io.config_hash({k: v for k, v in config.items() if k != "seed"}),
        )

    @property
    def seed(self) -> int:
        return int(self.config["seed"])

    @property
    def runtime(self) -> Mapping[str, Any]:
        return self.config.get(RUNTIME) or {}

    def node(self, key: str) -> Any:
        """A node or value of the config by dotted key (``"trainer"``, ``"probe.output"``)."""
        return select(self.config, key)

    def training_key(
        self, device_type: str, data_fingerprint: str, stack: str = "exact"
    ) -> dict[str, Any]:
        """Everything that determines the trained states: what the training cache is keyed by.

        The training part of the config, the device type (a net trained on CUDA has other
        numbers than on the CPU), the content of the data set (not its path: files rewritten
        under the same ``data.root`` are other data) and the code version; and
        ``stack="batched"`` (``hydra.launcher.stack``: its rounding differs from a seed alone)
        when so, an exact stack's key being that of a seed alone.
        """
        key = {k: self.result.get(k) for k in TRAINING_KEYS}
        key.update(device=device_type, data_fingerprint=data_fingerprint, code=io.code_version())
        if stack != "exact":
            key.update(stack=stack)
        return key

    def meta(
        self,
        run_id: str,
        choices: Mapping[str, Any],
        device_type: str,
        data_source: str,
        stack: str = "exact",
    ) -> dict[str, Any]:
        """The columns every row of the job carries: run id, group choices, config leaves, the
        device type it ran on and where its data set was read from; and ``stack`` when its seed
        trained in a batched stack (``hydra.launcher.stack=batched``: numbers that differ from
        the seed alone by float rounding), none for an exact one."""
        meta: dict[str, Any] = {"run_id": run_id}
        meta.update({g: choices.get(g) for g in GROUPS})
        meta.update(io.flatten_config(self.result))
        meta.update(device=device_type, data_source=data_source)
        if stack != "exact":
            meta.update(stack=stack)
        return meta

    def cache_root(self, sweep_dir: str | None, cwd: str | None = None) -> Path | None:
        """The training cache's root, or None when the cache is off.

        ``sweep_dir`` is the multirun's sweep directory (None in a single run, which has no
        cache unless ``runtime.cache.dir`` names one); a relative ``runtime.cache.dir`` is taken
        from ``cwd`` (the directory the command was started in).
        """
        cache = self.runtime.get("cache") or {}
        if not cache.get("enabled", True):
            return None
        where = cache.get("dir")
        if where is not None:
            return Path(cwd or os.getcwd()) / os.path.expanduser(where)
        return None if sweep_dir is None else Path(sweep_dir).absolute() / ".train_cache"
