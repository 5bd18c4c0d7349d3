"""Devices: ``runtime.device`` resolved to a present torch device, deterministic kernels.

``auto`` takes CUDA, then MPS, then the CPU; a device that is named and absent is an error that
says why (a ``CUDA_VISIBLE_DEVICES`` that hides every GPU included).
"""

from __future__ import annotations

import os

import torch

from infoflow.errors import UserError


class DeviceError(UserError, ValueError):
    """``runtime.device`` names a device this machine does not have."""


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
            raise DeviceError(
                f"runtime.device must be present on this machine, got {name!r}: "
                f"torch.cuda.is_available() is False{'; ' + hint if hint else ''} "
                "(use runtime.device=auto or runtime.device=cpu)"
            )
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise DeviceError(
                f"runtime.device must be present on this machine, got {name!r}: "
                f"only {torch.cuda.device_count()} CUDA device(s)"
            )
    if kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise DeviceError(
                f"runtime.device must be present on this machine, got {name!r}: "
                "torch.backends.mps.is_available() is False (use runtime.device=auto or "
                "runtime.device=cpu)"
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
