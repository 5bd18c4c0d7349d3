"""The training loop: train an epoch on whole tensors, evaluate, estimate per-layer MI.

``run`` reads top-down: measure the untrained net (epoch 0), then for every epoch train on
shuffled index slices, run the evaluation split through the net once without autograd, and hand
each probed layer to the estimator. Each epoch's rows go to ``on_epoch`` as soon as they exist.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from infoflow.data import Dataset, batches

log = logging.getLogger(__name__)

Estimator = Callable[..., dict]


def probe_names(model: nn.Module, probe_output: bool) -> list[str]:
    """Names of the probed layers, in the order ``evaluate`` returns them."""
    return [*model.probe_names, "output"] if probe_output else list(model.probe_names)


@dataclass(frozen=True)
class TrainerConfig:
    epochs: int = 5
    batch_size: int = 256
    eval_batch_size: int = 4096


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: Dataset,
    batch_size: int,
    generator: torch.Generator,
) -> dict[str, float]:
    """One pass over the shuffled training split; mean loss and accuracy over its samples."""
    model.train()
    device = data.x_train.device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    for idx in batches(len(data.y_train), batch_size, generator, device):
        x, y = data.x_train[idx], data.y_train[idx]  # (B, C, H, W), (B,)
        logits = model(x)  # (B, n_classes)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * len(y)  # stays on the device: no per-batch host sync
        correct += (logits.detach().argmax(1) == y).sum()
    n = len(data.y_train)
    return {"train_loss": loss_sum.item() / n, "train_acc": correct.item() / n}


@torch.no_grad()
def evaluate(
    model: nn.Module, data: Dataset, batch_size: int, probe_output: bool = False
) -> tuple[dict[str, float], list[torch.Tensor]]:
    """Run the evaluation split through the net once; return its metrics and the probes.

    The probes are one (n_eval, units) tensor per probed layer, on the data's device; with
    ``probe_output`` the softmax output (n_eval, n_classes) is appended as the last layer.
    """
    model.eval()
    loss_sum, correct, chunks = 0.0, 0, []
    for x, y in zip(data.x_eval.split(batch_size), data.y_eval.split(batch_size)):
        logits, probes = model(x, probe=True)  # (B, n_classes), [(B, units)]
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
        if probe_output:
            probes = [*probes, logits.softmax(1)]  # (B, n_classes)
        chunks.append(probes)
    layers = [torch.cat(parts) for parts in zip(*chunks)]  # [(n_eval, units)]
    n = len(data.y_eval)
    metrics = {"eval_loss": float(loss_sum) / n, "eval_acc": float(correct) / n}
    return metrics, layers


def measure(
    layers: list[torch.Tensor], data: Dataset, estimator: Estimator, names: list[str]
) -> list[dict]:
    """One row per probed layer: its estimates and extras."""
    rows = []
    for i, (name, T) in enumerate(zip(names, layers), start=1):
        est = estimator(T, data.x_eval, data.y_eval)
        rows.append({"layer": i, "layer_name": name, "units": T.shape[1], **est})
    return rows


def run(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: Dataset,
    estimator: Estimator,
    trainer: TrainerConfig,
    seed: int,
    on_epoch: Callable[[list[dict]], None],
    probe_output: bool = False,
) -> None:
    """Train for ``trainer.epochs`` epochs, estimating after each one and at epoch 0."""
    generator = torch.Generator(device=data.x_train.device).manual_seed(seed)
    names = probe_names(model, probe_output)
    train_stats = {"train_loss": math.nan, "train_acc": math.nan}
    for epoch in range(trainer.epochs + 1):
        t0 = time.perf_counter()
        if epoch > 0:
            train_stats = train_epoch(model, optimizer, data, trainer.batch_size, generator)
        t1 = time.perf_counter()
        eval_stats, layers = evaluate(model, data, trainer.eval_batch_size, probe_output)
        rows = measure(layers, data, estimator, names)
        t2 = time.perf_counter()
        on_epoch([{"epoch": epoch, **r, **train_stats, **eval_stats} for r in rows])
        log.info(
            "epoch %d/%d  train_loss %.4f  train_acc %.3f  eval_acc %.3f  I_XT %s  I_TY %s  "
            "(train %.2fs, estimate %.2fs)",
            epoch,
            trainer.epochs,
            train_stats["train_loss"],
            train_stats["train_acc"],
            eval_stats["eval_acc"],
            _fmt([r["I_XT"] for r in rows]),
            _fmt([r["I_TY"] for r in rows]),
            t1 - t0,
            t2 - t1,
        )


def _fmt(values: list[float]) -> str:
    return "[" + " ".join(f"{v:.2f}" for v in values) + "]"
