"""The user's sweep end to end: infoflow against the same work done the seed notebook's way.

Side by side in one run, on Fashion-MNIST (``data=fashion_mnist``):

* infoflow: ``python -m infoflow -m model=mlp1,mlp3,mlp5,cnn estimator.bins=10,30
  data=fashion_mnist trainer.epochs=E`` as a subprocess (the basic launcher, default estimator
  ``binning``, training cache on: 4 networks trained, 8 jobs estimated, epoch 0 measured too),
  run once before the reference and once after it (``--sweep-runs``): the shared machine's speed
  drifts over the reference's minutes, and the two runs bracket it; optionally the same with
  ``cache.enabled=false`` (8 trainings);
* the notebook's way, in this process: ``torchvision.datasets.FashionMNIST`` with
  ``transforms.ToTensor()``, ``DataLoader(batch_size=256, shuffle=True)``, the notebook's model
  classes, one training per (model, bin count), and after every epoch the evaluation split read
  through a ``DataLoader`` and estimated with either the notebook's per-neuron sklearn loop
  (``--estimator per_neuron``) or whole-layer binning computed the usual way
  (``--estimator binning``: ``np.digitize`` on the layer's range, ``np.unique`` on row views,
  as in Shwartz-Ziv & Tishby's code). infoflow then runs with the matching estimator. The
  notebook estimates after epochs 1..E; infoflow's table also has epoch 0 (the untrained net),
  so the reference's estimate before training is timed apart and both totals are printed: the
  notebook's schedule (the ratio column) and the same rows as infoflow.

Then, per model, the per-epoch check of issue 5: one epoch of infoflow's training loop against
a bare forward/backward/step loop over the same preloaded tensors, and the evaluation pass +
default estimate (binning, 30 bins) as a share of the epoch. The check runs with the allocator
settings of infoflow's jobs (``malloc=retain``, :mod:`infoflow.allocator`), set after the
notebook-way reference, which keeps glibc's defaults as a notebook does.

    python benchmarks/bench_sweep.py                           # the full thing (minutes)
    python benchmarks/bench_sweep.py --epochs 1 --subset 20000 # a reduced run
    python benchmarks/bench_sweep.py --models mlp1,cnn --skip-sweep

``--subset N`` keeps the first N training images (``--eval-subset M`` the first M evaluation
images) by writing reduced IDX files that both sides read. Prints a table: stage, seconds,
ratio to the reference, and the machine. CPU figures only unless a GPU is present
(``--device``).
"""

from __future__ import annotations

import argparse
import gzip
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from infoflow.allocator import retain_freed_memory
from infoflow.data import DEBIAN_FASHION_MNIST, IDX_FILES, find_idx, read_idx
from infoflow.estimators import binning
from infoflow.models import CNN, MLP
from infoflow.train import Trainer, evaluate, measure

HIDDEN = {"mlp1": [128], "mlp3": [256, 128, 64], "mlp5": [512, 256, 128, 64]}


# ---------------------------------------------------------------------------------------------
# data: one folder both sides read (torchvision's FashionMNIST/raw layout, uncompressed)


