"""Per-epoch cost of infoflow's loop against the usual torchvision + DataLoader loop.

Side by side in one process, on Fashion-MNIST (60,000 train / 10,000 eval images):

* reference: ``torchvision.datasets.FashionMNIST`` with ``transforms.ToTensor()`` and a
  ``DataLoader`` (batch 256, shuffle), the eval split re-read through a DataLoader, and the seed
  notebook's per-neuron sklearn loop as the estimate;
* infoflow: whole tensors, shuffled index slicing, one no-grad eval pass, vectorised estimators.

    python benchmarks/bench_epoch.py --model mlp5 --epochs 2

Prints per-epoch train and estimate seconds for both and their ratios. Needs the Fashion-MNIST IDX
files (``apt-get install dataset-fashion-mnist`` or ``--root`` at a folder holding them).
"""

from __future__ import annotations

import argparse
import gzip
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from single import Trainer
from sklearn.metrics import mutual_info_score

from infoflow.estimators import binning, per_neuron
from infoflow.training.data import DEBIAN_FASHION_MNIST, IDX_FILES, find_idx, load_fashion_mnist
from infoflow.training.models import CNN, MLP
from infoflow.training.probe import Probe, activations, evaluate, measure

HIDDEN = {"mlp1": [128], "mlp3": [256, 128, 64], "mlp5": [512, 256, 128, 64]}


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return (
        CNN((1, 28, 28), 10, channels=16) if name == "cnn" else MLP((1, 28, 28), 10, HIDDEN[name])
    )


def torchvision_root(src: Path, dst: Path) -> Path:
    """Lay the IDX files out as torchvision's FashionMNIST expects (uncompressed, in raw/)."""
    raw = dst / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for stem, path in zip(IDX_FILES.values(), find_idx(src).values()):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f, open(raw / stem, "wb") as out:
            shutil.copyfileobj(f, out)
    return dst


def notebook_mi(X, Y, n_bins=30):
    bins_x = np.linspace(np.min(X), np.max(X), n_bins + 1)
    x_b = np.digitize(X, bins_x) - 1
    y_b = Y if Y.dtype.kind in "i" else np.digitize(Y, bins_x) - 1
    return mutual_info_score(x_b, y_b)


def reference_epoch(model, train_loader, test_loader) -> tuple[float, float]:
    """The notebook's epoch: DataLoader training, then eval pass + per-neuron sklearn loop."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    t0 = time.perf_counter()
    model.train()
    for imgs, labels in train_loader:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(imgs), labels)
        loss.backward()
        opt.step()
    t1 = time.perf_counter()
    model.eval()
    acts, xs, ys = [], [], []
    with torch.no_grad():
        for imgs, labels in test_loader:
            _, probes = activations(model, imgs)
            acts.append([p.numpy() for p in probes])
            xs.append(imgs.view(imgs.size(0), -1).numpy())
            ys.append(labels.numpy())
    all_x, all_y = np.concatenate(xs), np.concatenate(ys)
    for i in range(len(acts[0])):
        layer = np.concatenate([a[i] for a in acts])
        for n in range(min(layer.shape[1], 50)):
            notebook_mi(all_x[:, n], layer[:, n])
            notebook_mi(layer[:, n], all_y)
    return t1 - t0, time.perf_counter() - t1


def infoflow_epoch(model, data, estimator, generator) -> tuple[float, float]:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    t0 = time.perf_counter()
    trainer = Trainer(model, opt, data, 256, seed=0)
    trainer.generator = generator
    trainer.train_to(trainer.per_epoch)
    t1 = time.perf_counter()
    _, layers = evaluate(model, data, 4096)
    measure(layers, data, estimator, list(Probe.of(model, None, data.x_eval[:1]).names))
    return t1 - t0, time.perf_counter() - t1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="mlp5", choices=[*HIDDEN, "cnn"])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--root", default=DEBIAN_FASHION_MNIST)
    args = p.parse_args()

    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    data = load_fashion_mnist(root=args.root, download=False)
    tmp = Path(tempfile.mkdtemp())
    try:
        root = torchvision_root(Path(args.root), tmp)
        tf = transforms.ToTensor()
        train_ds = datasets.FashionMNIST(str(root), train=True, download=False, transform=tf)
        test_ds = datasets.FashionMNIST(str(root), train=False, download=False, transform=tf)
        train_loader = DataLoader(train_ds, batch_size=256, shuffle=True)
        test_loader = DataLoader(test_ds, batch_size=256, shuffle=False)
        rows = []
        for epoch in range(1, args.epochs + 1):
            ref = reference_epoch(build(args.model), train_loader, test_loader)
            g = torch.Generator().manual_seed(epoch)
            ours_bin = infoflow_epoch(build(args.model), data, binning, g)
            ours_pn = infoflow_epoch(build(args.model), data, per_neuron, g)
            rows.append((epoch, ref, ours_bin, ours_pn))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(
        f"# {args.model} on Fashion-MNIST, {platform.node()} ({platform.machine()}, "
        f"{torch.get_num_threads()} torch threads), torch {torch.__version__}"
    )
    print(
        "epoch | ref train | ref est (notebook) | ours train | ours est binning | "
        "ours est per_neuron | train ratio | est ratio (per_neuron) | epoch ratio | est share"
    )
    for epoch, (rt, re), (ot, ob), (_, op) in rows:
        print(
            f"{epoch:5d} | {rt:9.2f} | {re:18.2f} | {ot:10.2f} | {ob:16.3f} | {op:19.3f} | "
            f"{rt / ot:10.1f}x | {re / op:21.1f}x | {(rt + re) / (ot + ob):10.1f}x | "
            f"{ob / (ot + ob):8.1%}"
        )


if __name__ == "__main__":
    main()
