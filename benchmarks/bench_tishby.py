"""Where one seed of ``experiment=tishby2017`` spends its time: training, evaluations, files.

The job: 10,000 full-batch Adam steps of the [10,7,5,4,4,3] tanh net on 3,276 patterns, and 280
evaluations (epoch 0 and ``log:400``), each a no-grad pass over all 4,096 patterns, a binning
estimate of six layers, then the job's files rewritten (``mi.parquet``, ``checkpoint.pt``,
``status.json``). Measured side by side in one process, with the job's own functions:

* ``train``: ``Trainer.train_to`` over ``--steps`` steps, scaled to 10,000;
* ``evaluate``: ``evaluate(samples="all")`` + ``measure`` (30 bins on [-1, 1]) at 280 points;
* ``files``: ``Job.record`` at the 280 points (the table grown by each point's rows to 1,680,
  the checkpoint of the training state, the status) and ``Job.finish``, in a temp dir.

    python benchmarks/bench_tishby.py                 # the phases (about 20 s on a free core)
    python benchmarks/bench_tishby.py --e2e           # also the real CLI job, wall clock

``--e2e`` runs ``python -m infoflow experiment=tishby2017 runtime.device=cpu`` in a temp dir and
reports its wall time and the per-point ``train``/``estimate`` seconds summed from its log
(``estimate`` there includes the file writes). Threads: ``--threads`` (default 2).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from single import Trainer

from infoflow.estimators import binning
from infoflow.sweep.job import Job
from infoflow.training.data import load_tishby
from infoflow.training.models import MLP
from infoflow.training.probe import Probe, evaluate, measure
from infoflow.training.schedule import eval_points

HIDDEN = [10, 7, 5, 4, 4, 3]
STEPS = 10_000


def estimator(T, X, Y):
    return binning(T, X, Y, bins=30, range=(-1.0, 1.0))


def build(data) -> Trainer:
    torch.manual_seed(0)
    model = MLP(data.in_shape, data.n_classes, HIDDEN, "tanh", "truncated_normal")
    # fused, as conf/optimizer/adam.yaml
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4, fused=True)
    return Trainer(model, optimizer, data, batch_size=4096, seed=0)


def phases(steps: int, n_points: int) -> dict:
    """Wall seconds of each phase for one whole job (training scaled from ``steps`` steps),
    and under ``cpu`` this process's CPU seconds (less sensitive to other processes)."""
    data = load_tishby()
    trainer = build(data)
    trainer.train_to(20)  # warm-up: first-call allocations
    t0, c0 = time.perf_counter(), time.process_time()
    trainer.train_to(20 + steps)
    train = (time.perf_counter() - t0) * STEPS / steps
    cpu = {"train": (time.process_time() - c0) * STEPS / steps}

    names = list(Probe.of(trainer.model, None, data.x_eval[:1]).names)
    layers, rows = None, []
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(n_points):
        figures, layers = evaluate(trainer.model, data, 4096, out=layers, samples="all")
        rows.append([{"epoch": i, **r, **figures} for r in measure(layers, data, estimator, names,
                                                                   "all")])  # fmt: skip
    evaluation = time.perf_counter() - t0
    cpu["evaluate"] = time.process_time() - c0

    meta = {f"key{i}": 0.5 for i in range(40)}  # the job's ~40 config columns
    state = trainer.state_dict()
    with tempfile.TemporaryDirectory() as tmp:
        job = Job(tmp, config_hash="0" * 64, multirun=False)
        job.meta = meta
        job.begin([], 0, n_points)
        t_table = 0.0
        write_table = job.write_table

        def timed_table(new=None) -> None:  # the table's share of Job.record
            nonlocal t_table
            a = time.perf_counter()
            write_table(new)
            t_table += time.perf_counter() - a

        job.write_table = timed_table
        t0, c0 = time.perf_counter(), time.process_time()
        for i, new in enumerate(rows):
            job.record(new, i + 1, state)  # table, checkpoint (training state), status
        job.finish()  # the checkpoint takes every row once
        files = time.perf_counter() - t0
        cpu["files"] = time.process_time() - c0
    return {
        "cpu": cpu,
        "train": train,
        "evaluate": evaluation,
        "files": files,
        "files_table": t_table,
        "files_checkpoint_status": files - t_table,
    }


def end_to_end(threads: int) -> dict[str, float]:
    """Wall seconds of the real CLI job, and its log's summed train/estimate seconds."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "infoflow", "experiment=tishby2017", "runtime.device=cpu",
             f"runtime.threads={threads}", f"hydra.run.dir={tmp}/job"],
            cwd=tmp, capture_output=True, text=True, env=env,
        )  # fmt: skip
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(f"the job failed:\n{proc.stderr[-2000:]}")
        log = (Path(tmp) / "job" / "__main__.log").read_text()
    pairs = re.findall(r"\(train ([\d.]+)s, estimate ([\d.]+)s", log)
    return {
        "wall": wall,
        "log_train": sum(float(a) for a, _ in pairs),
        "log_estimate_and_files": sum(float(b) for _, b in pairs),
        "points": len(pairs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000, help="training steps timed (x10,000)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--e2e", action="store_true", help="also time the real CLI job")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n_points = len(eval_points("log:400", STEPS, 1))
    machine = platform.processor() or platform.machine()
    load = os.getloadavg()[0]
    print(f"{machine}, torch {torch.__version__}, {args.threads} threads, "
          f"{os.cpu_count()} CPUs, load {load:.1f}")  # fmt: skip
    t = phases(args.steps, n_points)
    total = t["train"] + t["evaluate"] + t["files"]
    cpu_total = sum(t["cpu"].values())
    print(f"one tishby2017 job, {STEPS} steps, {n_points} evaluations:")
    print(f"  {'phase':9s} {'wall s':>7s} {'share':>6s} {'CPU s':>7s} {'share':>6s}")
    for key in ("train", "evaluate", "files"):
        c = t["cpu"][key]
        print(f"  {key:9s} {t[key]:7.2f} {t[key] / total:6.1%} {c:7.2f} {c / cpu_total:6.1%}")
    print(f"  {'sum':9s} {total:7.2f} {'':6s} {cpu_total:7.2f}")
    print(f"  wall per step {t['train'] / STEPS * 1e3:.2f} ms, per "
          f"evaluation {t['evaluate'] / n_points * 1e3:.1f} ms + files "
          f"{t['files'] / n_points * 1e3:.1f} ms (table {t['files_table']:.2f} s, checkpoint + "
          f"status {t['files_checkpoint_status']:.2f} s)")  # fmt: skip
    if args.e2e:
        e = end_to_end(args.threads)
        rest = e["wall"] - e["log_train"] - e["log_estimate_and_files"]
        print(f"CLI job: {e['wall']:.1f} s wall; its log: train {e['log_train']:.1f} s, "
              f"estimate + files {e['log_estimate_and_files']:.1f} s over {e['points']} points; "
              f"start-up and the rest {rest:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
