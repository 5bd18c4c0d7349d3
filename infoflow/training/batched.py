"""A batched stack (``hydra.launcher.stack=batched``): S seeds trained as one model over a leading
seed axis, each layer one kernel for every seed and one optimizer step over the stacked
parameters; each seed's numbers those of its net alone up to float rounding.

Where :class:`infoflow.training.trainer.StackTrainer` (``stack=exact``) runs each seed's layers
as they run alone (bit for bit, and S kernels per layer), :class:`BatchedStackTrainer` holds
every parameter and buffer as one (S, ...) tensor and runs a step as:

- the built-in ``MLP``: one ``torch.baddbmm`` per layer over the seed axis;
- the built-in ``CNN``: one grouped convolution per layer (the S seeds' channels side by side,
  ``groups=S``), then one ``baddbmm`` for its linear head;
- any other net: ``torch.func.functional_call`` of the net over the stacked tensors, under
  ``torch.func.vmap`` (a net vmap cannot run, e.g. one that calls ``.item()``, is refused when
  the stack is built, with the reason and ``hydra.launcher.stack=exact`` to use instead).

One backward through the sum of the seeds' mean losses gives each seed's slice its own
gradient, and one optimizer over the stacked tensors gives each its own update: the optimizers
allowed (:data:`ELEMENTWISE`) update every element from its own gradient and state alone, so an
(S, ...) tensor's step is S steps. The only differences from a seed alone are the float
rounding of the batched kernels (their summation order).

Each seed's net (``models``) stays a net of its own: its parameters and buffers are views of
its slice of the stacked tensors, so it is always in sync (evaluations, probes, checkpoints and
the training cache use it as for ``exact``), loading a state into it loads the stack, and a
seed's state (:meth:`BatchedStackTrainer.state_dict`) is that of its net alone, exactly as
``StackTrainer``'s: it resumes in a stack of either kind and any size. Each seed keeps its own
batch order (its own generator). BatchNorm works (running statistics per seed: the buffers are
stacked). Dropout works, with ``vmap``'s ``randomness="different"``: each seed gets its own
masks, drawn from one stream for the whole stack (the first seed's state of the global
generator, saved with every seed's state), so a Dropout net's masks are not those of the seed
alone and its numbers differ from a seed alone by more than rounding (a resumed batched stack
of the same seeds continues exactly).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from infoflow.errors import UserError
from infoflow.training.data import Dataset
from infoflow.training.models import CNN, MLP, ConvBlock, Dense, pool, qualname
from infoflow.training.trainer import (
    StackTrainer,
    TrainSums,
    gather,
    get_rng_state,
    seed_optimizer_state,
    set_rng_state,
)

#: ``hydra.launcher.stack``'s values
STACK_MODES = ("exact", "batched")

#: optimizers whose step updates each element from its own gradient and state alone (and
#: per-tensor scalars that every seed shares: the step count): one of them over (S, ...)
#: tensors is S optimizers, one per seed
ELEMENTWISE: tuple[type[torch.optim.Optimizer], ...] = (
    torch.optim.SGD,
    torch.optim.Adam,
    torch.optim.AdamW,
    torch.optim.Adamax,
    torch.optim.NAdam,
    torch.optim.RAdam,
    torch.optim.RMSprop,
    torch.optim.Adagrad,
    torch.optim.Adadelta,
    torch.optim.Rprop,
    torch.optim.ASGD,
)

#: optimizer state entries that are one scalar per parameter tensor, the same for every seed
SCALAR_STATE = frozenset({"step", "eta", "mu", "mu_product"})

#: samples per seed of the forward and backward pass that checks a net when its stack is built
CHECK_SAMPLES = 4

#: a seed axis' forward: (stacked parameters, stacked buffers, x (S, B, ...)) -> (S, B, classes)
Forward = Callable[[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor], torch.Tensor], Any]


class BatchedStackError(UserError, ValueError):
    """``hydra.launcher.stack=batched`` cannot train this net or optimizer; says why and that
    ``hydra.launcher.stack=exact`` can."""


# ---------------------------------------------------------------------------------------------
# the stacked tensors


def stack_like(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """The tensors stacked on a new leading axis, each slice with the strides of a dense copy of
    the first (a channels_last conv weight stays channels_last in every slice)."""
    dense = torch.empty_like(tensors[0])  # preserve_format: the first's layout, dense
    out = torch.empty_strided(
        (len(tensors), *dense.shape),
        (dense.numel(), *dense.stride()),
        dtype=dense.dtype,
        device=dense.device,
    )  # (S, ...)
    with torch.no_grad():
        for k, t in enumerate(tensors):
            out[k].copy_(t)
    return out


class SeedAxis:
    """Every seed's parameters and buffers as (S, ...) tensors, named as in the net; each seed's
    net holds views of its slices (:meth:`bind`), so that it always has the stack's values."""

    def __init__(self, models: Sequence[nn.Module]) -> None:
        first = models[0]
        self.params: dict[str, torch.Tensor] = {}
        for name, p in first.named_parameters():
            stacked = stack_like([m.get_parameter(name).detach() for m in models])  # (S, ...)
            self.params[name] = stacked.requires_grad_(p.requires_grad)
        self.buffers: dict[str, torch.Tensor] = {
            name: stack_like([m.get_buffer(name) for m in models])  # (S, ...)
            for name, _ in first.named_buffers()
        }
        self.bind(models)

    def bind(self, models: Sequence[nn.Module]) -> None:
        """Make seed ``k``'s parameters and buffers views of the slices ``[k]``."""
        for k, model in enumerate(models):
            params = {name: t.detach()[k] for name, t in self.params.items()}
            buffers = {name: t[k] for name, t in self.buffers.items()}
            rebind(model, params, buffers)

    def select(self, keep: Sequence[int]) -> SeedAxis:
        """A new seed axis of the seeds at positions ``keep`` (copies); nobody is bound yet."""
        new = object.__new__(SeedAxis)
        new.params = {
            n: stack_like([t.detach()[k] for k in keep]).requires_grad_(t.requires_grad)
            for n, t in self.params.items()
        }
        new.buffers = {n: stack_like([t[k] for k in keep]) for n, t in self.buffers.items()}
        return new


