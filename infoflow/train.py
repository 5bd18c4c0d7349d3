"""The training loop: train on whole tensors, evaluate at scheduled points, estimate per-layer MI.

``run`` reads top-down: resolve the evaluation schedule (``trainer.eval``, step 0 first),
pick up the recorder's checkpoint when resuming, then walk the points. At each point the net's
state comes either from training in this process or from the training cache (another job with
the same training key trained it); the probe samples (``probe.samples``, by default the
evaluation split) go through the net once without autograd and each probed layer goes to the
estimator. The point's rows go to the recorder as soon as they exist
(:class:`infoflow.job.Job` writes table, checkpoint and status).

Training stays on the data's device: an epoch shuffles an index tensor and slices batches;
the loss and accuracy sums stay on the device and are read once per evaluation point (no
per-batch host sync), which is also where a NaN/inf loss is detected.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from infoflow.data import Dataset, batches
from infoflow.errors import UserError
from infoflow.schedule import EvalPoint, eval_points, steps_per_epoch
from infoflow.sharing import SharedEstimates
from infoflow.store import TrainCache

log = logging.getLogger(__name__)

Estimator = Callable[..., dict]
NO_TRAINING = {"train_loss": math.nan, "train_acc": math.nan}


class TrainingDiverged(UserError, RuntimeError):
    """The training loss became NaN or infinite; the job stops and keeps its finished rows."""


@dataclass(frozen=True)
class TrainerConfig:
    epochs: int = 5
    batch_size: int = 256
    eval: str | int = "epoch"


class Recorder:
    """Where a run's rows go. This one keeps them in memory; :class:`infoflow.job.Job` also
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


def run(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: Dataset,
    estimator: Estimator,
    trainer: TrainerConfig,
    seed: int,
    *,
    probe_output: bool = False,
    eval_batch_size: int = 4096,
    recorder: Recorder | None = None,
    resume: bool = False,
    cache: TrainCache | None = None,
    shared: SharedEstimates | None = None,
    probe_samples: str = "eval",
) -> list[dict]:
    """Evaluate the net at every point of ``trainer.eval``, training in between.

    Parameters
    ----------
    model, optimizer
        Freshly built from ``seed`` (their state is the untrained point 0).
    data, estimator
        The job's data set (on the job's device) and MI estimator (bits).
    trainer, seed
        Training settings and the seed of the batch order.
    probe_output, eval_batch_size
        ``probe.output`` (measure the softmax output too) and ``probe.batch_size``.
    recorder
        Receives each point's rows (one per probed layer) as soon as they are measured;
        default: kept in memory only.
    resume
        Continue from the recorder's checkpoint (rows, and the training state when training
        runs here).
    cache
        The training cache of this job's training key, or None to train in this process.
    shared
        Rows shared with the other jobs of this training key (:mod:`infoflow.sharing`).
    probe_samples
        ``probe.samples``: the samples the estimator sees (``eval``, ``train`` or ``all``,
        :meth:`infoflow.data.Dataset.probe_set`); the evaluation figures stay on the
        evaluation split.

    Returns
    -------
    list of dict
        Every row of the job. Raises ``TrainingDiverged`` if the loss becomes NaN/inf; the
        rows measured before it are with the recorder.
    """
    recorder = recorder or Recorder()
    learner = Trainer(model, optimizer, data, trainer.batch_size, seed)
    points = eval_points(trainer.eval, trainer.epochs, learner.per_epoch)
    estimate = PointEstimate(
        model, data, estimator, eval_batch_size, probe_output, shared, probe_samples
    )
    rows, start, state = recorder.resume_from() if resume else ([], 0, None)
    if state is not None and cache is None:
        learner.load_state_dict(state)
    if rows:
        log.info("resuming after evaluation %d/%d", start, len(points))
    recorder.begin(rows, start, len(points))
    if cache is not None:
        source = cached_points(learner, points, start, cache)
    elif state is None and start > 0:  # no training state: retrain, skip the points done
        source = ((p, s) for p, s in train_points(learner, points) if p.index >= start)
    else:
        source = train_points(learner, points)
    t0 = time.perf_counter()
    with closing(source):  # a failing job lets go of the cache's lock at once
        for point, train_stats in source:
            t1 = time.perf_counter()
            new, note = estimate(point, train_stats)
            recorder.record(new, point.index + 1, learner.state_dict() if cache is None else None)
            log_point(point, points, new, t1 - t0, time.perf_counter() - t1, note)
            t0 = time.perf_counter()
    recorder.finish()
    return recorder.rows


# ---------------------------------------------------------------------------------------------
# where a point's net comes from: training here, or the cache


def train_points(learner: Trainer, points: list[EvalPoint]) -> Iterator[tuple[EvalPoint, dict]]:
    """Train from the trainer's current step through the schedule, yielding each point reached.

    Point 0 is yielded (untrained, NaN training figures) when the trainer is at step 0; a
    trainer restored at a point's step continues with the next point.
    """
    for point in points:
        if point.step > learner.step or point.step == learner.step == 0:
            yield point, learner.train_to(point.step)


