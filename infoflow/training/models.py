"""The networks of the seed notebook, with probes on the post-activation output of hidden layers.

Each model maps ``x`` of shape (batch, *in_shape) to logits (batch, n_classes). Called with
``probe=True`` it also returns the probed activations in ``model.probe_names`` order, each in
its layer's shape: (batch, width) for a dense layer, (batch, C, H, W) for a convolution, whose
``p.flatten(1)`` gives its ``model.probe_units`` units channel-major. Input shape and class count
come from the data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from infoflow.errors import UserError

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}
IN_PLACE = {"relu": torch.relu_, "tanh": torch.tanh_}  # for passes without autograd
INITS = ("torch", "truncated_normal")  # model.init of the MLP


class ModelError(UserError, ValueError):
    """A model cannot be built for this data set; the message says why and what would run."""


def make_activation(name: str) -> nn.Module:
    # the name was checked once, by the job spec (infoflow.spec.RULES)
    return ACTIVATIONS[name]()


class MLP(nn.Module):
    """Fully connected net: flatten -> [Linear -> activation] * len(hidden) -> Linear.

    ``init``: ``torch`` keeps PyTorch's default initialisation of ``nn.Linear``;
    ``truncated_normal`` draws every weight from a normal of std ``1/sqrt(fan_in)`` truncated
    at two standard deviations, with zero biases, as the code of Shwartz-Ziv & Tishby (2017)
    (``tf.truncated_normal``) and Saxe et al. (2018) does; ``model=ib_net`` uses it. The
    softmax of the logits is the net's output (cross-entropy loss; ``probe.output=true``
    measures it).
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        n_classes: int,
        hidden: Sequence[int] = (128,),
        activation: str = "relu",
        init: str = "torch",
    ) -> None:
        super().__init__()
        dims = [math.prod(in_shape), *hidden]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.act = make_activation(activation)
        self.out = nn.Linear(dims[-1], n_classes)
        self.probe_names = [f"fc{i + 1}" for i in range(len(hidden))]
        self.probe_units = list(hidden)
        if init == "truncated_normal":
            for layer in [*self.hidden, self.out]:
                truncated_normal_(layer)

    def forward(self, x: torch.Tensor, probe: bool = False):
        h = x.flatten(1)  # (B, prod(in_shape))
        probes = []
        for layer in self.hidden:
            h = self.act(layer(h))  # (B, width)
            probes.append(h)
        logits = self.out(h)  # (B, n_classes)
        return (logits, probes) if probe else logits


@torch.no_grad()
def truncated_normal_(layer: nn.Linear) -> None:
    """Weights ~ N(0, 1/fan_in) truncated to +-2 std (as ``tf.truncated_normal``), biases 0."""
    std = 1.0 / math.sqrt(layer.in_features)
    nn.init.trunc_normal_(layer.weight, std=std, a=-2 * std, b=2 * std)
    nn.init.zeros_(layer.bias)


class CNN(nn.Module):
    """The notebook's SimpleCNN: conv(k, pad k//2) -> act -> pool 2 -> conv with 2x channels ->
    act -> pool 2 -> linear. Probes: the activated output of each conv, (B, C, H, W).

    The conv weights and activations are kept in ``torch.channels_last`` memory format (NHWC
    strides, same shapes and values): oneDNN's convolutions on CPU are about 1.3x faster on
    it than on NCHW, and cuDNN's likewise. The flattening before ``fc`` and of the probes is
    channel-major (index ``c * H * W + h * W + w``) as with NCHW, so the units mean the same;
    only the float rounding of the convolutions differs from NCHW (last digits).

    Without probes and with ReLU, each block pools before the activation: max-pooling commutes
    with ReLU exactly (``max(relu(a), relu(b)) = relu(max(a, b))``, and the gradient reaches
    the same position of the conv output either way, or none when the window's maximum is <=
    0), so logits and gradients are bit-identical to act-then-pool while the activation and its
    backward touch 4x fewer values: about 10% of a training step on CPU. tanh keeps the
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
        pad = kernel_size // 2
        self.conv1 = nn.Conv2d(c, channels, kernel_size, padding=pad)
        self.conv2 = nn.Conv2d(channels, 2 * channels, kernel_size, padding=pad)
        self.pool = nn.MaxPool2d(2)
        self.act = make_activation(activation)
        self.act_ = IN_PLACE[activation]  # an evaluation pass skips a (B, C, H, W) allocation
        self.fc = nn.Linear(2 * channels * (h // 4) * (w // 4), n_classes)
        self.probe_names = ["conv1", "conv2"]
        self.probe_units = [channels * h * w, 2 * channels * (h // 2) * (w // 2)]
        self.pool_first = activation == "relu"  # exact for ReLU only (see the class notes)
        self.to(memory_format=torch.channels_last)  # conv weights (C_out, C_in, k, k) as NHWC

    def forward(self, x: torch.Tensor, probe: bool = False):
        x = x.contiguous(memory_format=torch.channels_last)  # (B, c, H, W), NHWC strides
        if probe or not self.pool_first:
            act = self.act if torch.is_grad_enabled() else self.act_  # no_grad: in place
            a1 = act(self.conv1(x))  # (B, C, H, W), channels_last
            a2 = act(self.conv2(self.pool(a1)))  # (B, 2C, H/2, W/2), channels_last
            logits = self.fc(self.pool(a2).flatten(1))  # (B, n_classes); channel-major flatten
            return (logits, [a1, a2]) if probe else logits
        h1 = self.act(self.pool(self.conv1(x)))  # (B, C, H/2, W/2) = pool(act(conv1 x))
        h2 = self.act(self.pool(self.conv2(h1)))  # (B, 2C, H/4, W/4)
        return self.fc(h2.flatten(1))  # (B, n_classes)
