"""The training loop: train a stack of seeds, evaluate at scheduled points, estimate per-layer MI.

One path for one seed and for many: :func:`train_stack` trains a *stack*, S seeds of one
configuration, as one stacked model (:mod:`infoflow.training.trainer`); one seed is a stack of
one. It reads top-down: resolve the evaluation schedule (``trainer.eval``, step 0 first), pick
up each seed's checkpoint when resuming, then walk the points. At each point the nets' states
come either from training in this process or from the training cache (another job with the
same training key trained them); for each seed the probe samples (``probe.samples``, by default
the evaluation split) go through its net once without autograd and each probed layer goes to
its estimator (:mod:`infoflow.training.probe`). A seed's rows go to its recorder as soon as they
exist (a job's recorder writes table, checkpoint and status). What a seed needs of its job
(recorder, training cache, shared evaluation passes) it receives as objects: this module
imports nothing of the sweep machinery. A seed that fails (a diverged loss, its estimator, its
files) leaves the stack; the others go on.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from infoflow.training.batched import trainer_class
from infoflow.training.data import Dataset
from infoflow.training.probe import Estimator, PointEstimate, Probe
from infoflow.training.schedule import EvalPoint, eval_points
from infoflow.training.trainer import SeedStats, StackTrainer, optimizer_over

if TYPE_CHECKING:  # the objects a job hands in; never imported at run time (layers)
    from infoflow.sweep.cache import TrainCache
    from infoflow.sweep.sharing import SharedEstimates

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainerConfig:
    epochs: int = 5
    batch_size: int = 256
    eval: str | int = "epoch"


class Recorder:
    """Where a run's rows go. This one keeps them in memory; :class:`infoflow.sweep.job.Job` also
    writes them to the job's table, checkpoint and status after every evaluation."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.evals_done = 0
        self.evals_total: int | None = None

    def resume_from(self) -> tuple[list[dict], int, Mapping | None]:
        """(rows, evaluations done, training state or None) to continue from."""
        return [], 0, None

    def begin(self, rows: list[dict], done: int, total: int) -> None:
        self.rows, self.evals_done, self.evals_total = list(rows), done, total

    def record(self, rows: Sequence[Mapping], done: int, train_state: Mapping | None) -> None:
        self.rows.extend(dict(r) for r in rows)
        self.evals_done = done

    def finish(self) -> None:
        pass


@dataclass(eq=False)
class Member:
    """One seed of a stack: its net (built from its seed), what it measures, where its rows go.

    Parameters
    ----------
    model
        The seed's net, freshly built from ``seed`` (its state is the untrained point 0).
    seed
        The seed of its batch order.
    estimator
        Its MI estimator (bits).
    recorder
        Receives each point's rows (one per probed layer) as soon as they are measured.
    cache
        The training cache of its training key, or None to train in this process.
    shared
        Rows shared with the other jobs of its training key (:mod:`infoflow.sweep.sharing`).
    probe
        Its probed modules, resolved and checked on its net; None: resolved from
        ``probe_layers`` when the stack starts.
    rng
        The global generator's state its net's randomness starts from (Dropout draws; the
        CPU's, or the CUDA device's on CUDA), taken when its net was built; None: the current
        state. Each seed draws from its own, so that its numbers do not depend on its
        stack-mates.
    """

    model: nn.Module
    seed: int
    estimator: Estimator
    recorder: Recorder = field(default_factory=lambda: Recorder())
    cache: TrainCache | None = None
    shared: SharedEstimates | None = None
    probe: Probe | None = None
    rng: torch.Tensor | None = None
    error: Exception | None = field(default=None, init=False)  # why this seed stopped
    finished: bool = field(default=False, init=False)  # its recorder finished


