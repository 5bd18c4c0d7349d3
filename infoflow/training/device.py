"""Devices: ``runtime.device`` resolved to a present torch device, deterministic kernels, and
host memory kept from one training step to the next.

``auto`` takes CUDA, then MPS, then the CPU; a device that is named and absent is an error that
says why (a ``CUDA_VISIBLE_DEVICES`` that hides every GPU included).
"""

from __future__ import annotations

import ctypes
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


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
# Blocks up to this size come from the heap, and this much free memory at its top is kept.
KEEP_FREED_BYTES = 1 << 30


def keep_freed_memory() -> bool:
    """Have the C allocator keep the host memory that a training step frees, for the next one.

    A step allocates and frees the same large tensors every time: the activations, their
    gradients, the pooling indices (a CNN's first conv output on Fashion-MNIST is 12.8 MB a
    batch). At its defaults glibc's malloc hands such blocks back to the kernel when they are
    freed (a block above ``M_MMAP_THRESHOLD`` is its own mapping; a heap top above
    ``M_TRIM_THRESHOLD`` is trimmed), so the next step page-faults the same memory in again,
    a fault per 4 KiB page, in the kernel's time. Which blocks that hits depends on what the
    process allocated before (glibc moves its thresholds as blocks are freed), so the same job
    faults more in one run than in the next (docs/speed.md).
    Both thresholds at ``KEEP_FREED_BYTES`` keep such blocks in the heap for reuse, as
    PyTorch's CUDA allocator keeps device memory; the process's resident size stays near its
    peak instead of shrinking between steps.

    Process-wide and idempotent; True where it took effect (glibc), False elsewhere (macOS,
    musl), where the platform's allocator is left as it is. The numbers never depend on it.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # no mallopt; Windows has no CDLL(None)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # the mapping threshold first: a trim threshold set alone also stops glibc from raising the
    # mapping threshold as blocks are freed, which would map (and fault) more blocks, not fewer
    if not mallopt(_M_MMAP_THRESHOLD, KEEP_FREED_BYTES):
        return False
    return bool(mallopt(_M_TRIM_THRESHOLD, KEEP_FREED_BYTES))


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
