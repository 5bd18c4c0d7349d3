"""The user's sweep end to end: infoflow against the same work done the seed notebook's way.

Side by side in one run, on Fashion-MNIST (``data=fashion_mnist``):

* infoflow: ``python -m infoflow -m model=mlp1,mlp3,mlp5,cnn estimator.bins=10,30
  data=fashion_mnist trainer.epochs=E`` as a subprocess (the basic launcher, default estimator
  ``binning``, training cache on: 4 networks trained, 8 jobs estimated, epoch 0 measured too),
  run before the reference's processes and after each of them (``--sweep-runs``): the shared
  machine's speed drifts over the reference's minutes, and the runs sample it around them;
  optionally the same with ``runtime.cache.enabled=false`` (8 trainings);
* the notebook's way (``benchmarks/notebook_way.py``): the notebook's script run once per bin
  count, each run a process of its own, timed end to end like infoflow's (process start,
  imports, data sets, training, estimates): ``torchvision.datasets.FashionMNIST`` with
  ``transforms.ToTensor()``, ``DataLoader(batch_size=256, shuffle=True)``, the notebook's model
  classes, and after every epoch the evaluation split read through a ``DataLoader`` and
  estimated with either the notebook's per-neuron sklearn loop (``--estimator per_neuron``) or
  whole-layer binning computed the usual way (``--estimator binning``, the default, as
  infoflow's default estimator). The notebook estimates after epochs 1..E; infoflow's table also
  has epoch 0 (the untrained net), so the reference's estimate before training is timed apart
  and both totals are printed: the notebook's schedule (the ratio column) and the same rows as
  infoflow. The reference's training and estimates alone (what versions of this benchmark
  before 2026-11-29 timed, in this process) are printed too.

Then, per model, the per-epoch check of issue 5: one epoch of infoflow's training loop against
a bare forward/backward/step loop over the same preloaded tensors, and the evaluation pass +
default estimate (binning, 30 bins) as a share of the epoch.

    python benchmarks/bench_sweep.py                           # the full thing (minutes)
    python benchmarks/bench_sweep.py --epochs 1 --subset 20000 # a reduced run
    python benchmarks/bench_sweep.py --models mlp1,cnn --skip-sweep
    python benchmarks/bench_sweep.py --device cuda --skip-reference   # on a GPU machine

On CUDA the per-epoch check also counts the host syncs of one training epoch, one evaluation
pass and one estimate (``torch.cuda.set_sync_debug_mode("warn")``). ``--skip-reference`` runs
infoflow's sweeps without the notebook-way reference (no ratios).

``--subset N`` keeps the first N training images (``--eval-subset M`` the first M evaluation
images) by writing reduced IDX files that both sides read. Prints a table: stage, seconds,
ratio to the reference, and the machine. CPU figures only unless a GPU is present
(``--device``).
"""

from __future__ import annotations

import argparse
import gzip
import json
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
from single import Trainer

from infoflow.estimators import binning
from infoflow.training.data import DEBIAN_FASHION_MNIST, IDX_FILES, find_idx, read_idx
from infoflow.training.device import deterministic_kernels
from infoflow.training.models import CNN, MLP
from infoflow.training.probe import Probe, evaluate, measure

sys.path.insert(0, str(Path(__file__).parent))
from notebook_way import HIDDEN

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
# the notebook's way: benchmarks/notebook_way.py, one process per bin count


