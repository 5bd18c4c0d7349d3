"""Quantized nets (model.quantize) as Lorenzen et al.'s tfmot code: TensorFlow's fake
quantization, tfmot's ranges, straight-through gradients; quantized evaluation passes that
estimator=exact accepts; deterministic training that stacks bit-identically."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from infoflow.training.quantize import (
    INIT_RANGE,
    Quantizer,
    QuantLinear,
    tf_qparams,
)


def tf_fake_quant(x: np.ndarray, lo: float, hi: float, bits: int) -> np.ndarray:
    """TensorFlow's FakeQuantWithMinMaxVars (fake_quant_functor.h), written out in NumPy."""
    qmin, qmax = 0.0, 2.0**bits - 1
    scale = (hi - lo) / (qmax - qmin)
    zp_from_min = qmin - lo / scale
    zp = qmin if zp_from_min < qmin else qmax if zp_from_min > qmax else np.floor(zp_from_min + 0.5)
    nmin, nmax = (qmin - zp) * scale, (qmax - zp) * scale
    clamped = np.clip(x, nmin, nmax)
    return np.floor((clamped - nmin) / scale + 0.5) * scale + nmin


@pytest.mark.parametrize("lo, hi", [(-0.93, 0.71), (-2.0, -0.5), (0.2, 0.9), (-6.0, 6.0)])
@pytest.mark.parametrize("bits", [4, 8])
def test_fake_quantization_is_tensorflows(lo, hi, bits):
    x = np.random.default_rng(0).uniform(-3, 3, size=5000).astype(np.float32)
    scale, zero = tf_qparams(lo, hi, bits)
    ours = torch.fake_quantize_per_tensor_affine(torch.from_numpy(x), scale, zero, 0, 2**bits - 1)
    theirs = tf_fake_quant(x.astype(np.float64), lo, hi, bits)
    assert np.abs(ours.numpy() - theirs).max() < 1e-5 * scale * 2**bits  # float32 rounding only
    if lo > 0:  # TF's nudge: the range becomes [0, hi - lo]
        assert ours.max().item() == pytest.approx(hi - lo, rel=1e-6)


def test_batch_range_puts_a_tensor_on_2_bits_levels_with_a_straight_through_gradient():
    x = torch.randn(256, 7, generator=torch.Generator().manual_seed(0)).tanh().requires_grad_()
    q = Quantizer(8, "batch")(x)
    levels = torch.unique(q.detach())
    assert 200 < len(levels) <= 256
    steps = torch.diff(levels) / torch.diff(levels).min()
    assert torch.allclose(steps, steps.round(), atol=1e-3)  # one uniform grid
    assert (levels == 0).any()  # 0 is a level (the nudged zero point)
    assert (q.detach() - x.detach()).abs().max() <= (x.max() - x.min()).item() / 255
    q.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))  # every value inside its own range


def test_moving_average_range_starts_at_six_and_only_training_moves_it():
    quant = Quantizer(8, "moving_average")
    assert (float(quant.lo), float(quant.hi)) == INIT_RANGE
    x = torch.tensor([[0.0, 0.5, 2.0]])
    quant(x)  # training mode
    assert float(quant.lo) == pytest.approx(-6 + 0.001 * 6)  # EMA of min(batch min, 0) = 0
    assert float(quant.hi) == pytest.approx(6 - 0.001 * 4)
    quant.eval()
    before = (float(quant.lo), float(quant.hi))
    y = quant(torch.tensor([[50.0, -50.0]]))
    assert (float(quant.lo), float(quant.hi)) == before  # evaluation only reads
    assert y.max().item() <= before[1] + 12 / 255 and y.min().item() >= before[0] - 12 / 255


def test_moving_average_gradient_is_zero_outside_the_range():
    quant = Quantizer(8, "moving_average")
    x = torch.tensor([-10.0, -1.0, 0.0, 3.0, 10.0], requires_grad=True)
    quant(x).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_last_value_and_all_values_ranges():
    last, every = Quantizer(8, "last_value"), Quantizer(8, "all_values")
    for x in (torch.tensor([0.5, 1.5]), torch.tensor([-0.25, 0.75])):
        last(x), every(x)
    assert (float(last.lo), float(last.hi)) == (-0.25, 0.75)  # the last tensor's, 0 included
    assert (float(every.lo), float(every.hi)) == INIT_RANGE  # [-6, 6] only widens


def test_binary_inputs_through_the_input_quantizer():
    """tfmot's input QuantizeLayer keeps [-6, 6] on 0/1 inputs: 1 becomes 21 steps of 12/255."""
    q = Quantizer(8, "all_values")
    y = q(torch.tensor([[0.0, 1.0, 1.0]]))
    assert y[0, 0].item() == 0.0 and y[0, 1].item() == pytest.approx(21 * 12 / 255, rel=1e-6)


