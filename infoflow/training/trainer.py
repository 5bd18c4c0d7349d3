"""Training a stack of seeds on whole tensors: one Python step, one backward and one optimizer
step for all of them, each seed's numbers those of its net trained alone (bit for bit on the
CPU); its position (nets, optimizer state, batch orders, step) saved and restored per seed.

An epoch shuffles an index tensor per seed and slices batches; the loss and accuracy sums stay
on the device and are read once per evaluation point (no per-batch host sync), which is also
where a NaN/inf loss is detected, per seed.

This is ``hydra.launcher.stack=exact``; ``batched`` runs every seed's layers as one kernel
(:class:`infoflow.training.batched.BatchedStackTrainer`, a subclass: the same interface, batch
orders and per-seed states).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from infoflow.errors import UserError
from infoflow.training.data import Dataset, batches
from infoflow.training.schedule import steps_per_epoch

log = logging.getLogger(__name__)

NO_TRAINING = {"train_loss": math.nan, "train_acc": math.nan}


class TrainingDiverged(UserError, RuntimeError):
    """The training loss became NaN or infinite; the job stops and keeps its finished rows."""


#: one seed's figures since the last point, or the TrainingDiverged that ended it
SeedStats = dict[str, float] | TrainingDiverged


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
    rngs: list[torch.Tensor] | None = None,
) -> None:
    """The hot loop: one optimizer step of every seed per (S, B) index batch of the training
    split, adding each seed's batch loss and accuracy to ``sums`` on the device.

    Each seed's net runs on its own batch as it would alone (the same ops on the same shapes),
    all seeds in one Python step: one backward through the sum of their losses (the gradient
    of each seed's loss is exactly 1) and one optimizer step over every seed's parameters (per
    parameter: each seed's step is its own). So a seed's numbers are bit for bit those of a
    stack of one. (A batched matmul over a leading seed axis was measured not to be: see
    docs/seeds.md.) The nets must be in training mode (:meth:`StackTrainer.advance` puts them
    there once per call). ``rngs``: each seed's state of the global generator (nets with Dropout),
    put in place for its forward pass and taken back after it, so that its draws are its own.
    """
    device = data.x_train.device
    for idx in index_batches:  # (S, B): seed k's batch in row k
        x, y = gather(data.x_train, idx), gather(data.y_train, idx)  # (S, B, C, H, W), (S, B)
        if rngs is None:
            logits = [model(xk) for model, xk in zip(models, x)]  # S x (B, n_classes)
        else:
            logits = []
            for k, (model, xk) in enumerate(zip(models, x)):
                set_rng_state(device, rngs[k])
                logits.append(model(xk))  # (B, n_classes)
                rngs[k] = get_rng_state(device)
        loss = torch.stack([F.cross_entropy(lk, yk) for lk, yk in zip(logits, y)])  # (S,)
        optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        optimizer.step()
        sums.loss += loss.detach() * idx.shape[1]  # stays on the device: no per-batch host sync
        sums.correct += torch.stack(
            [(lk.detach().argmax(1) == yk).sum() for lk, yk in zip(logits, y)]
        )
        sums.seen += idx.shape[1]


def gather(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``t[idx]`` for an (S, B) index of ``t``'s rows: (S, B, ...), the same copy by
    ``index_select`` (4x faster than advanced indexing on the CPU for the Tishby task's rows)."""
    return t.index_select(0, idx.flatten()).view(*idx.shape, *t.shape[1:])


#: batches trained between two looks at the clock, and the seconds between progress lines:
#: a stretch of training between two evaluations that takes longer says how far it is
PROGRESS_BATCHES = 64
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


def get_rng_state(device: torch.device) -> torch.Tensor:
    """The state of the global generator that ``device``'s random ops draw from."""
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()


def set_rng_state(device: torch.device, state: torch.Tensor) -> None:
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:
        torch.set_rng_state(state)


def stochastic(model: nn.Module) -> bool:
    """Whether training ``model`` draws random numbers: it holds a Dropout module (any of
    ``torch.nn``'s) or declares ``stochastic = True``."""
    return bool(getattr(model, "stochastic", False)) or any(
        isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules()
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

    Nets that draw random numbers in training (:func:`stochastic`: Dropout) draw them from
    their own seed's state of the global generator (``rngs``: each taken when its net was
    built; None: the current state), so that a seed's masks are those of its net alone.
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        optimizer: torch.optim.Optimizer,
        data: Dataset,
        batch_size: int,
        seeds: Sequence[int],
        rngs: Sequence[torch.Tensor | None] | None = None,
    ) -> None:
        self.models, self.seeds = list(models), [int(s) for s in seeds]
        self.optimizer, self.data, self.batch_size = optimizer, data, batch_size
        self.device = data.x_train.device
        self.rngs: list[torch.Tensor] | None = None
        if any(stochastic(m) for m in self.models):
            given = list(rngs) if rngs is not None else [None] * len(self.models)
            self.rngs = [get_rng_state(self.device) if r is None else r for r in given]
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
        # once per call, not per chunk: train() walks every module, and a full-batch net's
        # chunk is a single step
        for model in self.models:
            model.train()
        progress = Progress(self, step)
        while self.step < step:
            pos = self.step % self.per_epoch
            if pos == 0:
                self.new_epoch()
            # in chunks of batches, so that a long stretch says how far it is between them
            stop = min(self.per_epoch, pos + step - self.step, pos + PROGRESS_BATCHES)
            self.train_batches(self.epoch_batches[pos:stop], sums)
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

    def train_batches(self, index_batches: Sequence[torch.Tensor], sums: TrainSums) -> None:
        """One optimizer step of every seed per (S, B) index batch (:func:`train_batches`)."""
        if self.rngs is None:  # the hot loop's signature before per-seed RNG states
            train_batches(self.models, self.optimizer, self.data, index_batches, sums)
        else:
            train_batches(self.models, self.optimizer, self.data, index_batches, sums, self.rngs)

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
        self.keep_seeds(keep)
        if keep:  # an optimizer over no parameter is an error in torch
            self.optimizer = optimizer_over(self.optimizer, self.models)

    def keep_seeds(self, keep: Sequence[int]) -> None:
        """Keep the per-seed lists and orders of the seeds at positions ``keep`` only."""
        for name in ("models", "seeds", "generators", "initial", "rngs"):
            if getattr(self, name) is not None:
                setattr(self, name, [getattr(self, name)[k] for k in keep])
        self.set_order(None if self.order is None or not keep else self.order[list(keep)])

    def state_dict(self, k: int = 0) -> dict[str, Any]:
        """Everything needed to continue training seed ``k`` bit for bit, alone or stacked."""
        mid_epoch = self.step % self.per_epoch != 0
        return {
            "model": self.model_state(k),
            "optimizer": self.optimizer_state(k),
            "generator": self.generators[k].get_state(),
            "torch_rng": self.rngs[k].clone() if self.rngs else torch.get_rng_state(),
            "step": self.step,
            "order": self.order[k].clone() if mid_epoch and self.order is not None else None,
        }

    def model_state(self, k: int) -> dict[str, Any]:
        """Seed ``k``'s ``model.state_dict()``."""
        return self.models[k].state_dict()

    def optimizer_state(self, k: int) -> dict[str, Any]:
        """The ``state_dict`` an optimizer over seed ``k``'s parameters alone would have."""
        return seed_optimizer_state(self.optimizer, self.models[k])

    def load_optimizer_state(self, state: Mapping[str, Any], k: int) -> None:
        """Load the state of an optimizer over seed ``k``'s parameters alone."""
        load_seed_optimizer_state(self.optimizer, self.models[k], state)

    def load_state_dict(self, state: Mapping[str, Any], k: int = 0) -> None:
        """Put seed ``k`` at ``state``; every seed of a stack must be put at the same step."""
        self.models[k].load_state_dict(state["model"])
        self.load_optimizer_state(state["optimizer"], k)
        self.generators[k].set_state(state["generator"])
        if self.rngs:
            self.rngs[k] = state["torch_rng"].clone()
        else:
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
