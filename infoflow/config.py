"""Validation of a composed config, once, before anything is built or trained."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from infoflow.data import PROBE_SAMPLES
from infoflow.errors import UserError
from infoflow.estimators import check_params as check_estimator_params
from infoflow.models import ACTIVATIONS, INITS


class ConfigError(UserError, ValueError):
    """A config value breaks a rule; the message names the key, the rule and the value."""


def _int_at_least(low: int) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low), (
        f"must be an integer >= {low}"
    )


def _positive_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0


def _bool(v: Any) -> bool:
    return isinstance(v, bool)


# key -> (test, rule); a key absent from the config is not checked
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seed": _int_at_least(0),
    "trainer.epochs": _int_at_least(1),
    "trainer.batch_size": _int_at_least(1),
    "probe.batch_size": _int_at_least(1),
    "probe.output": (_bool, "must be true or false"),
    "estimator.bins": _int_at_least(2),
    "estimator.max_units": _int_at_least(1),
    "optimizer.lr": (_positive_number, "must be a number > 0"),
    "model.activation": (
        lambda v: v in ACTIVATIONS,
        f"must be one of {', '.join(sorted(ACTIVATIONS))}",
    ),
    "model.channels": _int_at_least(1),
    "model.init": (lambda v: v in INITS, f"must be one of {', '.join(INITS)}"),
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
    "runtime.cache.enabled": (_bool, "must be true or false"),
    "runtime.cache.dir": (
        lambda v: isinstance(v, str) and bool(v.strip()),
        "must be null or a non-empty path",
    ),
    "runtime.cache.wait_s": (_positive_number, "must be a number > 0"),
}

#: the top-level keys of a job's config; anything else is a typo (``+modle=mlp1``)
TOP_LEVEL = ("model", "data", "optimizer", "estimator", "seed", "probe", "trainer", "runtime")
#: keys of the nodes without a ``_target_``
NODE_KEYS = {
    "probe": ("output", "batch_size", "samples"),
    "trainer": ("epochs", "batch_size", "eval"),
    "runtime": ("device", "threads", "resume", "cache"),
    "runtime.cache": ("enabled", "dir", "wait_s"),
}
#: arguments a group's object gets from the job, not from its config
PROVIDED = {
    "model": ("in_shape", "n_classes"),
    "optimizer": ("params",),
    "estimator": ("T", "X", "Y"),
}


def check_keys(cfg: DictConfig) -> None:
    """Refuse keys nothing reads: a top-level key outside :data:`TOP_LEVEL`, a key of a node
    outside its known keys, a key of a group option that its object does not take
    (``+estimator.bin=10``)."""
    extra = [k for k in cfg if k not in (*TOP_LEVEL, "hydra")]
    if extra:
        raise ConfigError(
            f"{extra[0]} is not a config key: the top-level keys are {', '.join(TOP_LEVEL)} "
            f"(a config group is chosen without '+', e.g. model=mlp1), got {extra[0]}="
            f"{cfg[extra[0]]!r}"
        )
    for node, keys in NODE_KEYS.items():
        sub = OmegaConf.select(cfg, node, default=None)
        for key in sub or ():
            if key not in keys:
                raise ConfigError(
                    f"{node}.{key} is not a config key: {node} has {', '.join(keys)}, "
                    f"got {node}.{key}={sub[key]!r}"
                )
    for group in ("model", "data", "optimizer", "estimator"):
        node = cfg.get(group)
        if not node or "_target_" not in node:
            continue
        accepted = _arguments(str(node["_target_"]))
        if accepted is None:
            continue  # takes **kwargs: its own checks apply
        for key in node:
            key = str(key)
            if not key.startswith("_") and key not in accepted:
                allowed = [a for a in accepted if a not in PROVIDED.get(group, ())]
                raise ConfigError(
                    f"{group}.{key} is not a key of {group} {node['_target_']}: its keys are "
                    f"{', '.join(allowed)}; got {group}.{key}={node[key]!r}"
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


def validate(cfg: DictConfig) -> None:
    """Check the keys, then every value that has a rule; raise ConfigError on the first one
    broken."""
    check_keys(cfg)
    for key, (test, rule) in RULES.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is None:
            continue
        if not test(value):
            raise ConfigError(f"{key} {rule}, got {value!r}")
    hidden = OmegaConf.select(cfg, "model.hidden", default=None)
    if hidden is not None and (
        len(hidden) == 0 or not all(isinstance(h, int) and h >= 1 for h in hidden)
    ):
        raise ConfigError(
            f"model.hidden must be a non-empty list of integers >= 1, got {list(hidden)!r}"
        )
    estimator = OmegaConf.select(cfg, "estimator", default=None)
    if estimator is not None:  # the estimator's own rules (range, bin_width, noise_var, ...)
        try:
            check_estimator_params(OmegaConf.to_container(estimator, resolve=True))
        except ValueError as err:
            raise ConfigError(str(err)) from None
    from infoflow.schedule import parse_eval

    parse_eval(OmegaConf.select(cfg, "trainer.eval", default="epoch"))
    resolve_device(cfg.runtime.device)


def resolve_device(name: str) -> torch.device:
    """``auto`` takes CUDA, then MPS, then the CPU; a named device must be present."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = name.split(":")[0]
    if kind == "cuda":
        if not torch.cuda.is_available():
            hint = hidden_gpus()
            raise ConfigError(
                f"runtime.device must be present on this machine, got {name!r}: "
                f"torch.cuda.is_available() is False{'; ' + hint if hint else ''} "
                "(use device=auto or device=cpu)"
            )
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"runtime.device must be present on this machine, got {name!r}: "
                f"only {torch.cuda.device_count()} CUDA device(s)"
            )
    if kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError(
                f"runtime.device must be present on this machine, got {name!r}: "
                "torch.backends.mps.is_available() is False (use device=auto or device=cpu)"
            )
    return torch.device(name)


def deterministic_kernels(device: torch.device) -> None:
    """On CUDA, have cuDNN pick deterministic convolution algorithms (no autotuning): its
    default may pick backward kernels that sum with atomics, in an order that changes from run
    to run. A seed then gives the same numbers every run, and a net from the training cache
    equals a retrained one. The CPU's kernels are deterministic already."""
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def hidden_gpus() -> str:
    """Why CUDA may be absent in this job: a note when ``CUDA_VISIBLE_DEVICES`` hides every GPU
    (set and empty, or -1), else "". The submitit launchers set it from
    ``hydra.launcher.gpus_per_node``, 0 by default, so their jobs see no GPU unless asked."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None or value.strip() not in ("", "-1"):
        return ""
    return (
        f"CUDA_VISIBLE_DEVICES is {value!r} in this job's environment, which hides every GPU "
        "(the submitit launchers set it from hydra.launcher.gpus_per_node, 0 by default)"
    )
