"""The probe pass and the estimate: the probe samples through a net once without autograd, the
outputs of the probed modules (``probe.layers``, captured by forward hooks during that pass
only) flattened per sample, each to the estimator, one row per layer."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from infoflow.errors import UserError
from infoflow.training.data import Dataset
from infoflow.training.schedule import EvalPoint

if TYPE_CHECKING:  # what a job hands in; never imported at run time (layers)
    from infoflow.sweep.sharing import SharedEstimates

Estimator = Callable[..., dict]


class ProbeError(UserError, ValueError):
    """``probe.layers`` names no module, or a module that cannot be probed; says which."""


def name_pattern(pattern: str) -> re.Pattern:
    """A module-name glob as a regex: ``*`` and ``?`` stay within one dotted part
    (``layer*`` is ``layer1``, not ``layer1.0.conv1``), ``**`` spans parts, ``[..]`` as in
    ``fnmatch``."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append(r"[^.]*")
            i += 1
        elif pattern[i] == "?":
            out.append(r"[^.]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 1 :]:
            j = pattern.index("]", i + 1)
            out.append(pattern[i : j + 1].replace("[!", "[^"))
            i = j + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def default_layers(model: nn.Module) -> list[str]:
    """What ``probe.layers=null`` probes: the model's top-level modules but the last (its head):
    the built-in nets' layers (``fc1``..``fcN``; ``conv1``, ``conv2``), a torchvision ResNet's
    stem, stages and pooling."""
    return [name for name, _ in model.named_children()][:-1]


@dataclass(frozen=True)
class Probe:
    """The probed modules of one net, in the order their outputs are complete in a forward
    pass: ``names`` as ``model.named_modules()`` spells them, ``units`` each output's size
    per sample (flattened channel-major)."""

    names: tuple[str, ...]
    modules: tuple[nn.Module, ...]
    units: tuple[int, ...]

    def layer_names(self, output: bool = False) -> list[str]:
        """The rows' ``layer_name``s, in order; ``output``: the softmax output last."""
        return [*self.names, "output"] if output else list(self.names)

    @classmethod
    def of(cls, model: nn.Module, layers: Sequence[str] | None, example: torch.Tensor) -> Probe:
        """Resolve ``layers`` (names or globs; None: :func:`default_layers`) on ``model`` and
        check them with one forward pass of ``example`` (a batch of one or more samples) in
        ``eval()`` mode: every pattern matches a module, every module runs once per pass and
        returns one tensor. Raises :class:`ProbeError` saying what is wrong."""
        patterns = default_layers(model) if layers is None else list(layers)
        named = [(n, m) for n, m in model.named_modules() if n]
        if not patterns:
            raise ProbeError(
                f"probe.layers: no layer to probe in {type(model).__name__} (null probes the "
                f"top-level modules but the last, and it has {len(list(model.children()))}); "
                f"name them, e.g. probe.layers=[{','.join(n for n, _ in named[:2])}]; its modules: "
                + module_list(named)
            )
        chosen: dict[str, nn.Module] = {}
        for pattern in patterns:
            regex = name_pattern(str(pattern))
            hits = [(n, m) for n, m in named if regex.match(n)]
            if not hits:
                raise ProbeError(
                    f"probe.layers: {pattern!r} matches no module of {type(model).__name__}; "
                    f"its modules: {module_list(named)}"
                )
            chosen.update(hits)
        return cls._checked(model, chosen, example)

    @classmethod
    def _checked(cls, model: nn.Module, chosen: dict[str, nn.Module], example) -> Probe:
        calls: dict[str, list] = {name: [] for name in chosen}
        done: list[str] = []  # names in the order their modules return

        def hook(name):
            def record(module, inputs, output):
                calls[name].append(output)
                done.append(name)

            return record

        handles = [m.register_forward_hook(hook(n)) for n, m in chosen.items()]
        was_training = model.training
        try:
            with torch.random.fork_rng(devices=_rng_devices(example)), torch.no_grad():
                model.eval()
                model(example)
        finally:
            for h in handles:
                h.remove()
            model.train(was_training)
        for name, outputs in calls.items():
            if len(outputs) != 1:
                raise ProbeError(
                    f"probe.layers: module {name!r} runs {len(outputs)} times in one forward "
                    f"pass of {type(model).__name__}"
                    + (
                        " (a module the net reuses, like one activation for several layers): "
                        "probe a module that runs once, e.g. the block around it"
                        if outputs
                        else ": its output is never computed, nothing to measure"
                    )
                )
            if not isinstance(outputs[0], torch.Tensor):
                raise ProbeError(
                    f"probe.layers: module {name!r} returns a {type(outputs[0]).__name__}, not "
                    "one tensor: probe one of its submodules whose output is a tensor"
                )
        names = sorted(chosen, key=done.index)
        units = [calls[n][0][0].numel() for n in names]
        return cls(tuple(names), tuple(chosen[n] for n in names), tuple(units))


def module_list(named: list[tuple[str, nn.Module]], limit: int = 40) -> str:
    shown = ", ".join(f"{n} ({type(m).__name__})" for n, m in named[:limit])
    return shown + (f", ... ({len(named)} in all)" if len(named) > limit else "")


def _rng_devices(example: torch.Tensor) -> list:
    return [example.device] if example.device.type == "cuda" else []


def activations(
    model: nn.Module, x: torch.Tensor, layers: Sequence[str] | None = None
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The logits of ``x`` and the probed layers' outputs, each (B, units), in ``eval()`` mode
    without autograd: one probe pass over one batch (for tests and benchmarks)."""
    probe = Probe.of(model, layers, x[:1])
    with torch.no_grad(), Capture(probe, len(x)) as capture:
        model.eval()
        logits = model(x)  # (B, n_classes)
    return logits, capture.layers


class Capture:
    """Forward hooks on a probe's modules, registered for one pass (a ``with`` block), that copy
    each batch's outputs into (n, units) rows at ``start``: the copy is made as the module
    returns, before the net can change its output in place (``nn.ReLU(inplace=True)``).

    ``out``: buffers of an earlier pass, reused where shape, dtype and device match (a fresh
    buffer's pages are faulted in by the kernel at first write: for the CNN's 750 MB of probes
    on Fashion-MNIST a large part of the pass). ``extra``: more layers' widths (the softmax
    output), filled by :meth:`put`.
    """

    def __init__(
        self,
        probe: Probe,
        n: int,
        out: list[torch.Tensor] | None = None,
        extra: Sequence[int] = (),
    ) -> None:
        self.probe, self.n, self.out = probe, n, out or []
        self.units = [*probe.units, *extra]
        self.slots: list[torch.Tensor | None] = [None] * len(self.units)
        self.start = 0  # the first row of the batch that runs
        self.handles: list = []

    @property
    def layers(self) -> list[torch.Tensor]:
        """[(n, units)] per probed layer (and extra layer), once the pass has filled them."""
        return [t for t in self.slots if t is not None]

    def __enter__(self) -> Capture:
        self.handles = [
            m.register_forward_hook(self.hook(i)) for i, m in enumerate(self.probe.modules)
        ]
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()

    def hook(self, i: int):
        def copy(module: nn.Module, inputs, output: torch.Tensor) -> None:
            self.put(i, output)

        return copy

    def put(self, i: int, batch: torch.Tensor) -> None:
        """Copy layer ``i``'s batch (B, *unit_shape) into its rows ``start:start + B``."""
        slot = self.slots[i]
        if slot is None:
            slot = self.slots[i] = self.buffer(i, batch)
        # one strided copy, channel-major whatever the batch's memory format (a conv's NHWC
        # map goes straight into its rows: no flattened temporary)
        slot[self.start : self.start + len(batch)].view(batch.shape).copy_(batch)

    def buffer(self, i: int, like: torch.Tensor) -> torch.Tensor:
        shape = (self.n, self.units[i])
        if i < len(self.out):
            old = self.out[i]
            if (tuple(old.shape), old.dtype, old.device) == (shape, like.dtype, like.device):
                return old
        return like.new_empty(shape)  # (n, units)


# Most values (floats) the widest probe of one evaluation batch may hold on the CPU: 16 MB of
# float32, about what a last-level cache holds, so that a wide conv's activation maps do not go
# through memory at every op (the CNN's pass is about twice as fast; docs/speed.md). Nets up to
# 1,024 units wide keep the configured 4096 rows (the MLPs' numbers do not depend on it).
EVAL_BLOCK_FLOATS = 2**22


def eval_batch_rows(units: Sequence[int], batch_size: int) -> int:
    """Rows per evaluation batch: ``batch_size``, cut so that ``rows * widest probe`` stays
    within ``EVAL_BLOCK_FLOATS`` (at least 1 row)."""
    widest = max(units, default=1)
    return max(1, min(batch_size, EVAL_BLOCK_FLOATS // widest))


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Dataset,
    batch_size: int,
    probe_output: bool = False,
    out: list[torch.Tensor] | None = None,
    samples: str = "eval",
    probe: Probe | None = None,
) -> tuple[dict[str, float], list[torch.Tensor]]:
    """Run the probe samples through the net once; return the evaluation metrics and probes.

    ``probe``: the probed modules (:class:`Probe`); None: the model's default layers.

    The probes are one (n_probe, units) tensor per probed layer (a conv's map flattened
    channel-major), on the data's device, over the samples ``data.probe_set(samples)``
    (``probe.samples``: the evaluation split, the training split, or both); with
    ``probe_output`` the softmax output (n_probe, n_classes) is appended as the last layer.
    ``eval_loss`` and ``eval_acc`` are always over the evaluation split: the first rows of the
    pass when it holds them, else (``samples="train"``) one more pass without probes.
    Each batch's probes are copied by forward hooks into preallocated (n_probe, units) tensors
    as they come (one copy, no ``torch.cat`` of all the batches at the end: the CNN's conv1
    probe alone is 10,000 x 12,544 floats, 500 MB, on Fashion-MNIST). The pass runs in
    ``eval()`` mode: BatchNorm uses its running statistics, Dropout is off. The batch size
    changes memory and speed only, not the values (up to float rounding of the summation
    order).

    On the CPU ``batch_size`` is an upper bound: the batch is cut further so that the widest
    probe of a batch holds at most ``EVAL_BLOCK_FLOATS`` values (see :func:`eval_batch_rows`).

    ``out``: the layers returned by an earlier call, overwritten where their shapes match
    (:class:`PointEstimate` passes them at every point; see :class:`Capture`).
    """
    probe = probe or Probe.of(model, None, data.x_eval[:1])
    model.eval()
    loss_sum, correct = 0.0, 0
    x_probe, y_probe = data.probe_set(samples)  # (n, ...), (n,): the evaluation split first
    n = len(y_probe)
    eval_rows = len(data.y_eval) if samples != "train" else 0  # leading rows of the pass
    if x_probe.device.type == "cpu":  # a GPU runs the configured batch size
        batch_size = eval_batch_rows(probe.units, batch_size)
    extra = [data.n_classes] if probe_output else []
    with Capture(probe, n, out, extra) as capture:
        for x, y in zip(x_probe.split(batch_size), y_probe.split(batch_size)):
            logits = model(x)  # (B, n_classes); the hooks copy the probed layers' rows
            m = min(len(y), max(0, eval_rows - capture.start))  # the batch's evaluation rows
            if m:
                loss_sum += F.cross_entropy(logits[:m], y[:m], reduction="sum")
                correct += (logits[:m].argmax(1) == y[:m]).sum()
            if probe_output:
                capture.put(len(probe.units), logits.softmax(1))  # (B, n_classes)
            capture.start += len(y)
    if samples == "train":  # the evaluation split is not in the pass: its figures alone
        for x, y in zip(data.x_eval.split(batch_size), data.y_eval.split(batch_size)):
            logits = model(x)  # (B, n_classes)
            loss_sum += F.cross_entropy(logits, y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
    n_eval = len(data.y_eval)
    metrics = {"eval_loss": float(loss_sum) / n_eval, "eval_acc": float(correct) / n_eval}
    return metrics, capture.layers


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
        probe: Probe | None = None,
    ) -> None:
        self.model, self.data, self.estimator = model, data, estimator
        self.probe = probe or Probe.of(model, None, data.x_eval[:1])
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
            self.model,
            self.data,
            self.eval_batch_size,
            with_output,
            self.buffers,
            self.samples,
            self.probe,
        )
        figures = {**train_stats, **eval_stats}

        def rows(estimator: Estimator, layers: list[torch.Tensor], output: bool) -> list[dict]:
            used = layers if output else layers[: len(self.probe.names)]
            names = self.probe.layer_names(output)
            measured = measure(used, self.data, estimator, names, self.samples)
            return [{"epoch": point.epoch, "step": point.step, **r, **figures} for r in measured]

        new = rows(self.estimator, self.buffers, self.probe_output)
        others = shared.estimate_others(point.index, rows, self.buffers) if shared else 0
        return new, f"+ {others} other job(s)' estimates" if others else ""


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
