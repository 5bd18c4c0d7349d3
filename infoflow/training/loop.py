"""The training loop: train on whole tensors, evaluate at scheduled points, estimate per-layer MI.

One path for one seed and for many: :func:`train_stack` trains a *stack*, S seeds of one
configuration, as one stacked model (one Python step, one backward and one optimizer step for
all of them, :func:`train_batches`); one seed is a stack of one. It reads top-down: resolve the
evaluation schedule (``trainer.eval``, step 0 first), pick up each seed's checkpoint when
resuming, then walk the points. At each point the nets' states come either from training in
this process or from the training cache (another job with the same training key trained them);
for each seed the probe samples (``probe.samples``, by default the evaluation split) go
through its net once without autograd and each probed layer goes to its estimator. A seed's
rows go to its recorder as soon as they exist (a job's recorder writes table, checkpoint and
status). What a seed needs of its job (recorder, training cache, shared evaluation passes) it
receives as objects: this module imports nothing of the sweep machinery. A seed that fails (a
diverged loss, its estimator, its files) leaves the stack; the others go on.

Training stays on the data's device: an epoch shuffles an index tensor per seed and slices
batches; the loss and accuracy sums stay on the device and are read once per evaluation point
(no per-batch host sync), which is also where a NaN/inf loss is detected, per seed.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from infoflow.errors import UserError
from infoflow.training.data import Dataset, batches
from infoflow.training.schedule import EvalPoint, eval_points, steps_per_epoch

if TYPE_CHECKING:  # the objects a job hands in; never imported at run time (layers)
    from infoflow.sweep.cache import TrainCache
    from infoflow.sweep.sharing import SharedEstimates

log = logging.getLogger(__name__)

Estimator = Callable[..., dict]
NO_TRAINING = {"train_loss": math.nan, "train_acc": math.nan}


class TrainingDiverged(UserError, RuntimeError):
    """The training loss became NaN or infinite; the job stops and keeps its finished rows."""


#: one seed's figures since the last point, or the TrainingDiverged that ended it
SeedStats = dict[str, float] | TrainingDiverged


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


def probe_names(model: nn.Module, probe_output: bool) -> list[str]:
    """Names of the probed layers, in the order ``evaluate`` returns them."""
    return [*model.probe_names, "output"] if probe_output else list(model.probe_names)


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
    """

    model: nn.Module
    seed: int
    estimator: Estimator
    recorder: Recorder = field(default_factory=lambda: Recorder())
    cache: TrainCache | None = None
    shared: SharedEstimates | None = None
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
    on_error: Callable[[Member, Exception], None] | None = None,
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
    probe_output, eval_batch_size, probe_samples
        ``probe.output``, ``probe.batch_size`` and ``probe.samples`` (see :func:`evaluate`).
    resume
        Continue each member from its recorder's checkpoint. Members stopped at different
        points (a kill between two seeds' records) continue in separate stacks, one after
        the other.
    on_error
        Called with a member and the exception that stopped it alone (a diverged loss, its
        estimator, its files); the others go on. None: the exception is raised at once.
    """
    starts = [m.recorder.resume_from() if resume else ([], 0, None) for m in members]
    parts: dict[tuple[int, bool], list[int]] = {}
    for i, (m, (_, start, state)) in enumerate(zip(members, starts)):
        parts.setdefault((start, state is not None and m.cache is None), []).append(i)
    probe = PointSettings(eval_batch_size, probe_output, probe_samples)
    for part in parts.values():
        models = [members[i].model for i in part]
        opt = optimizer if len(parts) == 1 else optimizer_over(optimizer, models)
        stack = Stack(
            StackTrainer(models, opt, data, trainer.batch_size, [members[i].seed for i in part]),
            [members[i] for i in part],
            on_error,
        )
        stack.train([starts[i] for i in part], trainer, probe)


@dataclass(frozen=True)
class PointSettings:
    eval_batch_size: int = 4096
    probe_output: bool = False
    probe_samples: str = "eval"


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
                            m.cache.save_point(
                                point.index, m.model.state_dict(), s, learner.state_dict(k)
                            )
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


# ---------------------------------------------------------------------------------------------
# training


@dataclass
class TrainSums:
    """Running sums over the samples trained on, per seed, kept on the device (no host sync)."""

    loss: torch.Tensor  # (S,) float: sum of per-sample cross-entropy, nats
    correct: torch.Tensor  # (S,) long: correctly classified samples
    seen: int = 0  # per seed (every seed sees as many)

    @classmethod
    def zeros(cls, device: torch.device, seeds: int = 1) -> TrainSums:
        return cls(
            torch.zeros(seeds, device=device), torch.zeros(seeds, device=device, dtype=torch.long)
        )


def train_batches(
    models: Sequence[nn.Module],
    optimizer: torch.optim.Optimizer,
    data: Dataset,
    index_batches: Sequence[torch.Tensor],
    sums: TrainSums,
) -> None:
    """The hot loop: one optimizer step of every seed per (S, B) index batch of the training
    split, adding each seed's batch loss and accuracy to ``sums`` on the device.

    Each seed's net runs on its own batch as it would alone (the same ops on the same shapes),
    all seeds in one Python step: one backward through the sum of their losses (the gradient
    of each seed's loss is exactly 1) and one optimizer step over every seed's parameters (per
    parameter: each seed's step is its own). So a seed's numbers are bit for bit those of a
    stack of one. (A batched matmul over a leading seed axis was measured not to be: see
    docs/seeds.md.)
    """
    for model in models:
        model.train()
    for idx in index_batches:  # (S, B): seed k's batch in row k
        x, y = data.x_train[idx], data.y_train[idx]  # (S, B, C, H, W), (S, B)
        logits = [model(xk) for model, xk in zip(models, x)]  # S x (B, n_classes)
        loss = torch.stack([F.cross_entropy(lk, yk) for lk, yk in zip(logits, y)])  # (S,)
        optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        optimizer.step()
        sums.loss += loss.detach() * idx.shape[1]  # stays on the device: no per-batch host sync
        sums.correct += torch.stack(
            [(lk.detach().argmax(1) == yk).sum() for lk, yk in zip(logits, y)]
        )
        sums.seen += idx.shape[1]


#: batches trained between two looks at the clock, and the seconds between progress lines:
#: a stretch of training between two evaluations that takes longer says how far it is
PROGRESS_BATCHES = 32
PROGRESS_S = 10.0


class Progress:
    """Logs how far a long stretch of training is, at most every :data:`PROGRESS_S` seconds:
    one clock read per chunk of :data:`PROGRESS_BATCHES` batches, nothing on the hot path."""

    def __init__(self, learner: StackTrainer, target: int) -> None:
        self.learner, self.begin, self.target = learner, learner.step, target
        self.t0 = self.last = time.perf_counter()

    def tick(self) -> None:
        now = time.perf_counter()
        if now - self.last < PROGRESS_S or self.learner.step >= self.target:
            return
        self.last = now
        done, todo = self.learner.step - self.begin, self.target - self.begin
        per_epoch = self.learner.per_epoch
        epoch = -(-self.learner.step // per_epoch)  # the epoch the last step belongs to
        log.info(
            "training: step %d/%d to the next evaluation (%.0f%%; epoch %d, %d/%d of its steps), "
            "%.0f s so far, about %.0f s to go",
            done,
            todo,
            100 * done / todo,
            epoch,
            self.learner.step - (epoch - 1) * per_epoch,
            per_epoch,
            now - self.t0,
            (now - self.t0) * (todo - done) / max(done, 1),
        )


class StackTrainer:
    """A training position of S seeds trained as one stacked model: their nets, one optimizer
    over all their parameters, one batch-order generator per seed, steps done (the same for
    every seed).

    Epochs draw a fresh permutation of the training split per seed from its generator (seeded
    with the seed) and step through its batch-size slices; ``advance`` may stop mid-epoch (log
    schedules) and each seed's state keeps its epoch's order, so training resumes exactly. A
    seed's state (:meth:`state_dict`) is the state of its net trained alone: the same keys, the
    same optimizer state, usable by a stack of any size.
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        optimizer: torch.optim.Optimizer,
        data: Dataset,
        batch_size: int,
        seeds: Sequence[int],
    ) -> None:
        self.models, self.seeds = list(models), [int(s) for s in seeds]
        self.optimizer, self.data, self.batch_size = optimizer, data, batch_size
        self.device = data.x_train.device
        self.generators = [torch.Generator(device=self.device).manual_seed(s) for s in self.seeds]
        self.n = len(data.y_train)
        self.per_epoch = steps_per_epoch(self.n, batch_size)
        self.step = 0
        self.order: torch.Tensor | None = None  # (S, n): each seed's order of this epoch
        self.epoch_batches: list[torch.Tensor] = []  # [(S, B)] slices of the order
        self.initial = [copy.deepcopy(self.state_dict(k)) for k in range(len(self.models))]

    def advance(self, step: int) -> list[SeedStats]:
        """Train until ``step`` optimizer steps are done; per seed, the mean loss and accuracy
        of the samples seen since the last call (NaN if none), or the ``TrainingDiverged`` of
        a seed whose loss over them is NaN or infinite."""
        sums = TrainSums.zeros(self.device, len(self.models))
        begin = self.step
        progress = Progress(self, step)
        while self.step < step:
            pos = self.step % self.per_epoch
            if pos == 0:
                self.new_epoch()
            # in chunks of batches, so that a long stretch says how far it is between them
            stop = min(self.per_epoch, pos + step - self.step, pos + PROGRESS_BATCHES)
            train_batches(
                self.models, self.optimizer, self.data, self.epoch_batches[pos:stop], sums
            )
            self.step += stop - pos
            progress.tick()
        if sums.seen == 0:
            return [dict(NO_TRAINING) for _ in self.models]
        stats: list[SeedStats] = []
        for loss, correct in zip(sums.loss.tolist(), sums.correct.tolist()):  # one host sync
            train_loss = loss / sums.seen
            if math.isfinite(train_loss):
                stats.append({"train_loss": train_loss, "train_acc": correct / sums.seen})
            else:
                stats.append(
                    TrainingDiverged(
                        f"training diverged: train_loss is {train_loss} over optimizer steps "
                        f"{begin + 1}..{self.step} (epoch {self.step / self.per_epoch:.2f}); the "
                        "rows measured before are kept. Try a smaller optimizer.lr."
                    )
                )
        return stats

    def new_epoch(self) -> None:
        """Draw every seed's order of the next epoch."""
        orders = [
            torch.cat(list(batches(self.n, self.batch_size, g, self.device)))
            for g in self.generators
        ]  # [(n,)]
        self.set_order(torch.stack(orders))

    def set_order(self, order: torch.Tensor | None) -> None:
        self.order = order  # (S, n)
        self.epoch_batches = [] if order is None else list(order.split(self.batch_size, dim=1))

    def drop(self, positions: Sequence[int]) -> None:
        """Take the seeds at ``positions`` out of the stack; the others go on unchanged."""
        if not positions:
            return
        keep = [k for k in range(len(self.models)) if k not in set(positions)]
        for name in ("models", "seeds", "generators", "initial"):
            setattr(self, name, [getattr(self, name)[k] for k in keep])
        self.optimizer = optimizer_over(self.optimizer, self.models)
        self.set_order(None if self.order is None or not keep else self.order[keep])

    def state_dict(self, k: int = 0) -> dict[str, Any]:
        """Everything needed to continue training seed ``k`` bit for bit, alone or stacked."""
        mid_epoch = self.step % self.per_epoch != 0
        return {
            "model": self.models[k].state_dict(),
            "optimizer": seed_optimizer_state(self.optimizer, self.models[k]),
            "generator": self.generators[k].get_state(),
            "torch_rng": torch.get_rng_state(),
            "step": self.step,
            "order": self.order[k].clone() if mid_epoch and self.order is not None else None,
        }

    def load_state_dict(self, state: Mapping[str, Any], k: int = 0) -> None:
        """Put seed ``k`` at ``state``; every seed of a stack must be put at the same step."""
        self.models[k].load_state_dict(state["model"])
        load_seed_optimizer_state(self.optimizer, self.models[k], state["optimizer"])
        self.generators[k].set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.step = int(state["step"])
        order = state["order"]
        if order is None:
            self.set_order(None)
            return
        if self.order is None:
            self.set_order(order.new_empty(len(self.models), len(order)).to(self.device))
        self.order[k] = order.to(self.device)  # the slices are views: they follow


def optimizer_over(
    optimizer: torch.optim.Optimizer, models: Sequence[nn.Module]
) -> torch.optim.Optimizer:
    """An optimizer like ``optimizer`` over the parameters of ``models``, each parameter with
    the state it has in ``optimizer``."""
    params = [p for m in models for p in m.parameters()]
    new = type(optimizer)(params, **optimizer.defaults)
    new.state.update({p: optimizer.state[p] for p in params if p in optimizer.state})
    return new


def _over_exactly(optimizer: torch.optim.Optimizer, params: list[torch.Tensor]) -> bool:
    """Whether ``optimizer`` holds exactly ``params``, in order (compared by identity)."""
    held = [p for g in optimizer.param_groups for p in g["params"]]
    return len(held) == len(params) and all(a is b for a, b in zip(held, params))


def seed_optimizer_state(optimizer: torch.optim.Optimizer, model: nn.Module) -> dict[str, Any]:
    """The ``state_dict`` an optimizer over ``model``'s parameters alone would have."""
    params = list(model.parameters())
    if _over_exactly(optimizer, params):
        return optimizer.state_dict()  # a stack of one
    return optimizer_over(optimizer, [model]).state_dict()


def load_seed_optimizer_state(
    optimizer: torch.optim.Optimizer, model: nn.Module, state: Mapping[str, Any]
) -> None:
    """Load the state of an optimizer over ``model``'s parameters alone into ``optimizer``."""
    params = list(model.parameters())
    if _over_exactly(optimizer, params):
        optimizer.load_state_dict(state)
        return
    alone = type(optimizer)(params, **optimizer.defaults)
    alone.load_state_dict(state)
    for p in params:
        optimizer.state.pop(p, None)
        if p in alone.state:
            optimizer.state[p] = alone.state[p]


# ---------------------------------------------------------------------------------------------
# evaluation and estimation


# Most values (floats) the widest probe of one evaluation batch may hold on the CPU: 16 MB of
# float32, about what a last-level cache holds, so that a wide conv's activation maps do not go
# through memory at every op (the CNN's pass is about twice as fast; docs/speed.md). Nets up to
# 1,024 units wide keep the configured 4096 rows (the MLPs' numbers do not depend on it).
EVAL_BLOCK_FLOATS = 2**22


def eval_batch_rows(model: nn.Module, batch_size: int) -> int:
    """Rows per evaluation batch: ``batch_size``, cut so that ``rows * widest probe`` stays
    within ``EVAL_BLOCK_FLOATS`` (at least 1 row). Models without ``probe_units`` keep it."""
    widest = max(getattr(model, "probe_units", None) or [1])
    return max(1, min(batch_size, EVAL_BLOCK_FLOATS // widest))


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Dataset,
    batch_size: int,
    probe_output: bool = False,
    out: list[torch.Tensor] | None = None,
    samples: str = "eval",
) -> tuple[dict[str, float], list[torch.Tensor]]:
    """Run the probe samples through the net once; return the evaluation metrics and probes.

    The probes are one (n_probe, units) tensor per probed layer (a conv's map flattened
    channel-major), on the data's device, over the samples ``data.probe_set(samples)``
    (``probe.samples``: the evaluation split, the training split, or both); with
    ``probe_output`` the softmax output (n_probe, n_classes) is appended as the last layer.
    ``eval_loss`` and ``eval_acc`` are always over the evaluation split: the first rows of the
    pass when it holds them, else (``samples="train"``) one more pass without probes.
    Each batch's probes are copied into preallocated (n_probe, units) tensors as they come
    (one copy, no ``torch.cat`` of all the batches at the end: the CNN's conv1 probe alone is
    10,000 x 12,544 floats, 500 MB, on Fashion-MNIST). The batch size changes memory and
    speed only, not the values (up to float rounding of the summation order).

    On the CPU ``batch_size`` is an upper bound: the batch is cut further so that the widest
    probe of a batch holds at most ``EVAL_BLOCK_FLOATS`` values (see :func:`eval_batch_rows`).

    ``out``: the layers returned by an earlier call, to be overwritten when their shapes match
    (:class:`PointEstimate` passes them at every point): a fresh buffer's pages are faulted in
    by the kernel at first write, which for the CNN's 750 MB of probes on Fashion-MNIST is a
    large part of the pass.
    """
    model.eval()
    loss_sum, correct = 0.0, 0
    x_probe, y_probe = data.probe_set(samples)  # (n, ...), (n,): the evaluation split first
    n = len(y_probe)
    eval_rows = len(data.y_eval) if samples != "train" else 0  # leading rows of the pass
    if x_probe.device.type == "cpu":  # a GPU runs the configured batch size
        batch_size = eval_batch_rows(model, batch_size)
    layers: list[torch.Tensor] = []  # [(n, units)], allocated at the first batch
    start = 0
    for x, y in zip(x_probe.split(batch_size), y_probe.split(batch_size)):
        logits, probes = model(x, probe=True)  # (B, n_classes), [(B, *unit_shape)]
        m = min(len(y), max(0, eval_rows - start))  # this batch's evaluation rows (first)
        if m:
            loss_sum += F.cross_entropy(logits[:m], y[:m], reduction="sum")
            correct += (logits[:m].argmax(1) == y[:m]).sum()
        if probe_output:
            probes = [*probes, logits.softmax(1)]  # (B, n_classes)
        if len(y) == n:  # one batch: the probes are the layers, no copy for dense ones
            layers = [p.flatten(1).contiguous() for p in probes]  # [(n, units)]
            break
        if not layers:
            layers = reuse_or_allocate(out, probes, n)  # [(n, units)]
        for layer, p in zip(layers, probes):
            # one strided copy, channel-major whatever p's memory format (a conv's NHWC map
            # goes straight into its rows: no flattened temporary)
            layer[start : start + len(y)].view(p.shape).copy_(p)  # (B, *unit_shape)
        start += len(y)
    if samples == "train":  # the evaluation split is not in the pass: its figures alone
        for x, y in zip(data.x_eval.split(batch_size), data.y_eval.split(batch_size)):
            logits = model(x)  # (B, n_classes)
            loss_sum += F.cross_entropy(logits, y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
    n_eval = len(data.y_eval)
    metrics = {"eval_loss": float(loss_sum) / n_eval, "eval_acc": float(correct) / n_eval}
    return metrics, layers


class PointEstimate:
    """A point's rows: the evaluation pass and the estimate, or the rows another job stored.

    Called with an evaluation point and its training figures, returns the point's rows (one
    per probed layer: estimates, training and evaluation figures) and a note for the log. With
    ``shared``, rows another job of this training key stored are read instead of evaluating,
    and an evaluation pass also estimates the rows the other jobs lack. The probes' buffers are
    reused from point to point.
    """

    def __init__(
        self,
        model: nn.Module,
        data: Dataset,
        estimator: Estimator,
        eval_batch_size: int,
        probe_output: bool = False,
        shared: SharedEstimates | None = None,
        samples: str = "eval",
    ) -> None:
        self.model, self.data, self.estimator = model, data, estimator
        self.eval_batch_size, self.probe_output, self.shared = eval_batch_size, probe_output, shared
        self.samples = samples  # probe.samples
        self.buffers: list[torch.Tensor] | None = None  # [(n_probe, units)], reused

    def __call__(self, point: EvalPoint, train_stats: dict) -> tuple[list[dict], str]:
        shared = self.shared
        stored = shared.load(point.index) if shared is not None else None
        if stored is not None:
            return stored, "rows from another job's evaluation"
        with_output = self.probe_output or (shared is not None and shared.needs_output)
        eval_stats, self.buffers = evaluate(
            self.model, self.data, self.eval_batch_size, with_output, self.buffers, self.samples
        )
        figures = {**train_stats, **eval_stats}

        def rows(estimator: Estimator, layers: list[torch.Tensor], output: bool) -> list[dict]:
            used = layers if output else layers[: len(self.model.probe_names)]
            names = probe_names(self.model, output)
            measured = measure(used, self.data, estimator, names, self.samples)
            return [{"epoch": point.epoch, "step": point.step, **r, **figures} for r in measured]

        new = rows(self.estimator, self.buffers, self.probe_output)
        others = shared.estimate_others(point.index, rows, self.buffers) if shared else 0
        return new, f"+ {others} other job(s)' estimates" if others else ""


def reuse_or_allocate(
    out: list[torch.Tensor] | None, probes: list[torch.Tensor], n: int
) -> list[torch.Tensor]:
    """(n, units) buffers for ``probes``' layers: ``out`` if it fits them, else new ones."""
    shapes = [(n, p[0].numel()) for p in probes]
    fits = out is not None and [(tuple(b.shape), b.dtype, b.device) for b in out] == [
        (s, p.dtype, p.device) for s, p in zip(shapes, probes)
    ]
    return list(out) if fits else [p.new_empty(s) for s, p in zip(shapes, probes)]


def measure(
    layers: list[torch.Tensor],
    data: Dataset,
    estimator: Estimator,
    names: list[str],
    samples: str = "eval",
) -> list[dict]:
    """One row per probed layer: its estimates and extras, on ``data.probe_set(samples)``."""
    X, Y = data.probe_set(samples)  # the samples the layers hold, in the same order
    rows = []
    for i, (name, T) in enumerate(zip(names, layers), start=1):
        est = estimator(T, X, Y)
        rows.append({"layer": i, "layer_name": name, "units": T.shape[1], **est})
    return rows


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