def notebook_run(bins, models, epochs, root, estimator, device) -> dict:
    """One run of the notebook's way (the four nets, one bin count) as its own process:
    its wall time end to end and its jobs' split (train, estimate, estimate0 per model)."""
    script = Path(__file__).with_name("notebook_way.py")
    args = [sys.executable, str(script), "--root", str(root), "--bins", str(bins)]
    args += ["--epochs", str(epochs), "--models", ",".join(models)]
    args += ["--estimator", estimator, "--device", str(device)]
    t0 = time.perf_counter()
    out = subprocess.run(args, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        sys.exit(f"notebook way failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return {"wall": wall, "jobs": json.loads(out.stdout.strip().splitlines()[-1])}


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
        f"runtime.device={device}",
        f"runtime.cache.enabled={str(cache).lower()}",
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
    names = list(Probe.of(trainer.model, None, data.x_eval[:1]).names)
    layers = None  # the loop's buffers, reused from point to point
    for _ in range(reps + 1):  # the first pass allocates the buffers, as at a job's step 0
        t0 = time.perf_counter()
        _, layers = evaluate(trainer.model, data, 4096, out=layers)
        sync(data)
        t1 = time.perf_counter()
        measure(
            layers,
            data,
            lambda T, X, Y: binning(T, X, Y, bins=30),
            names,
        )
        fwd_t.append(t1 - t0)
        est_t.append(time.perf_counter() - t1)
    fwd_t, est_t = fwd_t[1:], est_t[1:]
    out = {"bare": min(bare_t), "loop": min(loop_t), "forward": min(fwd_t), "estimate": min(est_t)}
    if data.x_train.device.type == "cuda":  # host syncs: one more epoch and evaluation, counted
        step = trainer.step + trainer.per_epoch
        out["syncs_train"] = count_syncs(lambda: trainer.train_to(step))
        out["syncs_eval"] = count_syncs(lambda: evaluate(trainer.model, data, 4096, out=layers))
        out["syncs_estimate"] = count_syncs(
            lambda: measure(
                layers,
                data,
                lambda T, X, Y: binning(T, X, Y, bins=30),
                names,
            )
        )
        out["steps"], out["layers"] = trainer.per_epoch, len(layers)
    return out


def count_syncs(fn) -> int:
    """Synchronizing CUDA calls (a device-to-host read, ``.item()``, a blocking copy...) that
    ``fn`` makes, counted with ``torch.cuda.set_sync_debug_mode("warn")``."""
    import warnings

    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


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
        default=None,
        help="infoflow sweeps, interleaved with the reference's processes: one before them, "
        "one after each, the rest at the end (default: one more than the bin counts)",
    )
    ap.add_argument("--skip-sweep", action="store_true", help="only the per-epoch check")
    ap.add_argument(
        "--skip-reference",
        action="store_true",
        help="infoflow's sweep runs without the notebook-way reference (no ratio)",
    )
    ap.add_argument("--skip-epoch-check", action="store_true")
    ap.add_argument("--reps", type=int, default=2, help="epochs per model in the epoch check")
    args = ap.parse_args()
    models, bins = args.models.split(","), [int(b) for b in args.bins.split(",")]
    device = torch.device(args.device)
    deterministic_kernels(device)  # as infoflow's jobs run, for both loops of the epoch check
    work = Path(tempfile.mkdtemp(prefix="bench_sweep_"))
    root = prepare_root(Path(args.root), work / "data", args.subset, args.eval_subset)
    from infoflow.training.data import load_fashion_mnist

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
        # infoflow's runs are interleaved with the reference's processes (by default one before
        # them and one after each): the shared machine's speed drifts over the reference's
        # minutes, and the runs sample it around each process
        n_runs = args.sweep_runs
        if n_runs is None:
            n_runs = 1 if args.skip_reference else len(bins) + 1
        runs: list[dict] = []

        def ours_run(when: str) -> None:
            if len(runs) < n_runs:
                tag = f"_{len(runs)}"
                ours = infoflow_sweep(
                    models, bins, args.epochs, root, args.estimator, True, args.device, work, tag
                )
                runs.append({**ours, "when": when})

        ours_run("no reference" if args.skip_reference else "before the reference")
        ref = {"wall": 0.0, "train": 0.0, "estimate": 0.0, "estimate0": 0.0}
        for b in bins if not args.skip_reference else []:  # the notebook run once per bin count
            r = notebook_run(b, models, args.epochs, root, args.estimator, args.device)
            ref["wall"] += r["wall"]
            for name, t in r["jobs"].items():
                for k in ("train", "estimate", "estimate0"):
                    ref[k] += t[k]
                print(
                    f"  notebook way {name} bins={b}: train {t['train']:.1f}s, estimate "
                    f"{t['estimate']:.1f}s (+ {t['estimate0']:.1f}s at epoch 0)"
                )
            print(f"  notebook way bins={b}: {r['wall']:.1f}s as a process, end to end")
            ours_run(f"after bins={b}")
        inside = ref["train"] + ref["estimate"]  # what earlier versions of this benchmark timed
        start = ref["wall"] - inside - ref["estimate0"]  # process start, imports, data sets
        total = ref["wall"] - ref["estimate0"]  # the notebook's schedule (epochs 1..E), end to end
        same_rows = ref["wall"]  # infoflow's rows: epochs 0..E
        if args.skip_reference:
            total = same_rows = inside = math.nan  # no ratios
        while len(runs) < n_runs:
            ours_run("no reference" if args.skip_reference else "after the reference")
        if not args.skip_reference:
            rows += [
                ("notebook way: train (DataLoader, retrain per bins)", ref["train"], None),
                ("notebook way: estimate after epochs 1..E", ref["estimate"], None),
                ("notebook way: process start, imports, data sets", start, None),
                ("notebook way: total, the notebook's schedule", total, 1.0),
                ("notebook way: + estimate at epoch 0 (as in infoflow)", ref["estimate0"], None),
                ("notebook way: total, the same rows as infoflow", same_rows, None),
            ]
        for i, ours in enumerate(runs):
            rows += [
                (f"infoflow sweep (cache on), run {i + 1} ({ours['when']}): wall", ours["wall"],
                 total / ours["wall"]),
                ("  of which train / cache load (logged)", ours["train"], None),
                ("  of which evaluate + estimate (logged)", ours["estimate"], None),
            ]  # fmt: skip
        if runs:
            mean = sum(r["wall"] for r in runs) / len(runs)
            rows.append((f"infoflow sweep, mean of {len(runs)} run(s)", mean, total / mean))
        if runs and not args.skip_reference:
            notes.append(
                f"speed-up of infoflow's mean run: {total / mean:.2f}x against the notebook's "
                f"schedule, {same_rows / mean:.2f}x against the same rows (epoch 0 estimated "
                f"too); {inside / mean:.2f}x against the reference's training and estimates "
                "alone (no process start, imports or data sets: earlier versions' figure)"
            )
        if args.no_cache_too:
            nc = infoflow_sweep(
                models, bins, args.epochs, root, args.estimator, False, args.device, work
            )
            rows.append(("infoflow sweep (cache off): wall", nc["wall"], total / nc["wall"]))
    if not args.skip_epoch_check:
        for name in models:
            r = epoch_check(name, data, args.reps)
            if "syncs_train" in r:
                notes.append(
                    f"{name} host syncs: {r['syncs_train']} in a training epoch of "
                    f"{r['steps']} steps, {r['syncs_eval']} in the eval pass, "
                    f"{r['syncs_estimate']} in the estimate of its {r['layers']} layers"
                )
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
