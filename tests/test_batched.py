"""The batched stack (``hydra.launcher.stack=batched``): every seed's layers as one kernel over a
seed axis; each seed's numbers those of its net alone up to float rounding, its state that of its
net alone (it resumes in a stack of either kind), faults and drops per seed, nets it cannot run
refused by name, the option validated."""

from __future__ import annotations

import copy
from functools import partial

import pandas as pd
import pytest
import torch
from torch import nn

from infoflow.estimators import binning
from infoflow.spec import JobSpec
from infoflow.sweep.cache import TrainCache
from infoflow.sweep.launcher import LauncherError, check_options
from infoflow.training.batched import BatchedStackError, BatchedStackTrainer, trainer_class
from infoflow.training.data import load_digits
from infoflow.training.loop import Member, Recorder, TrainerConfig, train_stack
from infoflow.training.models import CNN, MLP
from infoflow.training.trainer import StackTrainer

DATA = load_digits()
EST = partial(binning, bins=10)
# float32 rounding of a batched kernel, carried through a few dozen Adam steps
TOL = {"rtol": 1e-4, "atol": 1e-5}


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread while a test runs (these small steps only wait on a second one; the
    tests compare within a process, so the count does not matter to them), then as before."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def net(seed: int, kind: str = "mlp") -> nn.Module:
    torch.manual_seed(seed)
    if kind == "cnn":
        return CNN(DATA.in_shape, DATA.n_classes, channels=4)
    if kind == "cnn_tanh":
        return CNN(DATA.in_shape, DATA.n_classes, channels=4, activation="tanh")
    if kind == "narrow":  # the IB papers' widths
        return MLP(DATA.in_shape, DATA.n_classes, [10, 7, 5], activation="tanh")
    if kind == "bn":  # no bias before the norm: its gradient is rounding noise, Adam scales it up
        return nn.Sequential(
            nn.Flatten(), nn.Linear(64, 16, bias=False), nn.BatchNorm1d(16), nn.ReLU(),
            nn.Linear(16, DATA.n_classes),
        )  # fmt: skip
    if kind == "dropout":
        return nn.Sequential(
            nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 10)
        )
    return MLP(DATA.in_shape, DATA.n_classes, [32, 16])


def trainer(cls, seeds, kind="mlp", batch_size=64, optimizer=torch.optim.Adam):
    models = [net(s, kind) for s in seeds]
    opt = optimizer([p for m in models for p in m.parameters()], lr=1e-3)
    return cls(models, opt, DATA, batch_size, seeds)


def states_close(a: nn.Module, b: nn.Module, exact: bool = False) -> bool:
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        same = torch.equal(x, y) if exact or not x.is_floating_point() else x.allclose(y, **TOL)
        assert same, f"{name}: largest difference {(x.double() - y.double()).abs().max()}"
    return True


# ---------------------------------------------------------------------------------------------
# numbers


@pytest.mark.parametrize("kind", ["mlp", "narrow", "cnn", "cnn_tanh", "bn"])
def test_batched_seeds_are_the_exact_seeds_up_to_rounding(kind):
    """35 steps of 64 (an epoch is 23, its last batch 29 samples): losses, accuracies, nets and
    BatchNorm's running statistics per seed as in the exact stack, to float tolerance."""
    seeds = [3, 0, 5]
    exact, batched = trainer(StackTrainer, seeds, kind), trainer(BatchedStackTrainer, seeds, kind)
    assert batched.kind == {"cnn": "grouped conv", "cnn_tanh": "grouped conv", "bn": "vmap"}.get(
        kind, "baddbmm"
    )
    for step in (10, 35):
        for a, b in zip(exact.advance(step), batched.advance(step)):
            assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
            assert b["train_acc"] == pytest.approx(a["train_acc"], abs=1 / 640)  # a tie at most
    for a, b in zip(exact.models, batched.models):
        assert states_close(a, b)
    assert not torch.equal(batched.models[0].state_dict()[next(iter(a.state_dict()))],
                           batched.models[1].state_dict()[next(iter(a.state_dict()))])  # fmt: skip


