import pytest
import torch

from infoflow.training.models import CNN, MLP

WIDTHS = {"mlp1": [128], "mlp3": [256, 128, 64], "mlp5": [512, 256, 128, 64]}


@pytest.mark.parametrize("name,hidden", WIDTHS.items())
def test_mlp_probes_every_hidden_layer(name, hidden):
    model = MLP((1, 28, 28), 10, hidden=hidden)
    logits, probes = model(torch.rand(5, 1, 28, 28), probe=True)
    assert logits.shape == (5, 10)
    assert [p.shape[1] for p in probes] == hidden == model.probe_units
    assert len(model.probe_names) == len(hidden)
    assert all((p >= 0).all() for p in probes)  # post-ReLU


def test_mlp_matches_notebook_layer_sizes():
    model = MLP((1, 28, 28), 10, hidden=[256, 128, 64])
    shapes = [tuple(m.weight.shape) for m in [*model.hidden, model.out]]
    assert shapes == [(256, 784), (128, 256), (64, 128), (10, 64)]


@pytest.mark.parametrize("in_shape", [(1, 28, 28), (1, 8, 8), (3, 32, 32)])
def test_cnn_reads_input_shape(in_shape):
    model = CNN(in_shape, 7, channels=4)
    logits, probes = model(torch.rand(3, *in_shape), probe=True)
    _, h, w = in_shape
    assert logits.shape == (3, 7)
    assert [p.shape for p in probes] == [(3, 4, h, w), (3, 8, h // 2, w // 2)]
    assert [p.flatten(1).shape[1] for p in probes] == model.probe_units


def test_cnn_has_notebook_architecture():
    model = CNN((1, 28, 28), 10, channels=16)
    assert model.conv1.kernel_size == (5, 5) and model.conv1.padding == (2, 2)
    assert model.conv2.out_channels == 32
    assert model.fc.in_features == 32 * 7 * 7


def test_tanh_activation_bounds_probes():
    model = MLP((4,), 3, hidden=[16], activation="tanh")
    _, (p,) = model(torch.randn(50, 4) * 100, probe=True)
    assert p.min() >= -1 and p.max() <= 1 and p.min() < 0


def test_forward_without_probe_returns_logits_only():
    out = MLP((4,), 3, hidden=[8])(torch.randn(2, 4))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3)