def write_idx(a: np.ndarray, path: Path) -> None:
    """Write a uint8 array as an IDX file (magic 0x08, big-endian dims)."""
    header = bytes([0, 0, 0x08, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
    path.write_bytes(header + np.ascontiguousarray(a, dtype=np.uint8).tobytes())


def prepare_root(src: Path, dst: Path, subset: int | None, eval_subset: int | None) -> Path:
    raw = dst / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    files = find_idx(src)
    if files is None:
        sys.exit(f"no Fashion-MNIST IDX files in {src} (apt-get install dataset-fashion-mnist)")
    for key, path in files.items():
        stem = IDX_FILES[key]
        keep = subset if key.endswith("train") else eval_subset
        if keep is None:
            opener = gzip.open if path.suffix == ".gz" else open
            with opener(path, "rb") as f, open(raw / stem, "wb") as out:
                shutil.copyfileobj(f, out)
        else:
            write_idx(read_idx(path)[:keep], raw / stem)
    return dst


# ---------------------------------------------------------------------------------------------
# the notebook's way (its classes, verbatim but for the widths)


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
    from sklearn.metrics import mutual_info_score

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
    from torch.utils.data import DataLoader

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


# ---------------------------------------------------------------------------------------------
# infoflow's way: the real CLI


def infoflow_sweep(models, bins, epochs, root, estimator, cache, device, workdir, tag="") -> dict:
    args = [
        sys.executable,
        "-m",
        "infoflow",
        "-m",
        f"model={','.join(models)}",
        f"estimator.bins={','.join(map(str, bins))}",
        "data=fashion_mnist",
        f"data.root={root}",
        f"trainer.epochs={epochs}",
        f"device={device}",
        f"cache.enabled={str(cache).lower()}",
        f"hydra.sweep.dir={workdir / (('sweep_cache' if cache else 'sweep_nocache') + tag)}",
    ]
    if estimator == "per_neuron":
        args.insert(5, "estimator=per_neuron")
    t0 = time.perf_counter()
    out = subprocess.run(args, cwd=workdir, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        sys.exit(f"infoflow sweep failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    log = out.stdout + out.stderr
    pairs = re.findall(r"\(train ([\d.]+)s, estimate ([\d.]+)s", log)
    return {
        "wall": wall,
        "train": sum(float(a) for a, _ in pairs),
        "estimate": sum(float(b) for _, b in pairs),
        "jobs": log.count("] - job ") or len(models) * len(bins),
    }


# ---------------------------------------------------------------------------------------------
# per-epoch check: infoflow's loop vs a bare loop, estimation share


def bare_epoch(model, optimizer, x, y, batch_size, generator) -> None:
    for idx in torch.randperm(len(y), generator=generator, device=x.device).split(batch_size):
        loss = F.cross_entropy(model(x[idx]), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def epoch_check(name, data, reps) -> dict:
    def build():
        torch.manual_seed(0)
        if name == "cnn":
            model = CNN(data.in_shape, data.n_classes, channels=16)
        else:
            model = MLP(data.in_shape, data.n_classes, HIDDEN[name])
        model = model.to(data.x_train.device)
        return model, torch.optim.Adam(model.parameters(), lr=1e-3)

    bare_model, bare_opt = build()
    trainer = Trainer(*build(), data, 256, seed=0)
    gen = torch.Generator(device=data.x_train.device).manual_seed(0)
    bare_epoch(bare_model, bare_opt, data.x_train[:2048], data.y_train[:2048], 256, gen)  # warm
    bare_t, loop_t = [], []
    for r in range(reps):  # interleaved, best of reps: the machine is shared and noisy
        t0 = time.perf_counter()
        bare_epoch(bare_model, bare_opt, data.x_train, data.y_train, 256, gen)
        sync(data)
        t1 = time.perf_counter()
        trainer.train_to((r + 1) * trainer.per_epoch)
        sync(data)
        bare_t.append(t1 - t0)
        loop_t.append(time.perf_counter() - t1)
    fwd_t, est_t = [], []
    layers = None  # the loop's buffers, reused from point to point
    for _ in range(reps + 1):  # the first pass allocates the buffers, as at a job's step 0
        t0 = time.perf_counter()
        _, layers = evaluate(trainer.model, data, 4096, out=layers)
        sync(data)
        t1 = time.perf_counter()
        measure(layers, data, lambda T, X, Y: binning(T, X, Y, bins=30), trainer.model.probe_names)
        fwd_t.append(t1 - t0)
        est_t.append(time.perf_counter() - t1)
    fwd_t, est_t = fwd_t[1:], est_t[1:]
    return {"bare": min(bare_t), "loop": min(loop_t), "forward": min(fwd_t), "estimate": min(est_t)}


def sync(data) -> None:
    if data.x_train.device.type == "cuda":
        torch.cuda.synchronize()


# ---------------------------------------------------------------------------------------------


def gemm_rate(seconds: float = 1.0) -> float:
    """float32 GEMM throughput right now, GFLOP/s (1024 x 1024 products on torch's threads): a
    probe of the shared machine's state, printed at the start and the end of a run."""
    a, b = torch.rand(1024, 1024), torch.rand(1024, 1024)
    torch.mm(a, b)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        torch.mm(a, b)
        n += 1
    return 2 * 1024**3 * n / (time.perf_counter() - t0) / 1e9


def copy_rate(seconds: float = 1.0) -> float:
    """Memory copy throughput right now, GB/s read + written (a 256 MB float32 tensor)."""
    a = torch.rand(64 << 20)
    b = torch.empty_like(a)
    b.copy_(a)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        b.copy_(a)
        n += 1
    return 2 * a.numel() * 4 * n / (time.perf_counter() - t0) / 1e9


def state() -> str:
    return f"sgemm {gemm_rate():.0f} GFLOP/s, copy {copy_rate():.1f} GB/s"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    threads = torch.get_num_threads()
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({threads} threads){gpu}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--models", default="mlp1,mlp3,mlp5,cnn")
    ap.add_argument("--bins", default="10,30")
    ap.add_argument("--subset", type=int, default=None, help="first N training images")
    ap.add_argument("--eval-subset", type=int, default=None, help="first M evaluation images")
    ap.add_argument("--estimator", choices=["binning", "per_neuron"], default="binning")
    ap.add_argument("--root", default=DEBIAN_FASHION_MNIST, help="folder with the IDX files")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-cache-too", action="store_true", help="also run with cache off")
    ap.add_argument(
        "--sweep-runs",
        type=int,
        default=2,
        help="infoflow sweeps: 1 before the reference, the others after it (default 2)",
    )
    ap.add_argument("--skip-sweep", action="store_true", help="only the per-epoch check")
    ap.add_argument("--skip-epoch-check", action="store_true")
    ap.add_argument("--reps", type=int, default=2, help="epochs per model in the epoch check")
    args = ap.parse_args()
    models, bins = args.models.split(","), [int(b) for b in args.bins.split(",")]
    device = torch.device(args.device)
    work = Path(tempfile.mkdtemp(prefix="bench_sweep_"))
    root = prepare_root(Path(args.root), work / "data", args.subset, args.eval_subset)
    from infoflow.data import load_fashion_mnist

    data = load_fashion_mnist(str(root), download=False).to(device)
    n_tr, n_ev = len(data.y_train), len(data.y_eval)
    print(f"machine: {machine()}")
    print(f"machine state at start: {state()}")
    print(
        f"ran: models {','.join(models)} x bins {args.bins}, {args.epochs} epoch(s), "
        f"{n_tr} train / {n_ev} eval images, estimator {args.estimator}, device {device}"
    )
    rows, notes = [], []
    if not args.skip_sweep:
        from torchvision import datasets, transforms

        tf = transforms.ToTensor()
        train_ds = datasets.FashionMNIST(str(root), train=True, download=False, transform=tf)
        test_ds = datasets.FashionMNIST(str(root), train=False, download=False, transform=tf)
        estimate = notebook_per_neuron if args.estimator == "per_neuron" else usual_binning

        # infoflow runs before and after the reference (--sweep-runs 2, the default): the shared
        # machine's speed drifts over the reference's minutes, and the two runs bracket it
        def ours_run(i: int) -> dict:
            return infoflow_sweep(
                models, bins, args.epochs, root, args.estimator, True, args.device, work, f"_{i}"
            )

        runs = [ours_run(0)] if args.sweep_runs >= 1 else []
        ref = {"train": 0.0, "estimate": 0.0, "estimate0": 0.0}
        for name in models:
            for b in bins:
                t = notebook_job(name, b, args.epochs, train_ds, test_ds, estimate, device)
                ref = {k: ref[k] + t[k] for k in ref}
                print(
                    f"  notebook way {name} bins={b}: train {t['train']:.1f}s, estimate "
                    f"{t['estimate']:.1f}s (+ {t['estimate0']:.1f}s at epoch 0)"
                )
        total = ref["train"] + ref["estimate"]  # the notebook's schedule: epochs 1..E
        same_rows = total + ref["estimate0"]  # infoflow's rows: epochs 0..E
        runs += [ours_run(i) for i in range(1, args.sweep_runs)]
        rows += [
            ("notebook way: train (DataLoader, retrain per bins)", ref["train"], None),
            ("notebook way: estimate after epochs 1..E", ref["estimate"], None),
            ("notebook way: total, the notebook's schedule", total, 1.0),
            ("notebook way: + estimate at epoch 0 (as in infoflow)", ref["estimate0"], None),
            ("notebook way: total, the same rows as infoflow", same_rows, None),
        ]
        for i, ours in enumerate(runs):
            when = "before" if i == 0 else "after"
            rows += [
                (f"infoflow sweep (cache on), run {i + 1} ({when}): wall", ours["wall"],
                 total / ours["wall"]),
                ("  of which train / cache load (logged)", ours["train"], None),
                ("  of which evaluate + estimate (logged)", ours["estimate"], None),
            ]  # fmt: skip
        if runs:
            mean = sum(r["wall"] for r in runs) / len(runs)
            rows.append((f"infoflow sweep, mean of {len(runs)} run(s)", mean, total / mean))
            notes.append(
                f"speed-up of infoflow's mean run: {total / mean:.2f}x against the notebook's "
                f"schedule, {same_rows / mean:.2f}x against the same rows (epoch 0 estimated too)"
            )
        if args.no_cache_too:
            nc = infoflow_sweep(
                models, bins, args.epochs, root, args.estimator, False, args.device, work
            )
            rows.append(("infoflow sweep (cache off): wall", nc["wall"], total / nc["wall"]))
    if not args.skip_epoch_check:
        # both loops with the allocator settings infoflow's jobs run with (malloc=retain); the
        # notebook-way reference above ran with glibc's defaults, as a notebook does
        retained = retain_freed_memory()
        print(f"epoch check: malloc {'retain' if retained else 'system'}")
        for name in models:
            r = epoch_check(name, data, args.reps)
            rows += [
                (f"{name} epoch: bare fwd/bwd/step loop", r["bare"], 1.0),
                (f"{name} epoch: infoflow training loop", r["loop"], r["loop"] / r["bare"]),
                (f"{name} eval pass with probes / loop", r["forward"], r["forward"] / r["loop"]),
                (f"{name} estimate (binning 30) / loop", r["estimate"], r["estimate"] / r["loop"]),
            ]
    width = max(len(s) for s, _, _ in rows)
    print(f"\n{'stage':<{width}}  {'seconds':>8}  {'ratio':>7}")
    for stage, secs, ratio in rows:
        rtxt = "" if ratio is None or math.isnan(ratio) else f"{ratio:7.2f}"
        print(f"{stage:<{width}}  {secs:8.2f}  {rtxt:>7}")
    for note in notes:
        print(f"\n{note}")
    print(f"\nmachine state at end: {state()}")
    print(
        "\nratio: sweep rows = notebook total / that stage (speed-up); epoch rows = seconds / "
        "bare loop; eval pass and estimate rows = share of the infoflow epoch."
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
