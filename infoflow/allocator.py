"""glibc's malloc, set to keep freed memory for the next training step (the ``malloc`` key).

A training step frees and re-allocates the same activation and gradient tensors: for the CNN on
Fashion-MNIST at batch 256 a conv1 map is 12.8 MB, and a step's large tensors add up to some
40 MB. glibc serves blocks that large from ``mmap`` or from the top of its heap, and may hand
them back to the kernel on ``free`` (``munmap``, or trimming the heap once more than
``M_TRIM_THRESHOLD`` is free at its top); the next step then takes a page fault on every 4 KiB
page it writes, and the kernel zeroes each page. Whether that happens depends on the process:
glibc adapts its thresholds to the blocks freed so far. Measured on this project's 2-core CPU
machine with glibc's defaults: a fresh process running the bare CNN loop faulted about 9,000
times per step (37-46 ms a step against 25-30 ms with these settings); two single ``model=cnn``
runs on Fashion-MNIST took 3.6 and 0.46 million page faults and 8.0-9.3 and 7.1-7.7 s per epoch,
against 0.40 million and 6.3-7.0 s with these settings. In the 8-job sweep the MLP jobs before
the CNN had already raised glibc's thresholds, and the CNN's steps did not fault either way.

:func:`retain_freed_memory` sets three ``mallopt`` parameters so that freed memory stays in the
process for reuse:

``M_MMAP_THRESHOLD`` = 32 MiB
    blocks under 32 MiB come from the heap, never from their own ``mmap``;
``M_TRIM_THRESHOLD`` = 1 GiB
    the heap is only trimmed when more than 1 GiB is free at its top;
``M_TOP_PAD`` = 64 MiB
    each time the heap grows, it grows by 64 MiB more than asked.

The cost is resident memory: up to 1 GiB freed by the job may stay mapped until the process
ends. Numbers do not change (where memory comes from does not change what is computed). Outside
glibc (macOS, musl) there is nothing to set; CUDA tensors use torch's caching allocator anyway.
If the environment already sets glibc's malloc tunables (``MALLOC_*_`` variables or
``glibc.malloc`` in ``GLIBC_TUNABLES``), those are the user's choice and are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
from collections.abc import Mapping

MALLOC_MODES = ("retain", "system")

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # from glibc's <malloc.h>
SETTINGS = {
    M_MMAP_THRESHOLD: 32 << 20,  # the largest value glibc accepts on 64-bit (HEAP_MAX / 2)
    M_TRIM_THRESHOLD: 1 << 30,
    M_TOP_PAD: 64 << 20,
}

_applied = False


def user_tunables(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The environment's glibc malloc tunables, by name (empty when there are none)."""
    names = [k for k in environ if k.startswith("MALLOC_") and k.endswith("_")]
    if "glibc.malloc." in environ.get("GLIBC_TUNABLES", ""):
        names.append("GLIBC_TUNABLES")
    return sorted(names)


def retain_freed_memory() -> bool:
    """Set glibc's malloc to keep freed memory in the process (see the module notes).

    Returns
    -------
    bool
        True when the settings are in effect (set now or by an earlier call); False outside
        glibc, or when the environment sets malloc tunables of its own (left alone).
    """
    global _applied
    if _applied:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc" or user_tunables():
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = all(mallopt(param, value) == 1 for param, value in SETTINGS.items())
    return _applied