def test_a_batched_stack_through_train_stack_gives_the_exact_tables_up_to_rounding():
    def run(stack):
        members = [Member(net(s), s, EST) for s in (0, 1)]
        params = [p for m in members for p in m.model.parameters()]
        train_stack(
            members, torch.optim.Adam(params, lr=1e-3), DATA,
            TrainerConfig(epochs=2, batch_size=64), stack=stack,
        )  # fmt: skip
        return pd.concat([pd.DataFrame(m.recorder.rows) for m in members], ignore_index=True)

    exact, batched = run("exact"), run("batched")
    assert len(batched) == len(exact) == 2 * 3 * 2  # seeds, points, layers
    for col in ("train_loss", "eval_loss", "eval_acc"):
        pd.testing.assert_series_equal(batched[col], exact[col], rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# per-seed states


def test_a_batched_seed_state_is_its_net_alone_and_resumes_in_either_kind_of_stack():
    batched = trainer(BatchedStackTrainer, [4, 2, 9])
    exact = trainer(StackTrainer, [4, 2, 9])
    batched.advance(30)  # mid epoch 2: the state holds the epoch's order
    exact.advance(30)
    ours, theirs = batched.state_dict(1), exact.state_dict(1)
    assert ours.keys() == theirs.keys() and ours["model"].keys() == theirs["model"].keys()
    assert ours["optimizer"]["param_groups"] == theirs["optimizer"]["param_groups"]
    for i, st in theirs["optimizer"]["state"].items():
        got = ours["optimizer"]["state"][i]
        assert got.keys() == st.keys()
        for key in st:
            assert got[key].shape == st[key].shape and torch.allclose(got[key], st[key], **TOL)
    for key in ("generator", "order"):
        assert torch.equal(ours[key], theirs[key])
    # the stored tensors are the seed's own, not views of every seed's storage
    w = ours["model"]["fc1.linear.weight"]
    assert w.untyped_storage().nbytes() == w.numel() * w.element_size()

    # the seed alone in an exact stack of one, and at another place of a batched stack
    alone = trainer(StackTrainer, [2])
    alone.load_state_dict(ours, 0)
    other = trainer(BatchedStackTrainer, [7, 8])
    other.advance(30)
    other.load_state_dict(batched.state_dict(0), 0)
    other.load_state_dict(ours, 1)
    for t in (batched, alone, other):
        t.advance(50)
    assert states_close(alone.models[0], batched.models[1])
    assert states_close(other.models[1], batched.models[1])


def test_a_batched_stack_resumed_from_its_states_continues_bit_for_bit():
    straight = trainer(BatchedStackTrainer, [0, 1, 2])
    straight.advance(40)
    first = trainer(BatchedStackTrainer, [0, 1, 2])
    first.advance(17)
    states = [copy.deepcopy(first.state_dict(k)) for k in range(3)]
    resumed = trainer(BatchedStackTrainer, [5, 6, 7])  # other nets, other generators
    for k, state in enumerate(states):
        resumed.load_state_dict(state, k)
    resumed.advance(40)
    for a, b in zip(straight.models, resumed.models):
        assert states_close(a, b, exact=True)


def test_a_killed_batched_job_resumes_from_its_checkpoint_to_the_same_table():
    class Killed(Recorder):
        """Keeps every point's rows and state; resumes from point ``at``."""

        def __init__(self, at=None, saved=None):
            super().__init__()
            self.states, self.at, self.saved = [], at, saved

        def record(self, rows, done, train_state):
            super().record(rows, done, train_state)
            self.states.append((list(self.rows), done, copy.deepcopy(train_state)))

        def resume_from(self):
            return self.saved.states[self.at] if self.saved else super().resume_from()

    def run(recorders):
        members = [Member(net(s), s, EST, r) for s, r in zip((0, 1), recorders)]
        params = [p for m in members for p in m.model.parameters()]
        train_stack(
            members, torch.optim.Adam(params, lr=1e-3), DATA,
            TrainerConfig(epochs=3, batch_size=64, eval="log:6"),
            resume=True, stack="batched",
        )  # fmt: skip
        return [pd.DataFrame(r.rows) for r in recorders]

    straight = [Killed(), Killed()]
    full = run(straight)
    resumed = run([Killed(at=2, saved=r) for r in straight])
    for a, b in zip(full, resumed):
        pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_dropping_a_seed_leaves_the_others_as_they_were():
    whole = trainer(BatchedStackTrainer, [0, 1, 2, 3])
    part = trainer(BatchedStackTrainer, [0, 1, 2, 3])
    whole.advance(12)
    part.advance(12)
    dropped = part.models[1]
    part.drop([1])
    assert part.seeds == [0, 2, 3] and len(part.models) == 3
    assert next(iter(part.axis.params.values())).shape[0] == 3
    whole.advance(30)
    part.advance(30)
    for k, j in enumerate([0, 2, 3]):
        assert states_close(part.models[k], whole.models[j])
        ours, theirs = part.state_dict(k)["optimizer"], whole.state_dict(j)["optimizer"]
        assert torch.allclose(ours["state"][0]["exp_avg"], theirs["state"][0]["exp_avg"], **TOL)
    assert dropped.fc1.linear.weight.abs().sum() > 0  # the dropped net keeps its last state
    part.drop([0, 1, 2])
    assert part.models == [] and part.advance(31) == []


def test_dropout_draws_per_seed_masks_from_the_stack_stream_and_resumes_exactly():
    straight = trainer(BatchedStackTrainer, [0, 1], kind="dropout")
    assert straight.kind == "vmap" and straight.rngs is not None
    straight.advance(30)
    first = trainer(BatchedStackTrainer, [0, 1], kind="dropout")
    first.advance(11)
    states = [copy.deepcopy(first.state_dict(k)) for k in range(2)]
    assert torch.equal(states[0]["torch_rng"], states[1]["torch_rng"])  # one stream
    torch.manual_seed(123)  # the global generator elsewhere: the stack's stream is its own
    resumed = trainer(BatchedStackTrainer, [0, 1], kind="dropout")
    for k, state in enumerate(states):
        resumed.load_state_dict(state, k)
    resumed.advance(30)
    for a, b in zip(straight.models, resumed.models):
        assert states_close(a, b, exact=True)


def run_stack(seeds, recorders=None, caches=None, stack="batched", **kw):
    """Seeds through ``train_stack`` (2 epochs of 64); each seed's rows."""
    recorders = recorders or [Recorder() for _ in seeds]
    caches = caches or [None] * len(seeds)
    members = [Member(net(s), s, EST, r, c) for s, r, c in zip(seeds, recorders, caches)]
    for r, m in zip(recorders, members):
        r.model = m.model
    params = [p for m in members for p in m.model.parameters()]
    train_stack(
        members, torch.optim.Adam(params, lr=1e-3), DATA,
        TrainerConfig(epochs=2, batch_size=64), stack=stack, **kw,
    )  # fmt: skip
    return [pd.DataFrame(r.rows) for r in recorders]


class Poisoned(Recorder):
    """After the first evaluation, sets its net's first weight to NaN: its next loss is NaN."""

    def record(self, rows, done, train_state):
        super().record(rows, done, train_state)
        if done == 1:
            with torch.no_grad():
                next(self.model.parameters()).fill_(float("nan"))


def test_a_diverged_batched_seed_fails_alone_and_the_others_finish():
    failed = {}
    rows = run_stack(
        [0, 1, 2], [Recorder(), Poisoned(), Recorder()],
        on_error=lambda m, err: failed.setdefault(m.seed, err),
    )  # fmt: skip
    assert list(failed) == [1] and "train_loss is nan" in str(failed[1])
    assert rows[1]["epoch"].tolist() == [0, 0]  # its untrained point kept
    clean = run_stack([0, 2])
    for got, want in zip([rows[0], rows[2]], clean):
        assert got["epoch"].tolist() == want["epoch"].tolist() == [0, 0, 1, 1, 2, 2]
        pd.testing.assert_series_equal(got["train_loss"], want["train_loss"], rtol=1e-5)


def test_a_batched_stack_through_the_training_cache(tmp_path, monkeypatch):
    """The trainer stores each seed's points (its own tensors: small files); a second job of
    the same keys reads them instead of training, to the same rows."""
    keys = [{"model": "mlp", "seed": s, "stack": "batched"} for s in (0, 1)]
    first = run_stack([0, 1], caches=[TrainCache(tmp_path, k) for k in keys])
    point = torch.load(TrainCache(tmp_path, keys[1]).point_path(2), weights_only=False)
    w = point["model"]["fc1.linear.weight"]
    assert w.untyped_storage().nbytes() == w.numel() * w.element_size()  # seed 1's alone
    monkeypatch.setattr(BatchedStackTrainer, "train_batches", lambda *a: pytest.fail("trained"))
    again = run_stack([0, 1], caches=[TrainCache(tmp_path, k) for k in keys])
    for a, b in zip(first, again):
        pd.testing.assert_frame_equal(a, b, check_exact=True)


# ---------------------------------------------------------------------------------------------
# what batched refuses


def test_a_net_vmap_cannot_run_is_refused_by_name_with_stack_exact():
    with pytest.raises(BatchedStackError) as err:
        models = [MLP(DATA.in_shape, DATA.n_classes, [16], quantize=4) for _ in range(2)]
        opt = torch.optim.Adam([p for m in models for p in m.parameters()])
        BatchedStackTrainer(models, opt, DATA, 64, [0, 1])
    message = str(err.value)
    assert "infoflow.training.models.MLP" in message and "vmap" in message
    assert "hydra.launcher.stack=exact" in message


def test_an_optimizer_that_is_not_per_element_is_refused():
    with pytest.raises(BatchedStackError, match=r"LBFGS is not one of them.*stack=exact"):
        trainer(BatchedStackTrainer, [0, 1], optimizer=torch.optim.LBFGS)


def test_an_optimizer_state_given_is_kept_per_seed():
    exact = trainer(StackTrainer, [0, 1])
    exact.advance(5)
    wanted = [exact.state_dict(k)["optimizer"] for k in range(2)]
    batched = BatchedStackTrainer(exact.models, exact.optimizer, DATA, 64, [0, 1])
    for k, want in enumerate(wanted):
        got = batched.state_dict(k)["optimizer"]
        assert torch.equal(got["state"][1]["exp_avg_sq"], want["state"][1]["exp_avg_sq"])
        assert torch.equal(got["state"][1]["step"], want["state"][1]["step"])


# ---------------------------------------------------------------------------------------------
# the option


def test_stack_exact_is_the_stack_trainer_and_the_option_is_validated(compose_cfg):
    assert trainer_class("exact") is StackTrainer
    assert trainer_class("batched") is BatchedStackTrainer
    assert compose_cfg(return_hydra_config=True).hydra.launcher.stack == "exact"
    assert check_options({"stack": "batched"}) == 32
    with pytest.raises(LauncherError, match=r"hydra.launcher.stack must be one of exact, batch"):
        check_options({"stack": "vmap"})
    with pytest.raises(LauncherError, match=r"got 4$"):
        check_options({"stack": 4})


def test_batched_is_in_the_training_key_and_the_rows_exact_is_not(compose_cfg):
    spec = JobSpec.of(compose_cfg())
    assert "stack" not in spec.training_key("cpu", "f")
    assert spec.training_key("cpu", "f", "batched")["stack"] == "batched"
    assert spec.training_key("cpu", "f", "exact") == spec.training_key("cpu", "f")
    assert "stack" not in spec.meta("r", {}, "cpu", "here")
    assert spec.meta("r", {}, "cpu", "here", "batched")["stack"] == "batched"


def test_a_batched_sweep_through_the_cli(cli, tmp_path):
    out = cli(
        "-m", "model=mlp1", "seed=0,1", "trainer.epochs=1", "hydra.launcher.stack=batched",
        "runtime.device=cpu", "runtime.threads=1", "hydra.sweep.dir=sw",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "seeds 0, 1 trained as one stack (batched)" in out.stdout + out.stderr
    df = pd.read_parquet(tmp_path / "sw" / "results.parquet")
    assert set(df["stack"]) == {"batched"} and set(df["seed"]) == {0, 1}


@pytest.mark.slow  # four short sweeps through the CLI: ~40 s on 2 busy cores
def test_bench_batched_times_the_three_sweeps_and_measures_the_differences(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "bench_batched.py"), "--seeds", "2",
         "--epochs", "20", "--evals", "4", "--json", str(tmp_path / "b.json")],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(root)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads((tmp_path / "b.json").read_text())
    assert set(got["walls"]) == {"one", "batched", "exact"} and min(got["walls"].values()) > 0
    assert got["differences"]["seed0_alone_vs_exact_stack_max_diff"] == 0.0  # the exact rule
    for col in ("I_XT", "I_TY", "train_loss"):
        assert 0 <= got["differences"][col]["max_diff"] < 1  # rounding after 20 steps
    assert "x one seed" in proc.stdout
