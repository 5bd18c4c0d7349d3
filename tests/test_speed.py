"""The speed measures keep the numbers: channels_last CNN, capped evaluation batches, the
in-process IDX cache, SGD's foreach step; Adam's fused step keeps each seed's numbers its own
(stack and thread count aside); a training process keeps the host memory its steps free."""

from __future__ import annotations

import platform
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from benchmarks.single import Trainer
from infoflow.training.data import Dataset, load_mnist
from infoflow.training.models import CNN, MLP
from infoflow.training.probe import EVAL_BLOCK_FLOATS, Probe, activations, eval_batch_rows, evaluate


def tiny_data(n_train: int = 64, n_eval: int = 40, side: int = 12) -> Dataset:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n_train + n_eval, 1, side, side, generator=g)  # (N, 1, side, side)
    y = torch.randint(0, 3, (n_train + n_eval,), generator=g)  # (N,)
    return Dataset("tiny", x[:n_train], y[:n_train], x[n_train:], y[n_train:])


def test_cnn_is_channels_last_with_channel_major_probes():
    torch.manual_seed(0)
    model = CNN((1, 12, 12), 3, channels=4).eval()
    c1, c2 = model.conv1.conv, model.conv2.conv
    assert c2.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(5, 1, 12, 12)  # (B, 1, H, W)
    logits, (p1, p2) = activations(model, x)  # (B, 576), (B, 288)
    # reference: the same weights in NCHW, flattened channel-major
    w1, w2 = c1.weight.contiguous(), c2.weight.contiguous()
    a1 = F.relu(F.conv2d(x, w1, c1.bias, padding=2))  # (B, 4, 12, 12)
    a2 = F.relu(F.conv2d(F.max_pool2d(a1, 2), w2, c2.bias, padding=2))  # (B, 8, 6, 6)
    ref = F.linear(F.max_pool2d(a2, 2).flatten(1), model.fc.weight, model.fc.bias)  # (B, 3)
    torch.testing.assert_close(p1, a1.flatten(1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(p2, a2.flatten(1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logits, ref, rtol=1e-5, atol=1e-6)


def test_cnn_training_is_deterministic():
    data = tiny_data()

    def train() -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = CNN(data.in_shape, 3, channels=4)
        trainer = Trainer(model, torch.optim.Adam(model.parameters(), lr=1e-2), data, 16, seed=0)
        trainer.train_to(2 * trainer.per_epoch)
        return model.state_dict()

    a, b = train(), train()
    assert all(torch.equal(a[k], b[k]) for k in a)


def train_cnn(data: Dataset, activation: str, pool_first: bool | None = None):
    """The CNN's weights after 3 epochs, and the activation's input shapes (C, H, W) seen."""
    torch.manual_seed(0)
    model = CNN(data.in_shape, 3, channels=4, activation=activation)
    if pool_first is not None:
        model.pool_first = pool_first
    seen: set[tuple[int, ...]] = set()
    for block in (model.conv1, model.conv2):
        block.act.register_forward_hook(lambda m, args, out: seen.add(tuple(args[0].shape[1:])))
    trainer = Trainer(model, torch.optim.Adam(model.parameters(), lr=1e-2), data, 16, seed=0)
    trainer.train_to(3 * trainer.per_epoch)
    return model.state_dict(), seen


ACT_THEN_POOL = {(4, 12, 12), (8, 6, 6)}  # the activation on each conv's whole map
POOL_THEN_ACT = {(4, 6, 6), (8, 3, 3)}  # on the pooled maps, 4x fewer values


def test_cnn_pooling_before_relu_trains_bit_identically():
    """Pool-then-ReLU (the ReLU net's training path) against ReLU-then-pool: the same steps."""
    data = tiny_data(n_train=96)
    (a, pooled), (b, full) = train_cnn(data, "relu"), train_cnn(data, "relu", pool_first=False)
    assert (pooled, full) == (POOL_THEN_ACT, ACT_THEN_POOL)  # both orders ran
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cnn_with_tanh_trains_in_the_notebooks_order():
    """tanh is not moved before the pooling (rounding ties would move the gradient)."""
    _, seen = train_cnn(tiny_data(n_train=32), "tanh")
    assert seen == ACT_THEN_POOL


def test_cnn_logits_are_the_same_in_the_probe_pass_and_in_training():
    torch.manual_seed(0)
    model = CNN((1, 12, 12), 3, channels=4)
    x = torch.randn(9, 1, 12, 12)  # (B, 1, H, W): negative pre-activations too
    probed, (p1, _) = activations(model, x)  # eval(), no grad: act then pool, in place
    assert torch.equal(model.train()(x), probed)  # training: pool then act
    assert (p1 >= 0).all() and (p1 == 0).any()  # the activated map, copied by the hook


def test_evaluate_reuses_its_buffers_with_the_same_values():
    data = tiny_data()
    torch.manual_seed(0)
    model = CNN(data.in_shape, 3, channels=4)
    _, first = evaluate(model, data, 7)  # several batches: buffers allocated
    kept = [t.clone() for t in first]
    _, again = evaluate(model, data, 7, out=first)
    assert [a.data_ptr() for a in again] == [f.data_ptr() for f in first]
    assert all(torch.equal(a, k) for a, k in zip(again, kept))
    _, other = evaluate(model, data, 7, probe_output=True, out=first)  # other layers: new ones
    assert len(other) == 3 and torch.equal(other[0], kept[0])


def test_foreach_sgd_gives_the_numbers_of_the_default_loop():
    """conf/optimizer/sgd.yaml sets foreach: true (faster on CPU); it must not change any number."""
    data = tiny_data(n_train=96)

    def train(foreach: bool) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = MLP(data.in_shape, 3, [32, 16])
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, foreach=foreach)
        Trainer(model, opt, data, 16, seed=0).train_to(4 * 6)
        return model.state_dict()

    a, b = train(True), train(False)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_fused_adam_gives_each_net_its_own_numbers_at_any_thread_count():
    """conf/optimizer/adam.yaml sets fused: true (one kernel over every parameter): each
    element's update is its own, so a net's numbers do not depend on the nets stepped with it
    (stacked seeds) nor on the thread count; against the per-parameter loop only the last
    digits move."""
    data = tiny_data(n_train=96)
    seeds = [0, 1, 2]

    def train(stacked: bool, threads: int, **adam) -> list[dict[str, torch.Tensor]]:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            models = []
            for seed in seeds:
                torch.manual_seed(seed)
                models.append(MLP(data.in_shape, 3, [32, 16]))
            groups = (
                [[p for m in models for p in m.parameters()]]
                if stacked
                else [list(m.parameters()) for m in models]
            )
            opts = [torch.optim.Adam(g, lr=1e-2, **adam) for g in groups]
            for step in range(12):
                for k, model in enumerate(models):  # seed k's batch: its own rows
                    rows = torch.arange(16) + 16 * ((step + k) % 6)
                    loss = F.cross_entropy(model(data.x_train[rows]), data.y_train[rows])
                    loss.backward()
                for opt in opts:
                    opt.step()
                    opt.zero_grad(set_to_none=True)
            return [{k: v.clone() for k, v in m.state_dict().items()} for m in models]
        finally:
            torch.set_num_threads(before)

    alone = train(stacked=False, threads=1, fused=True)
    for other in (train(stacked=True, threads=1, fused=True), train(True, 2, fused=True)):
        assert all(torch.equal(a[k], o[k]) for a, o in zip(alone, other) for k in a)
    loop = train(stacked=False, threads=1, foreach=False)
    moved = [not torch.equal(a[k], b[k]) for a, b in zip(alone, loop) for k in a]
    assert any(moved)  # a kernel of its own, not the loop's arithmetic
    for a, b in zip(alone, loop):
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_eval_batches_are_capped_by_the_widest_probe():
    mlp = MLP((1, 28, 28), 10, [512, 64])
    cnn = CNN((1, 28, 28), 10)  # conv1: 16 * 28 * 28 = 12,544 units
    mlp_units = Probe.of(mlp, None, torch.rand(1, 1, 28, 28)).units
    cnn_units = Probe.of(cnn, None, torch.rand(1, 1, 28, 28)).units
    assert eval_batch_rows(mlp_units, 4096) == 4096  # the MLPs keep the configured size
    assert eval_batch_rows(cnn_units, 4096) == EVAL_BLOCK_FLOATS // 12544 == 334
    assert eval_batch_rows(cnn_units, 100) == 100


def test_evaluate_fills_whole_layers_in_any_batch_size():
    data = tiny_data()
    torch.manual_seed(0)
    model = MLP(data.in_shape, 3, [7, 5])
    whole, layers = evaluate(model, data, 1000, probe_output=True)  # one batch
    parts, chunked = evaluate(model, data, 6, probe_output=True)  # 7 batches, last one short
    assert [t.shape for t in chunked] == [(40, 7), (40, 5), (40, 3)]
    for a, b in zip(layers, chunked):
        torch.testing.assert_close(a, b)
    assert whole["eval_acc"] == parts["eval_acc"]
    assert abs(whole["eval_loss"] - parts["eval_loss"]) < 1e-6


def write_idx(a: np.ndarray, path) -> None:
    header = bytes([0, 0, 0x08, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
    path.write_bytes(header + a.astype(np.uint8).tobytes())


def test_idx_data_set_is_decoded_once_per_process_and_reread_when_changed(tmp_path):
    rng = np.random.default_rng(0)
    for stem, shape in [
        ("train-images-idx3-ubyte", (6, 28, 28)),
        ("train-labels-idx1-ubyte", (6,)),
        ("t10k-images-idx3-ubyte", (4, 28, 28)),
        ("t10k-labels-idx1-ubyte", (4,)),
    ]:
        write_idx(rng.integers(0, 10, size=shape), tmp_path / stem)
    first = load_mnist(str(tmp_path), download=False)
    assert load_mnist(str(tmp_path), download=False) is first  # cached: the same tensors
    write_idx(np.arange(7, dtype=np.uint8), tmp_path / "train-labels-idx1-ubyte")  # 7 labels
    write_idx(rng.integers(0, 10, size=(7, 28, 28)), tmp_path / "train-images-idx3-ubyte")
    again = load_mnist(str(tmp_path), download=False)
    assert again is not first and again.y_train.tolist() == list(range(7))


# A block of 64 MiB, above the largest threshold glibc's malloc sets itself (32 MiB), is mapped
# at each allocation and unmapped at each free by default: its pages fault in every time.
REFAULTS = """
import resource, torch
from infoflow.training.device import keep_freed_memory

def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(4):
        a = torch.ones(2**24)  # 64 MiB, every page written
        del a
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

default = faults()
kept = keep_freed_memory()
faults()  # the heap grows to the block once
print(default, kept, faults())
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_a_training_process_keeps_freed_blocks_instead_of_faulting_them_in_again():
    out = subprocess.run([sys.executable, "-c", REFAULTS], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    default, kept, after = out.stdout.split()
    pages = 4 * 2**26 // 4096  # 4 blocks of 16,384 pages
    assert int(default) >= pages  # glibc's defaults: every block faults in again
    assert kept == "True"
    assert int(after) < pages // 50  # kept: the same blocks reused from the heap
