"""The seed notebook's way, as a process of its own: one run trains the four nets with one
bin count, as running the notebook once per bin count does.

The notebook's imports, ``torchvision.datasets.FashionMNIST`` with ``transforms.ToTensor()``,
``DataLoader(batch_size=256, shuffle=True)``, its model classes (verbatim but for the widths),
Adam 1e-3 and 5 epochs by default; after every epoch the evaluation split goes through a
``DataLoader`` and every layer is estimated, either with the notebook's per-neuron sklearn loop
(``--estimator per_neuron``) or with whole-layer binning computed the usual way
(``--estimator binning``: ``np.digitize`` on the layer's range, ``np.unique`` on row views, as
in Shwartz-Ziv & Tishby's code). The estimate before training (epoch 0, which infoflow's table
has and the notebook does not) is timed apart.

``benchmarks/bench_sweep.py`` runs it once per bin count and times each process end to end
(start, imports, data sets, training, estimates); the process prints its own split as one JSON
line::

    python benchmarks/notebook_way.py --root DIR --bins 30   # DIR/FashionMNIST/raw/*-ubyte

This file imports only what the notebook imports (no infoflow), so its start-up costs what
the notebook's does.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn as nn
from sklearn.metrics import mutual_info_score
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

HIDDEN = {"mlp1": [128], "mlp3": [256, 128, 64], "mlp5": [512, 256, 128, 64]}


class NotebookMLP(nn.Module):
    def __init__(self, dims):
        super().__init__()
        layers = []
        for i in range(len(dims) - 2):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            layers.append(nn.ReLU())
        layers.append(nn.Linear(dims[-2], dims[-1]))
        self.network = nn.Sequential(*layers)

    def forward(self, x):
        x = x.view(x.size(0), -1)
        activations = []
        out = x
        for layer in self.network:
            out = layer(out)
            if isinstance(layer, nn.ReLU):
                activations.append(out.detach())
        return out, activations


class NotebookCNN(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 5, padding=2)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(channels, channels * 2, 5, padding=2)
        self.pool2 = nn.MaxPool2d(2)
        self.fc = nn.Linear((channels * 2) * 7 * 7, 10)
        self.relu = nn.ReLU()

    def forward(self, x):
        activations = []
        out = self.relu(self.conv1(x))
        activations.append(out.view(out.size(0), -1).detach())
        out = self.pool1(out)
        out = self.relu(self.conv2(out))
        activations.append(out.view(out.size(0), -1).detach())
        out = self.pool2(out)
        out = out.view(out.size(0), -1)
        return self.fc(out), activations


def notebook_model(name: str) -> nn.Module:
    return NotebookCNN(16) if name == "cnn" else NotebookMLP([784, *HIDDEN[name], 10])


def notebook_mi(X, Y, n_bins=30):
    bins_x = np.linspace(np.min(X), np.max(X), n_bins + 1)
    x_b = np.digitize(X, bins_x) - 1
    y_b = Y if Y.dtype.kind in "i" else np.digitize(Y, bins_x) - 1
    return mutual_info_score(x_b, y_b)


def notebook_per_neuron(acts, all_x, all_y, bins):
    n_neurons = min(acts.shape[1], 50)
    for n in range(n_neurons):
        notebook_mi(all_x[:, n], acts[:, n], bins)
        notebook_mi(acts[:, n], all_y, bins)


def _entropy_of_rows(digitized: np.ndarray) -> float:
    rows = np.ascontiguousarray(digitized).view(
        np.dtype((np.void, digitized.dtype.itemsize * digitized.shape[1]))
    )
    _, counts = np.unique(rows, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def usual_binning(acts, all_x, all_y, bins):
    """Whole-layer binning as Shwartz-Ziv & Tishby's code does it: digitize, unique rows."""
    edges = np.linspace(acts.min(), acts.max(), bins + 1)
    digitized = np.digitize(acts, edges).astype(np.uint8)  # (n, d)
    h_t = _entropy_of_rows(digitized)
    h_t_y = sum((all_y == c).mean() * _entropy_of_rows(digitized[all_y == c]) for c in range(10))
    return h_t, h_t - h_t_y


def notebook_estimate(model, test_loader, estimate, bins, device) -> None:
    """The notebook's evaluation: the eval split through a DataLoader, every layer estimated."""
    model.eval()
    all_acts, all_x, all_y = [], [], []
    with torch.no_grad():
        for imgs, labels in test_loader:
            imgs, labels = imgs.to(device), labels.to(device)
            _, acts = model(imgs)
            if not all_acts:
                all_acts = [[] for _ in acts]
            for i, a in enumerate(acts):
                all_acts[i].append(a.cpu().numpy())
            all_x.append(imgs.view(imgs.size(0), -1).cpu().numpy())
            all_y.append(labels.cpu().numpy())
    all_x, all_y = np.concatenate(all_x), np.concatenate(all_y)
    for layer in all_acts:
        estimate(np.concatenate(layer), all_x, all_y, bins)


def notebook_job(name, bins, epochs, train_ds, test_ds, estimate, device) -> dict:
    """One (model, bins) job the notebook's way: seconds of training, of the estimates after
    epochs 1..E (the notebook's schedule) and of the estimate before training (epoch 0, which
    infoflow's table has too)."""
    torch.manual_seed(0)
    model = notebook_model(name).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = nn.CrossEntropyLoss()
    train_loader = DataLoader(train_ds, batch_size=256, shuffle=True)
    test_loader = DataLoader(test_ds, batch_size=256, shuffle=False)
    t0 = time.perf_counter()
    notebook_estimate(model, test_loader, estimate, bins, device)
    t = {"train": 0.0, "estimate": 0.0, "estimate0": time.perf_counter() - t0}
    for _ in range(epochs):
        t0 = time.perf_counter()
        model.train()
        for imgs, labels in train_loader:
            imgs, labels = imgs.to(device), labels.to(device)
            optimizer.zero_grad()
            outputs, _ = model(imgs)
            loss = criterion(outputs, labels)
            loss.backward()
            optimizer.step()
        t1 = time.perf_counter()
        notebook_estimate(model, test_loader, estimate, bins, device)
        t["train"] += t1 - t0
        t["estimate"] += time.perf_counter() - t1
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", required=True, help="folder holding FashionMNIST/raw")
    ap.add_argument("--bins", type=int, default=30)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--models", default="mlp1,mlp3,mlp5,cnn")
    ap.add_argument("--estimator", choices=["binning", "per_neuron"], default="binning")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    transform = transforms.ToTensor()
    train_ds = datasets.FashionMNIST(args.root, train=True, download=False, transform=transform)
    test_ds = datasets.FashionMNIST(args.root, train=False, download=False, transform=transform)
    estimate = notebook_per_neuron if args.estimator == "per_neuron" else usual_binning
    jobs = {}
    for name in args.models.split(","):
        jobs[name] = notebook_job(name, args.bins, args.epochs, train_ds, test_ds, estimate, device)
    print(json.dumps(jobs))


if __name__ == "__main__":
    main()