def train_stack(
    members: Sequence[Member],
    optimizer: torch.optim.Optimizer,
    data: Dataset,
    trainer: TrainerConfig,
    *,
    probe_output: bool = False,
    eval_batch_size: int = 4096,
    resume: bool = False,
    probe_samples: str = "eval",
    probe_layers: Sequence[str] | None = None,
    on_error: Callable[[Member, Exception], None] | None = None,
    stack: str = "exact",
) -> None:
    """Train the members' nets as one stack; evaluate each at every point of ``trainer.eval``.

    The members differ only in their seed: same architecture, data, optimizer settings and
    schedule. Each seed draws its own batch order and its numbers do not depend on its
    stack-mates (bit for bit on the CPU). Each seed's point rows go to its recorder as soon as
    they exist.

    Parameters
    ----------
    members
        The seeds, each with its net, estimator, recorder, cache and shared rows.
    optimizer
        One optimizer over every member's parameters (per-parameter state: each seed's is the
        state it would have alone).
    data, trainer
        The data set (on the members' device) and the training settings.
    probe_output, eval_batch_size, probe_samples, probe_layers
        ``probe.output``, ``probe.batch_size``, ``probe.samples`` and ``probe.layers`` (see
        :func:`infoflow.training.probe.evaluate`; a member's own ``probe`` comes first).
    resume
        Continue each member from its recorder's checkpoint. Members stopped at different
        points (a kill between two seeds' records) continue in separate stacks, one after
        the other.
    on_error
        Called with a member and the exception that stopped it alone (a diverged loss, its
        estimator, its files); the others go on. None: the exception is raised at once.
    stack
        ``hydra.launcher.stack``: ``exact`` (:class:`StackTrainer`, each seed bit for bit as
        alone) or ``batched`` (:class:`infoflow.training.batched.BatchedStackTrainer`, every
        seed's layers as one kernel over a seed axis: a seed alone up to float rounding).
    """
    make_learner = trainer_class(stack)
    starts = [m.recorder.resume_from() if resume else ([], 0, None) for m in members]
    parts: dict[tuple[int, bool], list[int]] = {}
    for i, (m, (_, start, state)) in enumerate(zip(members, starts)):
        parts.setdefault((start, state is not None and m.cache is None), []).append(i)
    probe = PointSettings(eval_batch_size, probe_output, probe_samples, probe_layers)
    for part in parts.values():
        models = [members[i].model for i in part]
        opt = optimizer if len(parts) == 1 else optimizer_over(optimizer, models)
        part_stack = Stack(
            make_learner(
                models,
                opt,
                data,
                trainer.batch_size,
                [members[i].seed for i in part],
                [members[i].rng for i in part],
            ),
            [members[i] for i in part],
            on_error,
        )
        part_stack.train([starts[i] for i in part], trainer, probe)


@dataclass(frozen=True)
class PointSettings:
    eval_batch_size: int = 4096
    probe_output: bool = False
    probe_samples: str = "eval"
    probe_layers: Sequence[str] | None = None


Start = tuple[list[dict], int, Mapping | None]  # (rows, evaluations done, training state)


@dataclass(eq=False)
class Stack:
    """The seeds training together from one point: their trainer and their members, dropped
    together when a seed stops."""

    learner: StackTrainer
    members: list[Member]
    on_error: Callable[[Member, Exception], None] | None = None

    def fail(self, m: Member, err: Exception) -> None:
        if self.on_error is None:
            raise err
        m.error = err
        self.on_error(m, err)

    def drop(self, positions: Sequence[int]) -> None:
        self.learner.drop(positions)
        gone = set(positions)
        self.members = [m for k, m in enumerate(self.members) if k not in gone]

    def who(self) -> str:
        seeds = [m.seed for m in self.members]
        return f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {', '.join(map(str, seeds))}"

    def train(self, starts: list[Start], trainer: TrainerConfig, probe: PointSettings) -> None:
        """Walk the schedule from the members' common start: begin, every point, finish."""
        points = eval_points(trainer.eval, trainer.epochs, self.learner.per_epoch)
        data = self.learner.data
        estimates = {
            id(m): PointEstimate(
                m.model, data, m.estimator, probe.eval_batch_size, probe.probe_output,
                m.shared, probe.probe_samples,
                m.probe or Probe.of(m.model, probe.probe_layers, data.x_eval[:1]),
            )
            for m in self.members
        }  # fmt: skip
        rows, start, state = starts[0]
        cached = self.members[0].cache is not None
        if rows:
            log.info("resuming after evaluation %d/%d (%s)", start, len(points), self.who())
        self.begin(starts, len(points), restore=not cached)
        if cached:
            source = cached_points(self, points, start)
        elif state is None and start > 0:  # no training state: retrain, skip the points done
            source = ((p, s) for p, s in train_points(self.learner, points) if p.index >= start)
        else:
            source = train_points(self.learner, points)
        with closing(source):  # a failing job lets go of the cache's locks at once
            self.record_points(source, points, estimates, keep_state=not cached)
        self.finish()

    def begin(self, starts: list[Start], total: int, restore: bool) -> None:
        """Each member's recorder begins (with its resumed rows, its training state loaded)."""
        stopped = []
        for k, (m, (rows, start, state)) in enumerate(zip(self.members, starts)):
            try:
                if state is not None and restore:
                    self.learner.load_state_dict(state, k)
                m.recorder.begin(rows, start, total)
            except Exception as err:  # its checkpoint or its files: this seed alone
                stopped.append(k)
                self.fail(m, err)
        self.drop(stopped)

    def record_points(
        self,
        source: Iterator[tuple[EvalPoint, list[SeedStats]]],
        points: list[EvalPoint],
        estimates: Mapping[int, PointEstimate],
        keep_state: bool,
    ) -> None:
        """Estimate and record every point the source yields, per seed; a seed that fails
        leaves the stack."""
        t0 = time.perf_counter()
        for point, stats in source:
            t1 = time.perf_counter()
            stopped, lines = [], []
            for k, (m, s) in enumerate(zip(self.members, stats)):
                try:
                    if isinstance(s, Exception):
                        raise s
                    new, note = estimates[id(m)](point, s)
                    state = self.learner.state_dict(k) if keep_state else None
                    m.recorder.record(new, point.index + 1, state)
                    lines.append((m, new, note))
                except Exception as err:
                    stopped.append(k)
                    self.fail(m, err)
            t2 = time.perf_counter()
            for m, new, note in lines:
                who = f"seed {m.seed}: " if len(stats) > 1 else ""
                log_point(point, points, new, t1 - t0, (t2 - t1) / len(stats), note, who, m.seed)
            self.drop(stopped)
            t0 = time.perf_counter()

    def finish(self) -> None:
        for m in self.members:
            try:
                m.recorder.finish()
                m.finished = True
            except Exception as err:
                self.fail(m, err)


