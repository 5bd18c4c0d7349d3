"""The probe pass and the estimate: the probe samples through a net once without autograd, each
probed layer's activations (flattened per sample) to the estimator, one row per layer."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from infoflow.training.data import Dataset
from infoflow.training.schedule import EvalPoint

if TYPE_CHECKING:  # what a job hands in; never imported at run time (layers)
    from infoflow.sweep.sharing import SharedEstimates

Estimator = Callable[..., dict]


def probe_names(model: nn.Module, probe_output: bool) -> list[str]:
    """Names of the probed layers, in the order ``evaluate`` returns them."""
    return [*model.probe_names, "output"] if probe_output else list(model.probe_names)


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
