"""What a sweep's writes cost: ``runtime.flush_s=0`` (table, checkpoint and status at every
evaluation, as before issue 25) against the default (at most every ``flush_s`` seconds).

Two measurements, side by side in one run (the cases alternate, ``--reps`` rounds, the minimum
of each kept, so that the load of a shared machine cancels out as far as it can):

- ``records``: in this process, what ``Job.record`` costs per evaluation and seed for the jobs
  of a ``--seeds`` stack of ``experiment=tishby2017`` (281 evaluations of six layers, a row of
  the job's ~40 config columns each, the training state of the [10,7,5,4,4,3] tanh net with
  its Adam state), with every evaluation flushed (``flush_s=0``) and with none due (what a
  record costs between two flushes: the rows kept and the state copied);
- ``sweep``: the real command, ``python -m infoflow -m experiment=tishby2017
  'seed=range(S)'`` in a temp dir, with ``runtime.flush_s=0`` and with the default, wall clock
  (``--epochs`` shortens it; the default is the experiment's full 10,000), in one process
  (``hydra.launcher.n_workers=1``) so that the writes are all that differs.

    python benchmarks/bench_flush.py                      # both, full length (about 4 minutes)
    python benchmarks/bench_flush.py --which records      # the in-process part alone (seconds)
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from infoflow.sweep.job import Job
from infoflow.training.data import load_tishby
from infoflow.training.models import MLP
from infoflow.training.schedule import eval_points
from infoflow.training.trainer import StackTrainer

HIDDEN = [10, 7, 5, 4, 4, 3]
ROOT = Path(__file__).resolve().parents[1]


def record_cost(seeds: int, flush_s: float) -> float:
    """Seconds per evaluation and seed that ``Job.record`` (and ``finish``) take for ``seeds``
    jobs of 281 evaluations each."""
    data = load_tishby()
    torch.manual_seed(0)
    model = MLP(data.in_shape, data.n_classes, HIDDEN, "tanh", "truncated_normal")
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    trainer = StackTrainer([model], opt, data, 4096, [0])
    trainer.advance(2)  # an Adam state to save
    state = trainer.state_dict(0)
    n_points = len(eval_points("log:400", 10_000, 1))
    meta = {f"key{i}": 0.5 for i in range(40)}  # the job's ~40 config columns
    layer = {"I_XT": 1.0, "I_TY": 0.5, "H_T": 1.0, "n_samples": 4096, "train_loss": 0.5,
             "train_acc": 0.9, "eval_loss": 0.5, "eval_acc": 0.9}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [Job(Path(tmp) / str(s), "0" * 64, True, flush_s=flush_s) for s in range(seeds)]
        for job in jobs:
            job.meta = {**meta, "run_id": job.run_id}
            job.begin([], 0, n_points)
        t0 = time.perf_counter()
        for i in range(n_points):
            for job in jobs:  # as a stack records: every seed at each point
                rows = [{"epoch": i, "step": i, "layer": k + 1, **layer} for k in range(6)]
                job.record(rows, i + 1, state)
        for job in jobs:
            job.finish()
        return (time.perf_counter() - t0) / (n_points * seeds)


def sweep_wall(seeds: int, epochs: int | None, flush: list[str]) -> float:
    """Wall seconds of the real sweep command in a temp dir."""
    cmd = [sys.executable, "-m", "infoflow", "-m", "experiment=tishby2017",
           f"seed=range({seeds})", "runtime.device=cpu", "hydra.launcher.n_workers=1",
           *flush]  # fmt: skip
    if epochs:
        cmd.append(f"trainer.epochs={epochs}")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        proc = subprocess.run([*cmd, f"hydra.sweep.dir={tmp}/sweep"], cwd=tmp, env=env,
                              capture_output=True, text=True)  # fmt: skip
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--which", nargs="+", default=["records", "sweep"],
                   choices=["records", "sweep"])  # fmt: skip
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--epochs", type=int, default=None, help="sweep: trainer.epochs (10,000)")
    p.add_argument("--flush-s", type=float, default=None, help="the default case's flush_s")
    p.add_argument("--reps", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(1)
    default = [] if args.flush_s is None else [f"runtime.flush_s={args.flush_s}"]
    cases = {"flush_s=0": ["runtime.flush_s=0"], "default": default}
    print(f"{platform.machine()}, torch {torch.__version__}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}; minimum of {args.reps} round(s)")  # fmt: skip
    if "records" in args.which:
        best: dict[str, float] = {}
        for _ in range(args.reps):
            for name, flush in (("flush_s=0", 0.0), ("none due", 1e9)):
                t = record_cost(args.seeds, flush)
                best[name] = min(best.get(name, t), t)
        print(f"Job.record per evaluation and seed, {args.seeds} jobs x 281 evaluations:")
        for name, t in best.items():
            print(f"  {name:10s} {t * 1e3:7.2f} ms")
    if "sweep" in args.which:
        walls: dict[str, float] = {}
        for _ in range(args.reps):
            for name, flush in cases.items():
                t = sweep_wall(args.seeds, args.epochs, flush)
                walls[name] = min(walls.get(name, t), t)
        length = f"trainer.epochs={args.epochs}" if args.epochs else "full length"
        print(f"-m experiment=tishby2017 'seed=range({args.seeds})', {length}, wall:")
        for name, t in walls.items():
            print(f"  {name:10s} {t:7.1f} s")
        print(f"  default / flush_s=0: {walls['default'] / walls['flush_s=0']:.2f}")


if __name__ == "__main__":
    main()
