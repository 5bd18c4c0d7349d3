"""Validation of a composed config, once, before anything is built or trained."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from infoflow.estimators import check_params as check_estimator_params
from infoflow.models import ACTIVATIONS


class ConfigError(ValueError):
    """A config value breaks a rule; the message names the key, the rule and the value."""


def _int_at_least(low: int) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low), (
        f"must be an integer >= {low}"
    )


def _positive_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0


# key -> (test, rule); a key absent from the config is not checked
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seed": _int_at_least(0),
    "trainer.epochs": _int_at_least(1),
    "trainer.batch_size": _int_at_least(1),
    "trainer.eval_batch_size": _int_at_least(1),
    "estimator.bins": _int_at_least(2),
    "estimator.max_units": _int_at_least(1),
    "optimizer.lr": (_positive_number, "must be a number > 0"),
    "model.activation": (
        lambda v: v in ACTIVATIONS,
        f"must be one of {', '.join(sorted(ACTIVATIONS))}",
    ),
    "model.channels": _int_at_least(1),
    "device": (
        lambda v: isinstance(v, str) and v.split(":")[0] in ("auto", "cpu", "cuda", "mps"),
        "must be auto, cpu, cuda, cuda:N or mps",
    ),
}


def validate(cfg: DictConfig) -> None:
    """Check every key that has a rule; raise ConfigError on the first one broken."""
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
    resolve_device(cfg.device)


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
                f"device must be present on this machine, got {name!r}: "
                f"torch.cuda.is_available() is False{'; ' + hint if hint else ''} "
                "(use device=auto or device=cpu)"
            )
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"device must be present on this machine, got {name!r}: "
                f"only {torch.cuda.device_count()} CUDA device(s)"
            )
    if kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError(
                f"device must be present on this machine, got {name!r}: "
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
