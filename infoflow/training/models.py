"""The built-in networks (the seed notebook's MLPs and CNN, the IB papers' net) and the builders
for any other: a torchvision constructor by name, or any callable returning an ``nn.Module``.

Every model maps ``x`` of shape (batch, *in_shape) to logits (batch, n_classes); input shape and
class count come from the data. What is measured is chosen by module name (``probe.layers``,
:mod:`infoflow.training.probe`): the built-in nets register each probed layer as a top-level
module whose output is the activated layer (``fc1``, ``conv1``), so probing needs nothing of
the model beyond its modules.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from infoflow.errors import UserError
from infoflow.training.quantize import quantize_mlp_

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}
IN_PLACE = {"relu": torch.relu_, "tanh": torch.tanh_}  # for passes without autograd
INITS = ("torch", "truncated_normal", "glorot_uniform")  # model.init of the MLP


class ModelError(UserError, ValueError):
    """A model cannot be built for this data set; the message says why and what would run."""


def make_activation(name: str) -> nn.Module:
    # the name was checked once, by the job spec (infoflow.spec.RULES)
    return ACTIVATIONS[name]()


class Dense(nn.Module):
    """One hidden layer: ``act(linear(x))``; its output is what a probe on it measures."""

    def __init__(self, n_in: int, n_out: int, activation: str) -> None:
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)
        self.act = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.linear(x))  # (B, n_out)


class MLP(nn.Module):
    """Fully connected net: flatten -> ``fc1`` ... ``fcN`` (Linear -> activation) -> ``out``.

    ``init``: ``torch`` keeps PyTorch's default initialisation of ``nn.Linear``;
    ``truncated_normal`` draws every weight from a normal of std ``1/sqrt(fan_in)`` truncated
    at two standard deviations, with zero biases, as the code of Shwartz-Ziv & Tishby (2017)
    (``tf.truncated_normal``) and Saxe et al. (2018) does; ``model=ib_net`` uses it. The
    softmax of the logits is the net's output (cross-entropy loss; ``probe.output=true``
    measures it). Its top-level modules are ``fc1``..``fcN`` and ``out``: probed by default
    (``probe.layers``: ``fc*``, or null), each hidden layer after its activation.
    ``glorot_uniform`` (Keras' default: U(+-sqrt(6 / (fan_in + fan_out))), zero biases) is what
    Lorenzen et al.'s (2022) code initialises with.

    ``quantize``: null, or a bit width (2..16) for quantization-aware training as Lorenzen,
    Igel & Nielsen (2022) do it (:mod:`infoflow.training.quantize`): every hidden activation
    on a grid of 2^bits values, in training and in the evaluation pass.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        n_classes: int,
        hidden: Sequence[int] = (128,),
        activation: str = "relu",
        init: str = "torch",
        quantize: int | None = None,
    ) -> None:
        super().__init__()
        dims = [math.prod(in_shape), *hidden]
        self.depth = len(hidden)
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:]), start=1):
            self.add_module(f"fc{i}", Dense(a, b, activation))
        self.out = nn.Linear(dims[-1], n_classes)
        if init == "truncated_normal":
            for layer in [*(block.linear for block in self.blocks()), self.out]:
                truncated_normal_(layer)
        elif init == "glorot_uniform":
            for layer in [*(block.linear for block in self.blocks()), self.out]:
                glorot_uniform_(layer)
        if quantize is not None:
            quantize_mlp_(self, quantize, activation)

    def blocks(self) -> list[Dense]:
        return [getattr(self, f"fc{i}") for i in range(1, self.depth + 1)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)  # (B, prod(in_shape))
        for block in self.blocks():
            h = block(h)  # (B, width)
        return self.out(h)  # (B, n_classes)


@torch.no_grad()
def glorot_uniform_(layer: nn.Linear) -> None:
    """Weights ~ U(+-sqrt(6 / (fan_in + fan_out))) (Keras' ``glorot_uniform``), biases 0."""
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)


@torch.no_grad()
def truncated_normal_(layer: nn.Linear) -> None:
    """Weights ~ N(0, 1/fan_in) truncated to +-2 std (as ``tf.truncated_normal``), biases 0."""
    std = 1.0 / math.sqrt(layer.in_features)
    nn.init.trunc_normal_(layer.weight, std=std, a=-2 * std, b=2 * std)
    nn.init.zeros_(layer.bias)