# ---------------------------------------------------------------------------------------------
# where a point's nets come from: training here, or the cache


def train_points(
    learner: StackTrainer, points: list[EvalPoint]
) -> Iterator[tuple[EvalPoint, list[SeedStats]]]:
    """Train from the trainer's current step through the schedule, yielding each point reached.

    Point 0 is yielded (untrained, NaN training figures) when the trainer is at step 0; a
    trainer restored at a point's step continues with the next point.
    """
    for point in points:
        if not learner.models:
            return  # every seed stopped
        if point.step > learner.step or point.step == learner.step == 0:
            yield point, learner.advance(point.step)


def cached_points(
    stack: Stack, points: list[EvalPoint], start: int
) -> Iterator[tuple[EvalPoint, list[SeedStats]]]:
    """Points ``start..`` from the seeds' training caches (each member's ``cache``), training the
    missing ones in this job if no other is.

    Stored points are loaded into the models. When a point is missing for a seed, the job that
    gets the training locks of every seed trains the stack from their latest stored full states
    (or from the untrained nets when those are not at one point), storing every point of every
    seed; otherwise it polls for the points and takes over if the trainer dies.
    """
    learner = stack.learner
    i = start
    while i < len(points) and stack.members:
        caches = [m.cache for m in stack.members]
        hits = [c.load_point(i) for c in caches]
        if all(h is not None for h in hits):
            for model, hit in zip(learner.models, hits):
                model.load_state_dict(hit["model"])
            yield points[i], [hit["stats"] for hit in hits]
            i += 1
            continue
        with contextlib.ExitStack() as held:
            busy = next((c for c in caches if not held.enter_context(c.try_lock())), None)
            if busy is None:
                if all(c.load_point(i) is not None for c in caches):
                    continue  # stored by a trainer that just let go
                restore_from_cache(stack, caches, i)
                for point, stats in train_points(learner, points):
                    for k, (m, s) in enumerate(zip(stack.members, stats)):
                        if not isinstance(s, Exception):
                            state = learner.state_dict(k)  # its model's tensors of its own
                            m.cache.save_point(point.index, state["model"], s, state)
                    if point.index >= i:
                        yield point, stats
                        i = point.index + 1
                continue
        busy.wait(i)


def restore_from_cache(stack: Stack, caches: list[TrainCache], i: int) -> None:
    """Put the stack at the seeds' latest stored full states before point ``i``, or at the
    untrained nets when they are not all at one such point."""
    learner = stack.learner
    saved = [c.load_state() for c in caches]
    at = {s["index"] if s is not None and s["index"] < i else None for s in saved}
    usable = len(at) == 1 and None not in at
    for k, s in enumerate(saved):
        learner.load_state_dict(s["train"] if usable else learner.initial[k], k)
    log.info(
        "training %s (%s) from point %d", caches[0].dir, stack.who(), at.pop() if usable else 0
    )


def log_point(
    point: EvalPoint,
    points: list[EvalPoint],
    measured: list[dict],
    t_train: float,
    t_estimate: float,
    note: str = "",
    who: str = "",
    seed: int | None = None,
) -> None:
    """One line per evaluation point (per seed of a stack: ``who``); ``note`` says when rows
    came from or went to other jobs. The record carries ``seed``: a stack's jobs each log
    their own seed's lines to their own file (``infoflow.sweep.runner.job_logs``)."""
    stats = measured[0]
    log.info(
        "%seval %d/%d epoch %s step %d  train_loss %.4f  train_acc %.3f  eval_acc %.3f  "
        "I_XT %s  I_TY %s  (train %.2fs, estimate %.2fs%s)",
        who,
        point.index,
        len(points) - 1,
        f"{point.epoch:.3g}" if isinstance(point.epoch, float) else point.epoch,
        point.step,
        stats["train_loss"],
        stats["train_acc"],
        stats["eval_acc"],
        _fmt([r["I_XT"] for r in measured]),
        _fmt([r["I_TY"] for r in measured]),
        t_train,
        t_estimate,
        f", {note}" if note else "",
        extra={"seed": seed},
    )


def _fmt(values: list[float]) -> str:
    return "[" + " ".join(f"{v:.2f}" for v in values) + "]"