def rebind(
    model: nn.Module, params: Mapping[str, torch.Tensor], buffers: Mapping[str, torch.Tensor]
) -> None:
    """Put ``params`` and ``buffers`` (by name) in place of the net's own, in every module that
    holds them (a parameter shared by two modules stays shared)."""
    new: dict[int, torch.Tensor] = {}
    for name, old in model.named_parameters():
        new[id(old)] = nn.Parameter(params[name], requires_grad=old.requires_grad)
    for name, old in model.named_buffers():
        new[id(old)] = buffers[name]
    for module in model.modules():
        for slots in (module._parameters, module._buffers):
            for attr, old in slots.items():
                if old is not None and id(old) in new:
                    slots[attr] = new[id(old)]


def check_alike(models: Sequence[nn.Module]) -> None:
    """The seeds' nets have the same parameters and buffers (names, shapes, dtypes, devices)."""

    def layout(m: nn.Module) -> list:
        tensors = [*m.named_parameters(), *m.named_buffers()]
        return [(n, tuple(t.shape), t.dtype, t.device) for n, t in tensors]

    first = layout(models[0])
    if any(layout(m) != first for m in models[1:]):
        raise BatchedStackError(
            f"hydra.launcher.stack=batched stacks nets of one shape, and the seeds' "
            f"{type(models[0]).__name__} nets differ in their parameters or buffers (a net "
            "whose shape depends on its seed): use hydra.launcher.stack=exact"
        )


# ---------------------------------------------------------------------------------------------
# the forward passes over the seed axis