def cached_points(
    learner: Trainer, points: list[EvalPoint], start: int, cache: TrainCache
) -> Iterator[tuple[EvalPoint, dict]]:
    """Points ``start..`` from the cache, training the missing ones in this job if no other is.

    A stored point is loaded into the model. When a point is missing, the job that gets the
    cache's lock trains from the latest stored full state (or from the untrained net), storing
    every point; the other jobs poll for the points and take over if the trainer dies.
    """
    i = start
    while i < len(points):
        hit = cache.load_point(i)
        if hit is not None:
            learner.model.load_state_dict(hit["model"])
            yield points[i], hit["stats"]
            i += 1
            continue
        with cache.try_lock() as mine:
            if not mine:
                cache.wait(i)
                continue
            if cache.load_point(i) is not None:  # stored by a trainer that just let go
                continue
            saved = cache.load_state()
            usable = saved is not None and saved["index"] < i
            learner.load_state_dict(saved["train"] if usable else learner.initial)
            log.info("training %s from point %d", cache.dir, saved["index"] if usable else 0)
            for point, stats in train_points(learner, points):
                cache.save_point(
                    point.index, learner.model.state_dict(), stats, learner.state_dict()
                )
                if point.index >= i:
                    yield point, stats
                    i = point.index + 1


# ---------------------------------------------------------------------------------------------
# training


@dataclass
class TrainSums:
    """Running sums over the samples trained on, kept on the device (no host sync)."""

    loss: torch.Tensor  # () float: sum of per-sample cross-entropy, nats
    correct: torch.Tensor  # () long: correctly classified samples
    seen: int = 0

    @classmethod
    def zeros(cls, device: torch.device) -> TrainSums:
        return cls(torch.zeros((), device=device), torch.zeros((), device=device, dtype=torch.long))


def train_batches(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: Dataset,
    index_batches: list[torch.Tensor],
    sums: TrainSums,
) -> None:
    """The hot loop: one optimizer step per index batch of the training split, adding the
    batch's loss and accuracy to ``sums`` on the device."""
    model.train()
    for idx in index_batches:
        x, y = data.x_train[idx], data.y_train[idx]  # (B, C, H, W), (B,)
        logits = model(x)  # (B, n_classes)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sums.loss += loss.detach() * len(y)  # stays on the device: no per-batch host sync
        sums.correct += (logits.detach().argmax(1) == y).sum()
        sums.seen += len(idx)


class Trainer:
    """A training position: model, optimizer, batch-order generator, steps done.

    Epochs draw a fresh permutation of the training split from ``generator`` (seeded with the
    job's seed) and step through its batch-size slices; ``train_to`` may stop mid-epoch (log
    schedules) and the state keeps the epoch's order, so training resumes exactly.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        data: Dataset,
        batch_size: int,
        seed: int,
    ) -> None:
        self.model, self.optimizer, self.data, self.batch_size = model, optimizer, data, batch_size
        self.device = data.x_train.device
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.n = len(data.y_train)
        self.per_epoch = steps_per_epoch(self.n, batch_size)
        self.step = 0
        self.epoch_batches: list[torch.Tensor] = []  # [(B,)] index slices of the current epoch
        self.initial = copy.deepcopy(self.state_dict())

    def train_to(self, step: int) -> dict[str, float]:
        """Train until ``step`` optimizer steps are done; mean loss and accuracy of the samples
        seen since the last call (NaN if none).

        Raises
        ------
        TrainingDiverged
            if the loss of those samples is NaN or infinite.
        """
        sums = TrainSums.zeros(self.device)
        begin = self.step
        while self.step < step:
            pos = self.step % self.per_epoch
            if pos == 0:
                self.epoch_batches = list(
                    batches(self.n, self.batch_size, self.generator, self.device)
                )
            stop = min(self.per_epoch, pos + step - self.step)
            train_batches(self.model, self.optimizer, self.data, self.epoch_batches[pos:stop], sums)
            self.step += stop - pos
        if sums.seen == 0:
            return dict(NO_TRAINING)
        train_loss = sums.loss.item() / sums.seen
        if not math.isfinite(train_loss):
            raise TrainingDiverged(
                f"training diverged: train_loss is {train_loss} over optimizer steps "
                f"{begin + 1}..{self.step} (epoch {self.step / self.per_epoch:.2f}); the rows "
                f"measured before are kept. Try a smaller optimizer.lr."
            )
        return {"train_loss": train_loss, "train_acc": sums.correct.item() / sums.seen}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training bit for bit."""
        mid_epoch = self.step % self.per_epoch != 0
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "step": self.step,
            "order": torch.cat(self.epoch_batches) if mid_epoch else None,  # (n,)
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.step = int(state["step"])
        order = state["order"]
        self.epoch_batches = (
            [] if order is None else list(order.to(self.device).split(self.batch_size))
        )


# ---------------------------------------------------------------------------------------------
# evaluation and estimation


# Most values (floats) the widest probe of one evaluation batch may hold on the CPU: 16 MB of
# float32, about what a last-level cache holds, so that a wide conv's activation maps do not go
# through memory at every op (the CNN's pass is about twice as fast; README, Speed). Nets up to
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
    (``run`` passes them at every point): a fresh buffer's pages are faulted in by the kernel
    at first write, which for the CNN's 750 MB of probes on Fashion-MNIST is a large part of
    the pass.
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
) -> None:
    """One line per evaluation point; ``note`` says when rows came from or went to other jobs."""
    stats = measured[0]
    log.info(
        "eval %d/%d epoch %s step %d  train_loss %.4f  train_acc %.3f  eval_acc %.3f  "
        "I_XT %s  I_TY %s  (train %.2fs, estimate %.2fs%s)",
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
    )


def _fmt(values: list[float]) -> str:
    return "[" + " ".join(f"{v:.2f}" for v in values) + "]"
