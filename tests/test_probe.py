"""Probing by module name: globs, the order of the layers, the checks made before training, and
the hooks' copies (taken before the net can change an output in place)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from infoflow.training.data import Dataset
from infoflow.training.models import MLP
from infoflow.training.probe import Probe, ProbeError, activations, evaluate, name_pattern


class Net(nn.Module):
    """Blocks registered out of forward order, an in-place ReLU, a reused activation."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(6, 2)
        self.layer2 = nn.Sequential(nn.Linear(6, 6), nn.BatchNorm1d(6), nn.ReLU(inplace=True))
        self.layer1 = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(inplace=True))
        self.shared = nn.Tanh()

    def forward(self, x):
        return self.head(self.shared(self.layer2(self.shared(self.layer1(x)))))


class Pair(nn.Module):
    def forward(self, x):
        return x, -x


class TwoOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.split = Pair()
        self.out = nn.Linear(8, 2)

    def forward(self, x):
        a, b = self.split(x)
        return self.out(torch.cat([a, b], 1))


@pytest.mark.parametrize(
    "pattern,name,hit",
    [
        ("layer*", "layer1", True),
        ("layer*", "layer1.0", False),  # '*' stays within one dotted part
        ("layer*.?", "layer1.2", True),
        ("features.*.relu", "features.3.relu", True),
        ("**.relu", "layer1.0.relu", True),
        ("fc[12]", "fc3", False),
    ],
)
def test_globs_match_dotted_names_part_by_part(pattern, name, hit):
    assert bool(name_pattern(pattern).match(name)) is hit


def test_layers_come_in_the_order_the_pass_completes_them():
    torch.manual_seed(0)
    probe = Probe.of(Net(), ["layer*"], torch.rand(1, 4))
    assert probe.names == ("layer1", "layer2")  # registered layer2 first
    assert probe.units == (6, 6)


def test_null_probes_the_top_level_modules_but_the_last():
    probe = Probe.of(MLP((3,), 2, hidden=[5, 4]), None, torch.rand(1, 3))
    assert probe.names == ("fc1", "fc2") and probe.units == (5, 4)


def test_an_unknown_name_lists_the_models_modules():
    with pytest.raises(ProbeError) as err:
        Probe.of(Net(), ["layer3"], torch.rand(1, 4))
    msg = str(err.value)
    assert "'layer3' matches no module of Net" in msg and "layer1.0 (Linear)" in msg


def test_a_reused_module_is_refused_with_its_count():
    with pytest.raises(ProbeError, match=r"'shared' runs 2 times in one forward pass"):
        Probe.of(Net(), ["shared"], torch.rand(1, 4))


def test_a_module_returning_a_tuple_is_refused_by_name():
    with pytest.raises(ProbeError, match=r"module 'split' returns a tuple, not one tensor"):
        Probe.of(TwoOut(), ["split"], torch.rand(1, 4))


def test_the_check_changes_no_state_and_no_random_stream():
    net = Net().train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    torch.manual_seed(3)
    Probe.of(net, ["layer1.1"], torch.rand(2, 4))
    after_rng = torch.rand(1)
    torch.manual_seed(3)
    torch.rand(2, 4)  # the example's draw only
    assert torch.equal(after_rng, torch.rand(1))
    assert net.training and all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_an_output_changed_in_place_later_is_captured_as_returned():
    """bn's output is overwritten by the in-place ReLU after it: the hook copied it first."""
    torch.manual_seed(0)
    net = Net()
    x = torch.randn(32, 4)
    _, (bn,) = activations(net, x, ["layer1.1"])
    with torch.no_grad():
        ref = net.layer1[1](net.layer1[0](x))  # eval() mode: running statistics
    assert torch.equal(bn, ref) and (bn < 0).any()


def test_probe_passes_run_in_eval_mode_and_any_batch_size_gives_the_same_layers():
    torch.manual_seed(0)
    net = Net()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(50, 4, generator=g), torch.randint(0, 2, (50,), generator=g)
    data = Dataset("toy", x[:20], y[:20], x[20:], y[20:])
    probe = Probe.of(net, ["layer1", "layer2.1"], data.x_eval[:1])
    net.train()
    whole, layers = evaluate(net, data, 1000, probe=probe)
    parts, chunked = evaluate(net, data, 7, probe=probe)
    assert not net.training  # the pass ran in eval(): BatchNorm's running statistics
    assert [t.shape for t in layers] == [(30, 6), (30, 6)]
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(layers, chunked))
    assert whole["eval_acc"] == parts["eval_acc"]