class ConvBlock(nn.Module):
    """``act(conv(x))``, the CNN's probed layer. Without autograd (evaluation passes) the
    activation runs in place: a (B, C, H, W) allocation less."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, activation: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2)
        self.act = make_activation(activation)
        self.act_ = IN_PLACE[activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.act if torch.is_grad_enabled() else self.act_
        return act(self.conv(x))  # (B, C_out, H, W)


class CNN(nn.Module):
    """The notebook's SimpleCNN: ``conv1`` (conv(k, pad k//2) -> act) -> pool 2 -> ``conv2``
    (2x channels) -> pool 2 -> ``fc``. Its top-level modules are ``conv1``, ``conv2`` and ``fc``:
    probed by default (``probe.layers``: ``[conv1, conv2]``, or null), each after its
    activation.

    The conv weights and activations are kept in ``torch.channels_last`` memory format (NHWC
    strides, same shapes and values): oneDNN's convolutions on CPU are about 1.3x faster on
    it than on NCHW, and cuDNN's likewise. The flattening before ``fc`` and of the probes is
    channel-major (index ``c * H * W + h * W + w``) as with NCHW, so the units mean the same;
    only the float rounding of the convolutions differs from NCHW (last digits).

    In training with ReLU, each block pools before the activation: max-pooling commutes with
    ReLU exactly (``max(relu(a), relu(b)) = relu(max(a, b))``, and the gradient reaches the
    same position of the conv output either way, or none when the window's maximum is <= 0),
    so logits and gradients are bit-identical to act-then-pool while the activation and its
    backward touch 4x fewer values: about 10% of a training step on CPU. Evaluation passes
    (``eval()`` mode, where probes are taken) run the blocks as such. tanh keeps the
    notebook's order (its float rounding can tie values that differ, which moves the gradient).
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        n_classes: int,
        channels: int = 16,
        kernel_size: int = 5,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if len(in_shape) != 3:
            raise ModelError(
                f"model=cnn needs image inputs shaped (channels, height, width), got in_shape "
                f"{tuple(in_shape)}: this data set has no image shape (data=tishby is 12 bits "
                "per pattern); use a fully connected model (model=ib_net, mlp1, mlp3 or mlp5)"
            )
        c, h, w = in_shape
        self.conv1 = ConvBlock(c, channels, kernel_size, activation)
        self.conv2 = ConvBlock(channels, 2 * channels, kernel_size, activation)
        self.fc = nn.Linear(2 * channels * (h // 4) * (w // 4), n_classes)
        self.pool_first = activation == "relu"  # exact for ReLU only (see the class notes)
        self.to(memory_format=torch.channels_last)  # conv weights (C_out, C_in, k, k) as NHWC

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)  # (B, c, H, W), NHWC strides
        if not (self.training and self.pool_first):
            a1 = self.conv1(x)  # (B, C, H, W), channels_last
            a2 = self.conv2(pool(a1))  # (B, 2C, H/2, W/2), channels_last
            return self.fc(pool(a2).flatten(1))  # (B, n_classes); channel-major flatten
        b1, b2 = self.conv1, self.conv2
        h1 = b1.act(pool(b1.conv(x)))  # (B, C, H/2, W/2) = pool(act(conv1 x))
        h2 = b2.act(pool(b2.conv(h1)))  # (B, 2C, H/4, W/4)
        return self.fc(h2.flatten(1))  # (B, n_classes)


# ---------------------------------------------------------------------------------------------
# any other model


def pool(x: torch.Tensor) -> torch.Tensor:
    """2x2 max-pooling (a function, not a module: the CNN's top-level modules are its layers)."""
    return F.max_pool2d(x, 2)


def build_model(
    factory: Callable[..., Any], params: dict[str, Any], in_shape: Sequence[int], n_classes: int
) -> nn.Module:
    """``factory(**params)``, given ``in_shape`` and ``n_classes`` when it takes them.

    ``factory`` is any callable returning an ``nn.Module`` that maps a batch to logits (a
    class, a function); infoflow passes the data's input shape and class count only to a
    callable whose signature names them (or takes ``**kwargs``).
    """
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin without a signature: give it nothing extra
        sig = None
    provided = {"in_shape": tuple(in_shape), "n_classes": n_classes}
    if sig is not None:
        takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
        provided = {k: v for k, v in provided.items() if takes_all or k in sig.parameters}
    model = factory(**{**provided, **params})
    if not isinstance(model, nn.Module):
        raise ModelError(
            f"model._target_ must return a torch.nn.Module, {qualname(factory)} returned a "
            f"{type(model).__name__}"
        )
    return model


def qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def torchvision_model(
    name: str,
    in_shape: Sequence[int],
    n_classes: int,
    weights: str | None = None,
    adapt_channels: bool = False,
) -> nn.Module:
    """``torchvision.models.<name>``, its head sized ``n_classes`` (``num_classes``).

    Random initialisation unless ``weights`` names torchvision weights (``"DEFAULT"``,
    ``"IMAGENET1K_V1"``: downloading them is the user's; a pretrained head keeps its 1,000
    classes, so ``num_classes`` is then left to the weights and the data must have as many or
    fewer classes). A data set whose channel count differs from the first convolution's is an
    error, unless ``adapt_channels``: the first convolution is then replaced by one taking the
    data's channels (same kernel, stride, padding; freshly initialised).
    """
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)
    if name not in names:
        close = [n for n in names if n.startswith(name.rstrip("0123456789_")[:3])][:8]
        raise ModelError(
            f"model.name must be a model of torchvision.models, got {name!r}"
            + (f"; close: {', '.join(close)}" if close else "")
            + f" ({len(names)} in all: torchvision.models.list_models())"
        )
    kwargs: dict[str, Any] = {"weights": weights}
    if weights is None:
        kwargs["num_classes"] = n_classes
    model = torchvision.models.get_model(name, **kwargs)
    channels = in_shape[0] if len(in_shape) == 3 else None
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if channels is None:
        raise ModelError(
            f"model=torchvision ({name}) needs image inputs shaped (channels, height, width), "
            f"got in_shape {tuple(in_shape)}"
        )
    if first is not None and first.in_channels != channels:
        if not adapt_channels:
            raise ModelError(
                f"model=torchvision {name} takes {first.in_channels} input channels and the data "
                f"have {channels} (in_shape {tuple(in_shape)}): set model.adapt_channels=true to "
                f"replace its first convolution by a {channels}-channel one (freshly initialised)"
            )
        replace_first_conv(model, first, channels)
    return model


def replace_first_conv(model: nn.Module, first: nn.Conv2d, channels: int) -> None:
    """Swap ``first`` (a module of ``model``) for a conv like it taking ``channels`` inputs."""
    new = nn.Conv2d(
        channels,
        first.out_channels,
        first.kernel_size,
        stride=first.stride,
        padding=first.padding,
        dilation=first.dilation,
        groups=1,
        bias=first.bias is not None,
        padding_mode=first.padding_mode,
    )
    for name, module in model.named_modules():
        if module is first:
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, leaf, new)
            return