def activation_of(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The out-of-place function of a tanh or ReLU module, None for any other."""
    if type(module) is nn.Tanh:
        return torch.tanh
    if type(module) is nn.ReLU:
        return torch.relu
    return None


def mlp_forward(model: nn.Module) -> Forward | None:
    """The built-in MLP's forward over the seed axis (one ``baddbmm`` per layer), or None when
    ``model`` is not exactly that net (a subclass, quantized layers, another activation)."""
    if type(model) is not MLP:
        return None
    blocks = model.blocks()
    names = [f"fc{i}" for i in range(1, len(blocks) + 1)]
    children = [n for n, _ in model.named_children()]
    if children != [*names, "out"] or type(model.out) is not nn.Linear:
        return None
    acts = []
    for block in blocks:
        act = activation_of(block.act) if type(block) is Dense else None
        if (
            act is None
            or type(block.linear) is not nn.Linear
            or [n for n, _ in block.named_children()] != ["linear", "act"]
        ):
            return None
        acts.append(act)
    layers = [f"{n}.linear" for n in names] + ["out"]

    def forward(params, buffers, x):
        # feature-major, W @ h: the batch is the long contiguous axis of every product (on the
        # CPU twice as fast as h @ W.T for the IB papers' 12..2-unit layers, as fast for wide)
        h = x.flatten(2).transpose(1, 2)  # (S, features, B)
        for j, layer in enumerate(layers):
            weight, bias = params[f"{layer}.weight"], params[f"{layer}.bias"]  # (S, o, i), (S, o)
            h = torch.baddbmm(bias.unsqueeze(2), weight, h)  # (S, o, B)
            if j < len(acts):
                h = acts[j](h)
        return h.transpose(1, 2)  # (S, B, n_classes)

    return forward


def cnn_forward(model: nn.Module) -> Forward | None:
    """The built-in CNN's training forward over the seed axis, or None when ``model`` is not
    exactly that net: each conv as one grouped convolution over the seeds' channels side by side
    ((B, S * C, H, W), ``groups=S``, channels_last), the head as one ``baddbmm``; pooling and
    activation in the CNN's training order (pool first for ReLU)."""
    if type(model) is not CNN or [n for n, _ in model.named_children()] != ["conv1", "conv2", "fc"]:
        return None
    convs = []
    for name in ("conv1", "conv2"):
        block = getattr(model, name)
        act = activation_of(block.act) if type(block) is ConvBlock else None
        conv = block.conv if act is not None else None
        if (
            type(conv) is not nn.Conv2d
            or conv.groups != 1
            or conv.bias is None
            or conv.padding_mode != "zeros"
        ):
            return None
        convs.append((f"{name}.conv", conv, act))
    if type(model.fc) is not nn.Linear:
        return None
    pool_first = bool(model.pool_first)

    def conv(params, h, layer, spec, seeds):
        weight = params[f"{layer}.weight"].flatten(0, 1)  # (S * O, C, k, k), channels_last
        return F.conv2d(
            h,
            weight,
            params[f"{layer}.bias"].flatten(),  # (S * O,)
            stride=spec.stride,
            padding=spec.padding,
            dilation=spec.dilation,
            groups=seeds,
        )  # (B, S * O, H', W')

    def forward(params, buffers, x):
        seeds, batch, c, height, width = x.shape  # (S, B, C, H, W)
        h = x.permute(1, 3, 4, 0, 2).reshape(batch, height, width, seeds * c)  # (B, H, W, S * C)
        h = h.permute(0, 3, 1, 2)  # (B, S * C, H, W) with channels_last strides
        for layer, spec, act in convs:
            if pool_first:  # the CNN's training order for ReLU: pool, then activate
                h = act(pool(conv(params, h, layer, spec, seeds)))
            else:
                h = pool(act(conv(params, h, layer, spec, seeds)))
        features = h.unflatten(1, (seeds, -1)).transpose(0, 1).flatten(2)  # (S, B, 2C*h*w)
        weight, bias = params["fc.weight"], params["fc.bias"]  # (S, classes, F), (S, classes)
        return torch.baddbmm(bias.unsqueeze(1), features, weight.transpose(1, 2))

    return forward


def vmap_forward(model: nn.Module) -> Forward:
    """Any net's forward over the seed axis: ``functional_call`` of a copy of ``model`` with the
    stacked tensors, under ``vmap`` (in-place buffer updates, BatchNorm's running statistics,
    land in the stacked buffers; random ops draw different numbers for every seed)."""
    template = copy.deepcopy(model).train()

    def one(params, buffers, x):
        return functional_call(template, (params, buffers), (x,))  # (B, n_classes)

    return vmap(one, randomness="different")


def forward_for(model: nn.Module) -> tuple[Forward, str]:
    """The fastest forward over the seed axis for ``model`` and its name."""
    for make, name in ((mlp_forward, "baddbmm"), (cnn_forward, "grouped conv")):
        forward = make(model)
        if forward is not None:
            return forward, name
    return vmap_forward(model), "vmap"


def check_forward(
    forward: Forward, kind: str, models: Sequence[nn.Module], axis: SeedAxis, data: Dataset
) -> None:
    """Run one forward and backward over the seed axis on a few training samples, on copies of
    the stacked tensors, and compare the logits with each seed's net (for the built-in nets'
    kernels, which restate their forward); raise :class:`BatchedStackError` if it fails."""
    n = min(CHECK_SAMPLES, len(data.y_train))
    x = data.x_train[:n].expand(len(models), *data.x_train[:n].shape)  # (S, n, ...)
    y = data.y_train[:n].expand(len(models), n)  # (S, n)
    name = f"{type(models[0]).__name__} ({qualname(type(models[0]))})"
    params = {k: t.detach().clone().requires_grad_(t.requires_grad) for k, t in axis.params.items()}
    buffers = {k: t.clone() for k, t in axis.buffers.items()}
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        try:
            logits = forward(params, buffers, x.contiguous())
            if not isinstance(logits, torch.Tensor) or logits.shape[:2] != y.shape:
                raise TypeError(
                    f"its forward returns {type(logits).__name__} "
                    f"{tuple(getattr(logits, 'shape', ()))}, not logits (batch, n_classes)"
                )
            F.cross_entropy(logits.flatten(0, 1), y.flatten()).backward()
        except Exception as err:
            why = str(err).splitlines()[0].rstrip(".") if str(err) else ""
            raise BatchedStackError(
                f"hydra.launcher.stack=batched cannot train {name} over a seed axis with "
                f"torch.func.vmap: {type(err).__name__}: {why}; train it with "
                "hydra.launcher.stack=exact (every seed's layers as they run alone)"
            ) from err
    if kind == "vmap":
        return
    with torch.no_grad():
        alone = torch.stack([m.train()(xk) for m, xk in zip(models, x)])  # (S, n, classes)
        if not torch.allclose(logits.detach(), alone, rtol=1e-4, atol=1e-5):
            raise BatchedStackError(
                f"hydra.launcher.stack=batched: the {kind} forward of {name} disagrees with its "
                f"net's own (largest difference {(logits - alone).abs().max().item():.3g}): "
                "train it with hydra.launcher.stack=exact and report this"
            )


# ---------------------------------------------------------------------------------------------
# the optimizer over the stacked tensors


def optimizer_settings(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The settings of ``optimizer``'s one parameter group; raise :class:`BatchedStackError`
    for an optimizer whose step over stacked tensors would not be per seed."""
    name = qualname(type(optimizer))
    if type(optimizer) not in ELEMENTWISE:
        allowed = ", ".join(t.__name__ for t in ELEMENTWISE)
        raise BatchedStackError(
            f"hydra.launcher.stack=batched steps every seed's parameters as one tensor, which "
            f"is each seed's own step only for optimizers that update each element on its own "
            f"({allowed}); {name} is not one of them: use hydra.launcher.stack=exact"
        )
    if len(optimizer.param_groups) != 1:
        raise BatchedStackError(
            f"hydra.launcher.stack=batched takes an optimizer with one parameter group, "
            f"{name} has {len(optimizer.param_groups)}: use hydra.launcher.stack=exact"
        )
    return {k: v for k, v in optimizer.param_groups[0].items() if k != "params"}


def per_seed(key: str, value: Any, param: torch.Tensor) -> bool:
    """Whether optimizer state entry ``key`` holds one value per element of ``param``."""
    return torch.is_tensor(value) and value.shape == param.shape and key not in SCALAR_STATE


# ---------------------------------------------------------------------------------------------
# the trainer


class BatchedStackTrainer(StackTrainer):
    """A training position of S seeds trained as one batched model: :class:`StackTrainer`'s
    interface, schedule, batch orders and per-seed states, with the steps over a seed axis
    (see the module's notes). The optimizer given (over every seed's own parameters) says the
    optimizer's type and settings, and any state it holds; the trainer steps its own, over the
    stacked tensors (``optimizer``).
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
        models = list(models)
        check_alike(models)
        self.settings = optimizer_settings(optimizer)
        held = [  # state the given optimizer holds, per seed, before the nets are rebound
            seed_optimizer_state(optimizer, m)
            if any(p in optimizer.state for p in m.parameters())
            else None
            for m in models
        ]
        self.forward, self.kind = forward_for(models[0])  # before binding: vmap copies a net
        self.axis = SeedAxis(models)
        check_forward(self.forward, self.kind, models, self.axis, data)
        self.models = models
        self.optimizer = type(optimizer)(list(self.axis.params.values()), **self.settings)
        for k, state in enumerate(held):
            if state is not None:
                self.load_optimizer_state(state, k)
        super().__init__(models, self.optimizer, data, batch_size, seeds, rngs)
        if self.rngs:  # one stream for the stack's random draws: the first seed's
            self.rngs = [self.rngs[0]] * len(self.models)

    def train_batches(self, index_batches: Sequence[torch.Tensor], sums: TrainSums) -> None:
        """One optimizer step of every seed per (S, B) index batch: one forward over the seed
        axis, one backward through the sum of the seeds' mean losses (each seed's gradient its
        own), one optimizer step over the stacked tensors."""
        seeds = len(self.models)
        for idx in index_batches:  # (S, B): seed k's batch in row k
            x, y = gather(self.data.x_train, idx), gather(self.data.y_train, idx)  # (S, B, ...)
            if self.rngs:
                set_rng_state(self.device, self.rngs[0])
            logits = self.forward(self.axis.params, self.axis.buffers, x)  # (S, B, n_classes)
            if self.rngs:
                self.rngs = [get_rng_state(self.device)] * seeds
            scores = logits.transpose(1, 2)  # (S, classes, B): the classes second, as the MLP's
            loss = F.cross_entropy(scores, y, reduction="none").mean(1)  # (S,)
            self.optimizer.zero_grad(set_to_none=True)
            loss.sum().backward()
            self.optimizer.step()
            sums.loss += loss.detach() * idx.shape[1]  # stays on the device
            # max(1).indices, argmax's first maximum: argmax over a short strided axis was 13x
            # slower (CPU, 20 seeds x 3,276 x 2 classes)
            sums.correct += (scores.detach().max(1).indices == y).sum(1)  # (S,)
            sums.seen += idx.shape[1]

    def drop(self, positions: Sequence[int]) -> None:
        """Take the seeds at ``positions`` out of the stack; the others go on unchanged (their
        slices, optimizer state included, move to smaller stacked tensors)."""
        if not positions:
            return
        keep = [k for k in range(len(self.models)) if k not in set(positions)]
        if keep:
            axis = self.axis.select(keep)
            optimizer = type(self.optimizer)(list(axis.params.values()), **self.settings)
            for old, new in zip(self.axis.params.values(), axis.params.values()):
                state = self.optimizer.state.get(old)
                if state:
                    optimizer.state[new] = {
                        key: stack_like([v[k] for k in keep]) if per_seed(key, v, old) else v
                        for key, v in state.items()
                    }
            axis.bind([self.models[k] for k in keep])
            self.axis, self.optimizer = axis, optimizer
        self.keep_seeds(keep)

    def model_state(self, k: int) -> dict[str, Any]:
        """Seed ``k``'s ``model.state_dict()``, its tensors copied out of the stacked ones (a
        saved view would carry every seed's storage)."""
        state = self.models[k].state_dict()
        for name, value in state.items():
            state[name] = value.clone()  # in place: the dict keeps its _metadata
        return state

    def optimizer_state(self, k: int) -> dict[str, Any]:
        """The ``state_dict`` of an optimizer over seed ``k``'s parameters alone: its slices of
        the stacked optimizer's state."""
        params = list(self.models[k].parameters())
        alone = type(self.optimizer)(params, **self.settings)
        for p, stacked in zip(params, self.axis.params.values()):
            state = self.optimizer.state.get(stacked)
            if state:
                alone.state[p] = {
                    key: v[k].clone() if per_seed(key, v, stacked) else copy.deepcopy(v)
                    for key, v in state.items()
                }
        return alone.state_dict()

    def load_optimizer_state(self, state: Mapping[str, Any], k: int) -> None:
        """Load the state of an optimizer over seed ``k``'s parameters alone into its slices.

        A fresh state (no step taken) clears the stacked optimizer's state: every seed of a
        stack is put at the same step, and the shared scalars (the step count) are one."""
        params = list(self.models[k].parameters())
        alone = type(self.optimizer)(params, **self.settings)
        alone.load_state_dict(state)
        if not alone.state:
            self.optimizer.state.clear()
            return
        for p, stacked in zip(params, self.axis.params.values()):
            target = self.optimizer.state[stacked]
            for key, value in alone.state.get(p, {}).items():
                if not per_seed(key, value, p):
                    target[key] = copy.deepcopy(value)
                    continue
                if key not in target or target[key].shape != stacked.shape:
                    target[key] = torch.zeros_like(stacked, dtype=value.dtype)  # (S, ...)
                with torch.no_grad():
                    target[key][k].copy_(value)


def trainer_class(stack: str) -> type[StackTrainer]:
    """The trainer of ``hydra.launcher.stack``: ``exact`` or ``batched``."""
    if stack not in STACK_MODES:
        raise BatchedStackError(
            f"hydra.launcher.stack must be one of {', '.join(STACK_MODES)}, got {stack!r}"
        )
    return BatchedStackTrainer if stack == "batched" else StackTrainer
