"""When to evaluate: the ``trainer.eval`` schedule, resolved to optimizer-step counts.

The information plane moves fastest early in training, so besides every epoch (the default)
a job can evaluate every K epochs or at N log-spaced optimizer steps that include fractions of
the first epoch, as Shwartz-Ziv & Tishby (2017, "IDNNs") and Saxe et al. (2018, ``ibsgd``) do.
Step 0 (the untrained net) is always measured.

Accepted values of ``trainer.eval``:

``epoch``
    after every epoch (``every:1``).
``every:K`` or an integer ``K``
    after every K-th epoch, and always after the last one.
``log:N``
    N points log-spaced over all optimizer steps ``1 .. epochs * steps_per_epoch`` (rounded to
    whole steps, duplicates dropped, so fewer than N points when early steps coincide), plus
    step 0. The table's ``epoch`` is then a float: ``step / steps_per_epoch``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from infoflow.errors import UserError


class ScheduleError(UserError, ValueError):
    """``trainer.eval`` is not a schedule, or not one this run can keep."""


RULE = "must be 'epoch', an integer K >= 1, 'every:K' with K >= 1, or 'log:N' with N >= 2"


@dataclass(frozen=True)
class EvalPoint:
    """One evaluation: its position in the schedule and how far training has gone.

    ``epoch`` is an int for epoch-aligned schedules and a float (``step / steps_per_epoch``)
    for ``log:N``; ``step`` counts optimizer steps done before the evaluation.
    """

    index: int
    step: int
    epoch: int | float


def parse_eval(value: Any) -> tuple[str, int]:
    """Validate ``trainer.eval``; return ``("every", K)`` or ``("log", N)``.

    Raises
    ------
    ScheduleError
        naming the key, the rule and the value (the job spec reports it as a ConfigError).
    """
    kind, arg = None, None
    if isinstance(value, int) and not isinstance(value, bool):
        kind, arg = "every", value
    elif isinstance(value, str):
        text = value.strip()
        if text == "epoch":
            kind, arg = "every", 1
        elif text.isdigit():
            kind, arg = "every", int(text)
        elif ":" in text:
            head, _, tail = text.partition(":")
            if head in ("every", "log") and tail.strip().isdigit():
                kind, arg = head, int(tail)
    if kind is None or arg is None or arg < (2 if kind == "log" else 1):
        raise ScheduleError(f"trainer.eval {RULE}, got {value!r}")
    return kind, arg


def canonical(value: Any) -> str:
    """The one string form of a schedule (``every:1`` for ``epoch``, ``every:3`` for 3)."""
    kind, arg = parse_eval(value)
    return "epoch" if (kind, arg) == ("every", 1) else f"{kind}:{arg}"


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Optimizer steps in one epoch (the last batch may be short)."""
    return math.ceil(n_train / batch_size)


def eval_points(value: Any, epochs: int, per_epoch: int) -> list[EvalPoint]:
    """The evaluation points of a job, in training order, step 0 first.

    Parameters
    ----------
    value : str or int
        ``trainer.eval`` (see the module docstring).
    epochs : int
        ``trainer.epochs``.
    per_epoch : int
        Optimizer steps per epoch, ``steps_per_epoch(n_train, batch_size)``.

    Returns
    -------
    list of EvalPoint
        Strictly increasing ``step``; the last point is the end of training.

    Raises
    ------
    ScheduleError
        for ``log:N`` with N above the run's optimizer steps (they would all be kept anyway,
        and an absurd N would only allocate).
    """
    kind, arg = parse_eval(value)
    total = epochs * per_epoch
    if kind == "log" and arg > total:  # at most one point per step: the rest only allocate
        raise ScheduleError(
            f"trainer.eval=log:{arg} asks for more log-spaced points than the run has optimizer "
            f"steps ({epochs} epochs x {per_epoch} steps = {total}): use log:{total} or fewer, "
            f"or trainer.eval=epoch"
        )
    if kind == "every":
        epoch_list = sorted({*range(0, epochs + 1, arg), epochs})
        return [EvalPoint(i, e * per_epoch, e) for i, e in enumerate(epoch_list)]
    log_steps = np.unique(np.rint(np.geomspace(1, total, arg)).astype(np.int64))  # (<= N,)
    steps = [0, *(int(s) for s in log_steps)]
    return [EvalPoint(i, s, s / per_epoch) for i, s in enumerate(steps)]