def test_quant_linear_shares_the_parameters_and_quantizes_the_weight():
    torch.manual_seed(0)
    lin = torch.nn.Linear(5, 3)
    q = QuantLinear.from_linear(lin, 8, out_range="moving_average")
    assert q.weight is lin.weight and q.bias is lin.bias
    assert set(q.state_dict()) == {
        "weight", "bias", "weight_quant.lo", "weight_quant.hi", "out_quant.lo", "out_quant.hi"
    }  # fmt: skip
    x = torch.randn(4, 5)
    y = q(x)
    w_lo, w_hi = lin.weight.min().item(), lin.weight.max().item()
    scale, zero = tf_qparams(min(w_lo, 0), max(w_hi, 0), 8)
    wq = torch.fake_quantize_per_tensor_affine(lin.weight, scale, zero, 0, 255)
    assert len(torch.unique(wq)) <= 256
    expected = Quantizer(8, "moving_average")(torch.nn.functional.linear(x, wq, lin.bias))
    assert torch.equal(y, expected)


def test_quantizer_costs_a_few_ops():
    """Per call, a fraction of torch.ao's FakeQuantize (its observer's Python bookkeeping):
    the net's steps are mostly such overhead. Measured side by side, best of 5."""
    from torch.ao.quantization import FakeQuantize, MovingAverageMinMaxObserver

    fq = FakeQuantize(MovingAverageMinMaxObserver, quant_min=0, quant_max=255)
    ours = Quantizer(8, "moving_average")
    x = torch.randn(256, 10)

    def best(f):
        times = []
        for _ in range(5):
            t = time.perf_counter()
            for _ in range(200):
                f(x)
            times.append(time.perf_counter() - t)
        return min(times)

    assert best(ours) < best(fq)  # measured 3-4x faster; asserted loosely (shared machines)


def test_bits_outside_2_to_16_are_refused():
    from infoflow.training.quantize import check_bits

    for bad in (1, 17, True, 8.0):
        with pytest.raises(ValueError, match=r"model.quantize must be null or an integer in 2..16"):
            check_bits(bad)
    assert check_bits(4) == 4 and math.isfinite(tf_qparams(0.0, 0.0, 8)[0])


# ---------------------------------------------------------------------------------------------
# quantized nets (model.quantize) end to end

from functools import partial  # noqa: E402

import pandas as pd  # noqa: E402

from infoflow.estimators import exact  # noqa: E402
from infoflow.training.data import load_tishby  # noqa: E402
from infoflow.training.loop import Member, Recorder, TrainerConfig, train_stack  # noqa: E402
from infoflow.training.models import MLP  # noqa: E402
from infoflow.training.probe import activations  # noqa: E402

TISHBY = load_tishby()
HIDDEN = [10, 7, 5, 4, 3]


