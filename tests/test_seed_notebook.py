"""`experiment=seed` reproduces the seed notebook: its estimator to 1e-9, its nets, its settings."""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import mutual_info_score

from infoflow.estimators import per_neuron
from infoflow.training.data import load_digits
from infoflow.training.models import CNN, MLP
from infoflow.training.probe import activations as probe_activations
from tests.test_data import write_tiny_mnist


def estimate_mutual_info(X, Y, n_bins=30):  # the notebook's function, verbatim
    bins_x = np.linspace(np.min(X), np.max(X), n_bins + 1)
    x_b = np.digitize(X, bins_x) - 1
    y_b = Y if Y.dtype.kind in "i" else np.digitize(Y, bins_x) - 1
    return mutual_info_score(x_b, y_b)


def notebook_estimate(layer_acts, all_x, all_y, n_bins=30):
    """The notebook's per-layer loop, converted from nats to bits."""
    n_neurons = min(layer_acts.shape[1], 50)
    mi_x = [estimate_mutual_info(all_x[:, n], layer_acts[:, n], n_bins) for n in range(n_neurons)]
    mi_y = [estimate_mutual_info(layer_acts[:, n], all_y, n_bins) for n in range(n_neurons)]
    return np.mean(mi_x) / np.log(2), np.mean(mi_y) / np.log(2)


def activations(model, x):
    _, probes = probe_activations(model, x)
    return [p.numpy() for p in probes]


@pytest.mark.parametrize("bins", [30, 10, 2])
@pytest.mark.parametrize("net", ["mlp", "cnn"])
def test_per_neuron_equals_the_notebook_on_real_activations(net, bins):
    data = load_digits()
    torch.manual_seed(0)
    model = MLP((1, 8, 8), 10, [128, 64]) if net == "mlp" else CNN((1, 8, 8), 10, channels=4)
    for _ in range(5):  # a few steps so that units differ from their init
        loss = torch.nn.functional.cross_entropy(model(data.x_train[:256]), data.y_train[:256])
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.5 * p.grad
                p.grad = None
    x = data.x_eval.flatten(1).numpy()  # (360, 64), pixel 0 is constant: the degenerate case
    y = data.y_eval.numpy()
    for T in activations(model, data.x_eval):
        ours = per_neuron(T, x, y, bins=bins)
        ref_xt, ref_ty = notebook_estimate(T, x, y, bins)
        assert abs(ours["I_XT"] - ref_xt) < 1e-9
        assert abs(ours["I_TY"] - ref_ty) < 1e-9
        assert ours["units_used"] == min(T.shape[1], 50)


def test_per_neuron_equals_the_notebook_on_random_arrays():
    rng = np.random.default_rng(1)
    for n, d in [(500, 30), (1000, 80), (64, 64)]:
        x = rng.random((n, 784))
        T = np.maximum(rng.normal(size=(n, d)) * rng.uniform(0.1, 5), 0)  # ReLU-like, out of range
        y = rng.integers(0, 10, n)
        ours = per_neuron(T, x, y)
        ref = notebook_estimate(T, x, y)
        assert abs(ours["I_XT"] - ref[0]) < 1e-9 and abs(ours["I_TY"] - ref[1]) < 1e-9


def test_per_neuron_accepts_torch_tensors():
    g = torch.Generator().manual_seed(0)
    T, X = torch.rand(300, 60, generator=g), torch.rand(300, 60, generator=g)
    Y = torch.arange(300) % 3
    a = per_neuron(T, X, Y)
    b = per_neuron(T.numpy(), X.numpy(), Y.numpy())
    assert a == b


def test_experiment_seed_runs_on_mnist_files(cli, tmp_path):
    """The seed experiment end to end on tiny MNIST IDX files: per-neuron rows per epoch."""
    root = tmp_path / "mnist"
    write_tiny_mnist(root, gz=True, n_train=300, n_eval=100)
    proc = cli("experiment=seed", "model=cnn", f"data.root={root}", "data.download=false",
               "trainer.epochs=2")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (table,) = tmp_path.glob("outputs/runs/*/*/mi.parquet")
    df = pd.read_parquet(table)
    assert (df.estimator == "per_neuron").all() and (df.data == "mnist").all()
    assert (df["trainer.batch_size"] == 256).all() and (df["optimizer.lr"] == 1e-3).all()
    assert df.layer_name.unique().tolist() == ["conv1", "conv2"]
    assert df.units.unique().tolist() == [16 * 28 * 28, 32 * 14 * 14]
    assert sorted(df.epoch.unique()) == [0, 1, 2]
    assert (df.units_used == 50).all() and (df.n_samples == 100).all()
