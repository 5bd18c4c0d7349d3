"""Stacks on every core: a many-seed sweep against its one-seed sweep, at the default
``runtime.threads=auto`` (jobs one after the other on every core, in one process) and at
``runtime.threads=1`` (one worker process per core, ``hydra.launcher.n_workers`` at its default),
and the many-seed sweep as a batched stack (``hydra.launcher.stack=batched``).

Runs each command as a user would (a fresh ``python -m infoflow`` in a temp dir), side by side
in one run: the commands alternate, ``--reps`` rounds, the minimum wall time of each is kept,
so that the load of a shared machine cancels out as far as it can.

- ``digits``: the user's four nets, ``-m model=mlp1,mlp3,mlp5,cnn 'seed=range(10)'`` against
  ``seed=0`` (issue 25's target: at most 3x);
- ``tishby``: ``-m experiment=tishby2017 'seed=range(20)'`` against ``seed=0`` (``--epochs``
  shortens it; the default is the experiment's full 10,000).

Each sweep also reports the launch line's "in N worker processes", its evaluation lines and its
stacks' seconds (from the launch line to the summary line: set-up, training, evaluations,
writes). From those, the exact stack's floor: the many-seed sweep's ratio were everything but
its stacks as cheap as for one seed (each seed of an exact stack runs as it runs alone).

    python benchmarks/bench_workers.py --which digits
    python benchmarks/bench_workers.py --which tishby --epochs 2000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = re.compile(r"Launching \d+ jobs (in this process|in \d+ worker processes)")
STAMP = r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]\[HYDRA\] "
STARTED = re.compile(STAMP + "Launching")
ENDED = re.compile(STAMP + r"sweep .*: \d+ jobs \(")


def sweeps(which: str, args: argparse.Namespace) -> tuple[list[str], list[str], int]:
    """(one-seed sweep, many-seed sweep, seeds) of a benchmark."""
    common = ["runtime.device=cpu"]
    if which == "tishby":
        base = ["-m", "experiment=tishby2017", *common]
        if args.epochs:
            base.append(f"trainer.epochs={args.epochs}")
        return [*base, "seed=0"], [*base, f"seed=range({args.seeds})"], args.seeds
    base = ["-m", "model=mlp1,mlp3,mlp5,cnn", *common]
    return [*base, "seed=0"], [*base, f"seed=range({args.digits_seeds})"], args.digits_seeds


def run(cmd: list[str]) -> dict[str, object]:
    """Wall seconds of ``python -m infoflow CMD`` in a temp dir, and how it launched."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-m", "infoflow", *cmd, f"hydra.sweep.dir={tmp}/sweep"],
            cwd=tmp, capture_output=True, text=True, env=env,
        )  # fmt: skip
        wall = time.perf_counter() - t0
    log = out.stdout + out.stderr
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{log[-3000:]}")
    launch = LAUNCH.search(log)
    return {"wall": wall, "how": launch.group(1) if launch else "?",
            "evaluations": log.count(" eval "), "stacks": stacks_seconds(log)}  # fmt: skip


def stacks_seconds(log: str) -> float:
    """Seconds from the launch line to the sweep's summary line: the stacks' set-up, training,
    evaluations and writes, without the imports, the composing and the plan before them."""
    started, ended = STARTED.search(log), ENDED.search(log)
    if not (started and ended):
        return float("nan")
    stamp = "%Y-%m-%d %H:%M:%S,%f"
    t0, t1 = (datetime.strptime(m.group(1), stamp) for m in (started, ended))
    return (t1 - t0).total_seconds()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--which", nargs="+", default=["digits"], choices=["digits", "tishby"])
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--epochs", type=int, default=None, help="tishby: trainer.epochs (10,000)")
    p.add_argument("--seeds", type=int, default=20, help="tishby: seeds")
    p.add_argument("--digits-seeds", type=int, default=10)
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args()
    print(f"{platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; "
          f"wall seconds, minimum of {args.reps} round(s)")  # fmt: skip
    results = {}
    for which in args.which:
        one, many, seeds = sweeps(which, args)
        runs = {  # threads=1: one worker per core; the default (threads=auto): one process
            "1 seed, threads=1": [*one, "runtime.threads=1"],
            "1 seed, default": one,
            f"{seeds} seeds, threads=1": [*many, "runtime.threads=1"],
            f"{seeds} seeds, default": many,
            f"{seeds} seeds, batched": [*many, "hydra.launcher.stack=batched"],
        }
        best: dict[str, dict] = {}
        for _ in range(args.reps):
            for name, cmd in runs.items():
                got = run(cmd)
                if name not in best or got["wall"] < best[name]["wall"]:
                    best[name] = got
        print(f"{which}: python -m infoflow {' '.join(many)}")
        for name, got in best.items():
            print(f"  {name:24s} {got['wall']:8.1f} s   ({got['how']}, {got['evaluations']} "
                  f"evaluation lines; stacks {got['stacks']:.1f} s)")  # fmt: skip
        for how in ("threads=1", "default"):
            ratio = best[f"{seeds} seeds, {how}"]["wall"] / best[f"1 seed, {how}"]["wall"]
            print(f"  {seeds} seeds / 1 seed, {how}: {ratio:.2f}x")
        for how in ("threads=1", "batched"):
            ratio = best[f"{seeds} seeds, {how}"]["wall"] / best["1 seed, default"]["wall"]
            print(f"  {seeds} seeds at {how} / 1 seed at the default: {ratio:.2f}x")
        # the exact stack's floor: were everything but the stacks (imports, composing, plan,
        # merge) as cheap for many seeds as for one, the sweep would still take this long
        one, many = best["1 seed, default"], best[f"{seeds} seeds, default"]
        floor = (one["wall"] + many["stacks"] - one["stacks"]) / one["wall"]
        print(
            f"  {seeds} seeds / 1 seed, default, if only the stacks grew: {floor:.2f}x "
            f"(stacks {many['stacks']:.1f} s against {one['stacks']:.1f} s)"
        )
        results[which] = {name: dict(got) for name, got in best.items()}
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