@pytest.fixture(autouse=True)
def one_thread():
    """The experiments' runtime.threads=1: this net's matmuls are too small to split, and on a
    busy machine two threads made them 100x slower (oneDNN threads waiting for each other)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def qnet(seed: int, activation: str = "tanh", bits: int = 8) -> MLP:
    torch.manual_seed(seed)
    return MLP(TISHBY.in_shape, 2, HIDDEN, activation, "glorot_uniform", quantize=bits)


def trained(activation: str, steps: int = 40, bits: int = 8) -> MLP:
    model = qnet(0, activation, bits)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = TISHBY.x_train, TISHBY.y_train
    model.train()
    for k in range(steps):
        idx = slice(256 * (k % 12), 256 * (k % 12 + 1))
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("bits", [4, 8])
def test_every_hidden_layer_of_an_evaluation_pass_is_on_a_grid_exact_accepts(activation, bits):
    model = trained(activation, bits=bits)
    x_all, y_all = TISHBY.probe_set("all")
    logits, layers = activations(model, x_all, ["fc*"])
    for layer in layers:
        levels = torch.unique(layer)
        assert len(levels) <= 2**bits
        out = exact(layer, None, y_all, bits=bits)  # the grid test passes
        assert 0 < out["I_XT"] <= 12 and 0 <= out["I_TY"] <= out["H_Y"]
    probs = logits.softmax(1)
    assert exact(probs, None, y_all, bits=bits)["requantized"]
    assert len(torch.unique(logits)) <= 2**bits  # the logits are on the output grid


def test_the_evaluation_pass_propagates_the_quantized_values():
    """What is measured is what computes: fc2 reads fc1's quantized output, and the logits
    follow from the last quantized layer."""
    model = trained("relu")
    x_all, _ = TISHBY.probe_set("all")
    seen = {}

    def keep(module, inputs, output):
        seen["fc2_in"] = inputs[0]  # the last pass's (returns None: the output stays)

    model.fc2.linear.register_forward_hook(keep)
    logits, (fc1, *_, fc5) = activations(model, x_all, ["fc*"])
    assert torch.equal(seen["fc2_in"], fc1)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model.out(fc5), logits)


def test_quantized_and_float_nets_share_their_draws_and_parameters():
    torch.manual_seed(0)
    plain = MLP(TISHBY.in_shape, 2, HIDDEN, "relu", "glorot_uniform")
    q = qnet(0, "relu")
    for (name, a), (qname, b) in zip(plain.named_parameters(), q.named_parameters()):
        assert name == qname and torch.equal(a, b)
    assert [n for n, _ in q.named_children()] == ["fc1", "fc2", "fc3", "fc4", "fc5", "out"]
    limit = math.sqrt(6 / (12 + 10))
    assert q.fc1.linear.weight.abs().max() <= limit and (q.fc1.linear.bias == 0).all()


def test_training_is_deterministic():
    a, b = trained("relu", steps=20), trained("relu", steps=20)
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert float(sa["fc1.act.hi"]) != 6.0  # the ranges moved: can fail


def stack(seeds, activation):
    members = [Member(qnet(s, activation), s, partial(exact, bits=8), Recorder()) for s in seeds]
    params = [p for m in members for p in m.model.parameters()]
    train_stack(
        members,
        torch.optim.Adam(params, lr=1e-3),
        TISHBY,
        TrainerConfig(epochs=2, batch_size=256),
        probe_output=True,
        probe_samples="all",
        probe_layers=["fc*"],
    )
    return {m.seed: pd.DataFrame(m.recorder.rows) for m in members}


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_a_seed_alone_and_in_a_stack_give_identical_tables(activation):
    alone = stack([2], activation)[2]
    stacked = stack([0, 1, 2], activation)
    pd.testing.assert_frame_equal(stacked[2], alone, check_exact=True)
    assert len(alone) == 3 * 6  # epochs 0..2, five layers and the output
    assert not stacked[0]["I_XT"].equals(stacked[2]["I_XT"])  # seeds differ: can fail


def test_the_experiment_runs_end_to_end_from_the_command_line(cli, tmp_path):
    """experiment=lorenzen2022, two epochs: the quantized net, exact on every layer and the
    requantized softmax output, in the job's table."""
    proc = cli(
        "experiment=lorenzen2022", "trainer.epochs=2", "trainer.eval=epoch",
        "runtime.device=cpu", "hydra.run.dir=run",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    df = pd.read_parquet(tmp_path / "run" / "mi.parquet")
    assert sorted(df["epoch"].unique()) == [0, 1, 2]
    assert list(df[df["epoch"] == 2]["layer_name"]) == ["fc1", "fc2", "fc3", "fc4", "fc5", "output"]
    assert (df["model.quantize"] == 8).all() and (df["estimator.bits"] == 8).all()
    assert df.set_index("layer_name")["requantized"].groupby(level=0).all().to_dict() == {
        "fc1": False, "fc2": False, "fc3": False, "fc4": False, "fc5": False, "output": True
    }  # fmt: skip
    assert (df["n_levels"] <= 257).all() and (df["I_XT"] <= 12 + 1e-9).all()


def test_a_quantized_seed_state_continues_exactly_elsewhere():
    """The stored ranges are buffers of the net's state: a run stopped mid-epoch and continued
    from its state (a checkpoint, the training cache) ends where the straight run does."""
    from infoflow.training.trainer import StackTrainer

    def trainer(seed, seeds):
        model = qnet(seed, "relu")
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        return StackTrainer([model], opt, TISHBY, 256, seeds)

    straight = trainer(1, [1])
    straight.advance(40)
    first = trainer(1, [1])
    first.advance(30)  # mid epoch 3 (13 steps per epoch)
    second = trainer(7, [99])  # another init and batch order, then the saved state
    second.load_state_dict(first.state_dict(0), 0)
    second.advance(40)
    a, b = straight.models[0].state_dict(), second.models[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert float(a["out.out_quant.lo"]) != INIT_RANGE[0]  # the ranges are in it: can fail


def test_a_diverged_tensor_passes_through_to_the_loss_check():
    """NaN activations are not quantized (no range): the NaN reaches the loss, where the trainer
    stops the seed with TrainingDiverged, instead of an error inside the quantizer."""
    x = torch.tensor([[0.5, float("nan")]])
    for rule in ("batch", "moving_average"):
        assert torch.isnan(Quantizer(8, rule)(x)).any()
