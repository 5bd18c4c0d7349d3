"""A small memo of the input side of an estimate, reused across layers and evaluations.

``renyi`` and ``sliced`` spend much of their time on X alone (its Gram matrices and their
eigenvalues; its projections and their equal-mass bins), and X is the same for every layer of
an evaluation and for every evaluation of a job: ``infoflow.training.loop.measure`` passes the same
evaluation tensor each time. The memo keeps that work per input tensor so that a job computes
it once, while each estimator stays a function of its arguments: a result is reused only for
the same tensor object, unchanged, with the same parameters.

* **Identity**: an entry is keyed by ``id(X)`` and holds a weak reference to X; it is used only
  while that reference still points at the very object passed (an id is reused only after its
  object is gone, and the entry goes with it: the weak reference's callback drops it).
* **Unchanged**: torch counts in-place writes to a tensor and its views (``Tensor._version``,
  the counter autograd relies on); an entry records it and is recomputed when it moved.
  Writes that torch cannot see (through a NumPy array sharing the tensor's memory) are not
  detected: do not mutate an input between estimates that way.
* **Parameters**: the caller's key holds every parameter the X side depends on (and X's dtype
  and device), so two settings never share an entry.

Only torch tensors are memoised; NumPy inputs, and tensors without a version counter (made
under ``torch.inference_mode``), are computed afresh on every call. At most ``MAX_ENTRIES``
results are kept (least recently used first out), which bounds the memory to a few copies of
X's side (a sliced entry: slices x N codes and cell offsets; a renyi one: batches x
batch_size^2 kernel values).
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import torch

MAX_ENTRIES = 8

_lock = threading.RLock()  # re-entrant: a drop callback may run while the lock is held
_entries: OrderedDict[tuple[int, Hashable], tuple[weakref.ref, int, Any]] = OrderedDict()


def _version(X: Any) -> int | None:
    """X's in-place write counter, or None where there is none to trust."""
    if not isinstance(X, torch.Tensor):
        return None
    try:
        return int(X._version)
    except RuntimeError:  # inference tensors have no version counter
        return None


def _forget(ident: int) -> Callable[[weakref.ref], None]:
    def drop(_: weakref.ref) -> None:
        with _lock:
            for key in [k for k in _entries if k[0] == ident]:
                del _entries[key]

    return drop


def input_side(X: Any, key: Hashable, compute: Callable[[], Any]) -> Any:
    """``compute()``, or its earlier result for this same, unchanged tensor ``X`` and ``key``.

    Parameters
    ----------
    X : tensor or ndarray
        The input as the caller passed it (before any conversion).
    key : hashable
        Everything besides X that the result depends on (estimator name, parameters, dtype,
        device).
    compute : callable
        Computes the result from X; called when there is no valid entry.
    """
    version = _version(X)
    if version is None:
        return compute()
    slot = (id(X), key)
    with _lock:
        hit = _entries.get(slot)
        if hit is not None and hit[0]() is X and hit[1] == version:
            _entries.move_to_end(slot)
            return hit[2]
    value = compute()
    with _lock:
        _entries[slot] = (weakref.ref(X, _forget(id(X))), version, value)
        _entries.move_to_end(slot)
        while len(_entries) > MAX_ENTRIES:
            _entries.popitem(last=False)
    return value


def clear() -> None:
    """Drop every entry (tests; or to free the memory at once)."""
    with _lock:
        _entries.clear()
