"""The Tishby task: the generated data set, its symmetry, ib_net, probe.samples, the experiments."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
import torch
from hydra.utils import instantiate

from infoflow.spec import validate
from infoflow.training.data import (
    ICOSAHEDRON_NEIGHBOURS,
    ICOSAHEDRON_OPPOSITE,
    DataError,
    load_tishby,
    tishby_patterns,
)
from infoflow.training.models import MLP
from infoflow.training.probe import Probe, activations, evaluate, measure

# ---------------------------------------------------------------------------------------------
# the generator


def test_patterns_are_the_12_bit_numbers_msb_first():
    X, y = tishby_patterns()
    assert X.shape == (4096, 12) and y.shape == (4096,)
    assert X.dtype == np.int64 and y.dtype == np.int64
    assert set(np.unique(X)) == {0, 1} and set(np.unique(y)) == {0, 1}
    assert (X @ (1 << np.arange(11, -1, -1)) == np.arange(4096)).all()  # row r is r in binary
    assert X[1].tolist() == [0] * 11 + [1]


def test_labels_have_the_published_counts_and_entropy():
    _, y = tishby_patterns()
    p = y.mean()
    assert y.sum() == 2118
    assert p == pytest.approx(0.51709, abs=5e-6)
    assert -(p * math.log2(p) + (1 - p) * math.log2(1 - p)) == pytest.approx(0.99916, abs=5e-6)


def adjacency() -> np.ndarray:
    A = np.zeros((12, 12), dtype=bool)
    for i, nb in enumerate(ICOSAHEDRON_NEIGHBOURS):
        A[i, list(nb)] = True
    return A


def test_neighbours_form_an_icosahedron_and_opposites_are_at_distance_3():
    A = adjacency()
    assert (A == A.T).all() and not A.diagonal().any()
    assert (A.sum(1) == 5).all() and A.sum() // 2 == 30
    # graph distances by breadth-first powers of A
    reach, dist = np.eye(12, dtype=bool), np.full((12, 12), -1)
    for d in range(4):
        dist[reach & (dist < 0)] = d
        reach = reach | (reach.astype(int) @ A.astype(int) > 0)
    far = {tuple(sorted(p)) for p in zip(*np.nonzero(dist == 3))}
    assert far == {tuple(sorted(p)) for p in ICOSAHEDRON_OPPOSITE}
    assert (dist >= 0).all() and dist.max() == 3


def automorphisms(A: np.ndarray) -> list[tuple[int, ...]]:
    """Every vertex permutation that maps edges to edges, by backtracking (a search, not a
    table: the icosahedron's symmetries come out of the adjacency alone)."""
    n = len(A)
    found = []

    def extend(perm: list[int]) -> None:
        v = len(perm)
        if v == n:
            found.append(tuple(perm))
            return
        for image in range(n):
            if image in perm:
                continue
            if all(A[v, u] == A[image, perm[u]] for u in range(v)):
                extend([*perm, image])

    extend([])
    return found


def compose(p: tuple[int, ...], q: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(p[q[i]] for i in range(len(q)))


def inverse(p: tuple[int, ...]) -> tuple[int, ...]:
    out = [0] * len(p)
    for i, pi in enumerate(p):
        out[pi] = i
    return tuple(out)


def generated(gens: set[tuple[int, ...]]) -> set[tuple[int, ...]]:
    group = set(gens)
    frontier = set(gens)
    while frontier:
        new = {compose(a, b) for a in frontier for b in gens} - group
        group |= new
        frontier = new
    return group


def relabel(X: np.ndarray, perm: tuple[int, ...]) -> np.ndarray:
    """Row index of each pattern after moving bit v to vertex perm[v]."""
    moved = np.empty_like(X)
    moved[:, list(perm)] = X
    return moved @ (1 << np.arange(11, -1, -1))


def test_labels_respect_the_full_symmetry_group_of_the_icosahedron():
    X, y = tishby_patterns()
    group = automorphisms(adjacency())
    assert len(group) == 120  # rotations and reflections (I_h)
    # the rotations: the commutator subgroup of I_h = A5 x Z2 is A5, the 60 rotations
    commutators = {
        compose(compose(g, h), compose(inverse(g), inverse(h)))
        for g, h in itertools.product(group, repeat=2)
    }
    rotations = generated(commutators)
    assert len(rotations) == 60
    opposite = {**dict(ICOSAHEDRON_OPPOSITE), **{b: a for a, b in ICOSAHEDRON_OPPOSITE}}
    antipode = tuple(opposite[v] for v in range(12))
    assert antipode in group and antipode not in rotations  # central inversion: a reflection
    for perm in group:  # all 120, reflections included
        assert (y[relabel(X, perm)] == y).all()
    # and not under any permutation: a transposition of two bits changes some labels
    assert not (y[relabel(X, (1, 0, *range(2, 12)))] == y).all()


# ---------------------------------------------------------------------------------------------
# the loader and probe.samples


def test_loader_splits_all_patterns_seeded():
    data = load_tishby()
    assert data.name == "tishby" and data.in_shape == (12,) and data.n_classes == 2
    assert len(data.y_train) == 3276 and len(data.y_eval) == 820
    assert data.x_train.dtype == torch.float32 and set(data.x_train.unique().tolist()) == {0, 1}
    _, y = tishby_patterns()
    rows = torch.cat([data.x_train, data.x_eval]).long() @ (1 << torch.arange(11, -1, -1))
    assert sorted(rows.tolist()) == list(range(4096))  # a partition of the 4,096 patterns
    assert (torch.cat([data.y_train, data.y_eval]).numpy() == y[rows.numpy()]).all()
    again, other = load_tishby(), load_tishby(split_seed=1)
    assert torch.equal(again.x_eval, data.x_eval) and not torch.equal(other.x_eval, data.x_eval)
    assert len(load_tishby(test_size=0.5).y_eval) == 2048
    with pytest.raises(DataError, match=r"data\.test_size must be in"):
        load_tishby(test_size=1.0)


def test_probe_set_selects_eval_train_or_all_eval_first():
    data = load_tishby()
    assert data.probe_set("eval")[0] is data.x_eval
    assert data.probe_set("train")[1] is data.y_train
    x, y = data.probe_set("all")
    assert x.shape == (4096, 12) and torch.equal(y[:820], data.y_eval)
    assert torch.equal(x[820:], data.x_train)
    assert data.probe_set("all")[0] is x  # joined once
    with pytest.raises(ValueError, match=r"probe\.samples must be one of eval, train, all"):
        data.probe_set("test")


@pytest.mark.parametrize("batch_size", [4096, 300])  # one batch; several, one straddling
def test_evaluate_probes_the_chosen_samples_and_keeps_eval_figures(batch_size):
    data = load_tishby()
    torch.manual_seed(0)
    model = MLP(data.in_shape, 2, [10, 7, 5, 4, 3], "tanh", "truncated_normal")
    figures, layers = {}, {}
    for samples in ("eval", "train", "all"):
        figures[samples], layers[samples] = evaluate(model, data, batch_size, samples=samples)
    assert [t.shape[0] for t in layers["all"]] == [4096] * 5
    assert [t.shape[0] for t in layers["train"]] == [3276] * 5
    for a, b in zip(layers["all"], layers["eval"]):
        torch.testing.assert_close(a[:820], b)
    for samples in ("train", "all"):  # the evaluation figures stay on the evaluation split
        assert figures[samples]["eval_acc"] == figures["eval"]["eval_acc"]
        assert figures[samples]["eval_loss"] == pytest.approx(figures["eval"]["eval_loss"])


def test_probe_samples_sets_n_samples_and_h_max():
    from infoflow.estimators import binning

    data = load_tishby()
    model = MLP(data.in_shape, 2, [10, 7, 5, 4, 3], "tanh", "truncated_normal")
    for samples, n in (("eval", 820), ("train", 3276), ("all", 4096)):
        _, layers = evaluate(model, data, 4096, samples=samples)
        rows = measure(layers, data, lambda T, X, Y: binning(T, X, Y, bins=30), ["a"] * 5, samples)
        assert {r["n_samples"] for r in rows} == {n}
        assert [r["H_max"] for r in rows] == pytest.approx([math.log2(n)] * 5)


# ---------------------------------------------------------------------------------------------
# ib_net


def test_ib_net_is_the_papers_net(compose_cfg):
    cfg = compose_cfg("model=ib_net", "data=tishby")
    validate(cfg)
    net = instantiate(cfg.model, in_shape=(12,), n_classes=2)
    assert cfg.model.hidden == [10, 7, 5, 4, 3] and cfg.model.activation == "tanh"
    probe = Probe.of(net, cfg.probe.layers, torch.rand(1, 12))
    assert probe.names == ("fc1", "fc2", "fc3", "fc4", "fc5")
    assert probe.units == (10, 7, 5, 4, 3)
    shapes = [tuple(m.linear.weight.shape) for m in net.blocks()] + [tuple(net.out.weight.shape)]
    assert shapes == [(10, 12), (7, 10), (5, 7), (4, 5), (3, 4), (2, 3)]
    logits, probes = activations(net, torch.rand(6, 12))
    assert logits.shape == (6, 2) and [p.shape[1] for p in probes] == [10, 7, 5, 4, 3]
    assert all(p.abs().max() < 1 for p in probes)  # tanh
    relu = instantiate(compose_cfg("model=ib_net", "model.activation=relu").model, (12,), 2)
    assert all((p >= 0).all() for p in activations(relu, torch.randn(6, 12))[1])


def test_truncated_normal_init_statistics():
    torch.manual_seed(0)
    net = MLP((400,), 300, hidden=[500, 200], init="truncated_normal")
    # N(0, 1) truncated to [-2, 2] has std sqrt(1 - 4 phi(2) / (2 Phi(2) - 1)) = 0.87962
    truncated_std = math.sqrt(1 - 4 * math.exp(-2) / math.sqrt(2 * math.pi) / math.erf(2 / 2**0.5))
    for layer in [*(b.linear for b in net.blocks()), net.out]:
        w, scale = layer.weight.detach(), 1 / math.sqrt(layer.in_features)
        assert w.abs().max() <= 2 * scale + 1e-7 and w.abs().max() > 1.9 * scale
        assert w.mean().abs() < 0.01 * scale
        assert w.std().item() == pytest.approx(truncated_std * scale, rel=0.02)
        assert (layer.bias == 0).all()
    torch.manual_seed(0)
    default = MLP((400,), 300, hidden=[500, 200])  # PyTorch's default: uniform, biases != 0
    assert default.fc1.linear.weight.abs().max() <= 1 / 20 and (default.fc1.linear.bias != 0).any()


# ---------------------------------------------------------------------------------------------
# the experiments


def test_experiment_tishby2017_is_the_reference_run(compose_cfg):
    cfg = compose_cfg("experiment=tishby2017")
    validate(cfg)
    assert cfg.data._target_ == "infoflow.training.data.load_tishby"
    assert cfg.model.hidden == [10, 7, 5, 4, 4, 3] and cfg.model.activation == "tanh"
    assert cfg.model.init == "truncated_normal"
    assert cfg.optimizer._target_ == "torch.optim.Adam" and cfg.optimizer.lr == 2e-4
    assert cfg.trainer.epochs == 10_000 and cfg.trainer.batch_size >= 3276  # full batch
    assert cfg.estimator.bins == 30 and list(cfg.estimator.range) == [-1, 1]
    assert cfg.probe.samples == "all"
    from infoflow.training.schedule import eval_points

    points = eval_points(cfg.trainer.eval, cfg.trainer.epochs, 1)
    assert points[0].epoch == 0 and points[-1].epoch == 10_000
    assert 200 <= len(points) <= 400


def test_experiment_saxe2018_is_their_figure_1(compose_cfg):
    cfg = compose_cfg("experiment=saxe2018")
    validate(cfg)
    assert cfg.model.hidden == [10, 7, 5, 4, 3] and cfg.model.activation == "tanh"
    assert cfg.optimizer.lr == 4e-4 and cfg.trainer.batch_size == 256
    assert cfg.trainer.epochs == 10_000
    assert cfg.estimator.bins is None and cfg.estimator.bin_width == 0.07
    assert cfg.estimator.range == "layer" and cfg.probe.samples == "all"
    validate(compose_cfg("experiment=saxe2018", "model.activation=relu"))


# ---------------------------------------------------------------------------------------------
# the real CLI


def test_cli_probe_samples_all_estimates_on_every_pattern(cli, tmp_path):
    proc = cli("-m", "data=tishby", "model=ib_net", "probe.samples=eval,all", "trainer.epochs=2",
               "runtime.device=cpu")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (merged,) = tmp_path.glob("outputs/multirun/*/*/results.parquet")
    df = pd.read_parquet(merged)
    n = df.groupby("probe.samples")["n_samples"].unique()
    assert n["eval"].tolist() == [820] and n["all"].tolist() == [4096]
    assert df.groupby("probe.samples")["H_max"].max()["all"] == pytest.approx(12.0)
    assert len(df) == 2 * 3 * 5  # 2 jobs x epochs 0..2 x 5 layers
    # same training (one cache), same evaluation figures; estimates from their own samples
    a, b = (df[df["probe.samples"] == s].sort_values(["epoch", "layer"]) for s in ("eval", "all"))
    np.testing.assert_array_equal(a.eval_acc.to_numpy(), b.eval_acc.to_numpy())
    h_all, h_eval = b.H_T.to_numpy(), a.H_T.to_numpy()
    assert (h_all >= h_eval - 1e-9).all() and (h_all > h_eval).any()


def test_cli_refuses_bad_probe_samples(cli):
    proc = cli("probe.samples=foo")
    assert proc.returncode != 0
    assert "probe.samples must be one of eval, train, all" in proc.stderr
    assert "got 'foo'" in proc.stderr


def test_cli_refuses_cnn_on_tishby_and_says_why(cli):
    proc = cli("data=tishby", "model=cnn", "runtime.device=cpu")
    assert proc.returncode != 0
    assert "model=cnn needs image inputs" in proc.stderr and "no image shape" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_reduced_tishby2017_compresses_the_deepest_layers(cli, tmp_path):
    """tishby2017 at 10x the learning rate for a tenth of the epochs (the same Adam path in
    fewer steps): the two deepest hidden layers' I(X;T) rises, peaks, then falls by more than
    a bit, while I(T;Y) rises toward H(Y). Seeds 0, 1, 2 all show it (peak - start >= 0.49
    bits, end <= peak - 1.4 bits, final I(T;Y) >= 0.94 bits), so the margins below hold."""
    proc = cli("experiment=tishby2017", "optimizer.lr=2e-3", "trainer.epochs=1000",
               "trainer.eval=log:60", "runtime.device=cpu", timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (table,) = tmp_path.glob("outputs/runs/*/*/mi.parquet")
    df = pd.read_parquet(table)
    h_y = df["H_Y"].iloc[0]
    assert h_y == pytest.approx(0.99916, abs=1e-4) and (df["n_samples"] == 4096).all()
    deepest = sorted(df["layer"].unique())[-2:]
    for layer in deepest:
        g = df[df["layer"] == layer].sort_values("epoch")
        xt, ty, epoch = g["I_XT"].to_numpy(), g["I_TY"].to_numpy(), g["epoch"].to_numpy()
        peak = int(np.argmax(xt))
        assert 0 < epoch[peak] < epoch[-1]
        assert xt[peak] >= xt[0] + 0.25, f"layer {layer}: no rise: {xt[0]:.2f} -> {xt[peak]:.2f}"
        assert xt[-1] <= xt[peak] - 1.0, f"layer {layer}: no fall: {xt[peak]:.2f} -> {xt[-1]:.2f}"
        assert ty[-1] >= 0.9 * h_y and ty[-1] >= ty[0] + 0.5


# ---------------------------------------------------------------------------------------------
# the report's plane


def test_plane_has_the_papers_axes_and_log_epoch_colours():
    from matplotlib.colors import SymLogNorm

    from infoflow.report.plots import _epoch_norm, information_plane, log_schedule

    epochs = np.unique(np.rint(np.geomspace(1, 10_000, 60))).astype(int)  # full batch: whole
    epochs = np.concatenate([[0], epochs])
    rows = [
        {"run_id": f"r{seed}", "model": "ib_net", "data": "tishby", "epoch": e, "layer": layer,
         "layer_name": f"fc{layer}", "I_XT": 12 - layer * (1 + 0.1 * seed) - e / 5000,
         "I_TY": min(1.0, 0.2 * layer + e / 10_000), "n_samples": 4096, "H_Y": 0.99916,
         "trainer.eval": "log:60"}
        for seed in (0, 1) for e in epochs for layer in (1, 2, 3)
    ]  # fmt: skip
    df = pd.DataFrame(rows)
    assert log_schedule(df)  # the config says so: log-scaled epochs
    assert isinstance(_epoch_norm(df["epoch"].astype(float), log_schedule(df)), SymLogNorm)
    assert not log_schedule(df.assign(**{"trainer.eval": "epoch"}))  # every epoch: linear
    fig = information_plane(df)
    ax = fig.axes[0]
    assert ax.get_xlim()[0] <= 0 < 12 <= ax.get_xlim()[1] <= 12.5
    assert ax.get_ylim()[0] <= 0 < 1 <= ax.get_ylim()[1] <= 1.05
    (points,) = [c for c in ax.collections if c.get_gid() == "plane|ib_net|1"]
    assert len(points.get_offsets()) == len(epochs)  # one point per epoch: the seed mean
    np.testing.assert_allclose(points.get_offsets()[0][0], 12 - 1.05)  # mean of 10.9 and 11
    other = information_plane(df.assign(data="digits"))  # other data: the points' own range
    assert other.axes[0].get_xlim()[1] < 11.5


def test_no_saturation_warning_when_every_pattern_is_probed():
    from infoflow.report.page import saturation_note

    df = pd.DataFrame({"data": "tishby", "n_samples": 4096, "I_XT": 12.0, "saturated": True},
                      index=range(10))  # fmt: skip
    assert saturation_note(df) is None  # I(X;T) = H(X): the layer keeps every bit, a finding
    assert saturation_note(df.assign(n_samples=820, I_XT=math.log2(820))) is not None
    assert saturation_note(df.assign(data="digits", n_samples=4096)) is not None
