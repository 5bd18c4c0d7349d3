"""One net trained alone, for the tests and benchmarks that drive the training loop directly:
:func:`run` and :class:`Trainer` are a stack of one (:mod:`infoflow.training.loop`)."""

from __future__ import annotations

import torch
from torch import nn

from infoflow.training.data import Dataset
from infoflow.training.loop import Member, Recorder, TrainerConfig, train_stack
from infoflow.training.probe import Estimator
from infoflow.training.trainer import StackTrainer


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
    cache=None,
    shared=None,
    probe_samples: str = "eval",
) -> list[dict]:
    """One net: :func:`train_stack` with a stack of one. Returns every row of the job; raises
    what stopped it (``TrainingDiverged`` if the loss becomes NaN/inf; the rows measured before
    are with the recorder)."""
    member = Member(model, seed, estimator, recorder or Recorder(), cache, shared)
    train_stack(
        [member],
        optimizer,
        data,
        trainer,
        probe_output=probe_output,
        eval_batch_size=eval_batch_size,
        resume=resume,
        probe_samples=probe_samples,
    )
    return member.recorder.rows


class Trainer(StackTrainer):
    """A stack of one, for code that trains one net: ``model``, ``generator``, ``train_to``
    returning the figures and raising ``TrainingDiverged``."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        data: Dataset,
        batch_size: int,
        seed: int,
    ) -> None:
        super().__init__([model], optimizer, data, batch_size, [seed])

    @property
    def model(self) -> nn.Module:
        return self.models[0]

    @property
    def generator(self) -> torch.Generator:
        return self.generators[0]

    @generator.setter
    def generator(self, value: torch.Generator) -> None:
        self.generators[0] = value

    def train_to(self, step: int) -> dict[str, float]:
        (stats,) = self.advance(step)
        if isinstance(stats, Exception):
            raise stats
        return stats
