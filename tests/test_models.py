"""The built-in nets and the builders of any other model (a callable, a torchvision name)."""

import pytest
import torch
from torch import nn

from infoflow.training.models import CNN, MLP, ModelError, build_model, torchvision_model
from infoflow.training.probe import activations

WIDTHS = {"mlp1": [128], "mlp3": [256, 128, 64], "mlp5": [512, 256, 128, 64]}


@pytest.mark.parametrize("name,hidden", WIDTHS.items())
def test_mlp_probes_every_hidden_layer(name, hidden):
    model = MLP((1, 28, 28), 10, hidden=hidden)
    logits, probes = activations(model, torch.rand(5, 1, 28, 28))
    assert logits.shape == (5, 10)
    assert [p.shape[1] for p in probes] == hidden
    assert all((p >= 0).all() for p in probes)  # post-ReLU: the blocks' outputs


def test_mlp_matches_notebook_layer_sizes():
    model = MLP((1, 28, 28), 10, hidden=[256, 128, 64])
    shapes = [tuple(m.weight.shape) for m in [*(b.linear for b in model.blocks()), model.out]]
    assert shapes == [(256, 784), (128, 256), (64, 128), (10, 64)]
    assert [n for n, _ in model.named_children()] == ["fc1", "fc2", "fc3", "out"]


@pytest.mark.parametrize("in_shape", [(1, 28, 28), (1, 8, 8), (3, 32, 32)])
def test_cnn_reads_input_shape(in_shape):
    model = CNN(in_shape, 7, channels=4)
    logits, probes = activations(model, torch.rand(3, *in_shape))
    _, h, w = in_shape
    assert logits.shape == (3, 7)
    assert [p.shape for p in probes] == [(3, 4 * h * w), (3, 8 * (h // 2) * (w // 2))]


def test_cnn_has_notebook_architecture():
    model = CNN((1, 28, 28), 10, channels=16)
    conv1, conv2 = model.conv1.conv, model.conv2.conv
    assert conv1.kernel_size == (5, 5) and conv1.padding == (2, 2)
    assert conv2.out_channels == 32
    assert model.fc.in_features == 32 * 7 * 7
    assert [n for n, _ in model.named_children()] == ["conv1", "conv2", "fc"]


def test_tanh_activation_bounds_probes():
    model = MLP((4,), 3, hidden=[16], activation="tanh")
    _, (p,) = activations(model, torch.randn(50, 4) * 100)
    assert p.min() >= -1 and p.max() <= 1 and p.min() < 0


def test_forward_returns_logits_only():
    out = MLP((4,), 3, hidden=[8])(torch.randn(2, 4))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3)


# ---------------------------------------------------------------------------------------------
# any model


class NoShape(nn.Module):
    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.body = nn.Linear(3, width)
        self.head = nn.Linear(width, 2)

    def forward(self, x):
        return self.head(self.body(x))


def takes_classes(n_classes: int, width: int = 4) -> nn.Module:
    return nn.Sequential(nn.Linear(3, width), nn.Linear(width, n_classes))


def test_build_model_passes_only_what_the_callable_takes():
    net = build_model(NoShape, {"width": 5}, (3,), 2)  # takes neither in_shape nor n_classes
    assert net.body.out_features == 5
    seq = build_model(takes_classes, {}, (3,), 7)
    assert seq[1].out_features == 7
    full = build_model(MLP, {"hidden": [3]}, (1, 4, 4), 5)
    assert full.fc1.linear.in_features == 16 and full.out.out_features == 5


def test_build_model_refuses_what_is_not_a_module():
    with pytest.raises(ModelError, match=r"must return a torch.nn.Module.*returned a dict"):
        build_model(lambda: {}, {}, (3,), 2)


def test_torchvision_model_by_name_with_the_datas_classes():
    torch.manual_seed(0)
    net = torchvision_model("resnet18", (3, 32, 32), 10)
    assert net.fc.out_features == 10
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_torchvision_channels_differ_is_an_error_or_adapted():
    with pytest.raises(ModelError, match=r"takes 3 input channels and the data have 1.*adapt"):
        torchvision_model("resnet18", (1, 28, 28), 10)
    net = torchvision_model("resnet18", (1, 28, 28), 10, adapt_channels=True)
    assert net.conv1.in_channels == 1 and net.conv1.out_channels == 64
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_torchvision_unknown_name_says_what_exists():
    with pytest.raises(ModelError, match=r"model.name must be a model of torchvision.models.*resn"):
        torchvision_model("resnet17", (3, 32, 32), 10)
