"""The batched stack against the exact one and one seed, end to end, and how far its numbers are
from the seeds alone against the spread of the seeds.

Runs, as a user would (a fresh ``python -m infoflow`` in a temp dir), side by side in one run
(the commands alternate ``--reps`` times and the fastest of each is kept, so that the load of a
shared machine cancels as far as it can), and reports wall and CPU seconds (user + system of
the run: for a one-thread run on a loaded machine, about its wall time on an idle core):

- ``one``: ``-m experiment=tishby2017 seed=0``;
- ``batched``: ``-m experiment=tishby2017 seed=range(20) hydra.launcher.stack=batched``;
- ``exact``: the same with ``hydra.launcher.stack=exact`` (the default);
- with ``--batched-threads 2``: also ``batched`` with ``runtime.threads=2`` (the experiment
  sets 1: one seed's steps are too small to split, 20 seeds' are not).

The experiment's full length (10,000 epochs, 280 evaluations) by default; ``--epochs`` and
``--evals`` shorten it (``trainer.epochs``, ``trainer.eval=log:N``). Then, from the tables of the
last round: the largest difference per seed, step and layer between the batched stack and the
exact one (every seed of which is bit for bit the seed alone: also checked here for seed 0)
in I(X;T), I(T;Y) (bits) and train_loss, set against the spread of the seeds (the standard
deviation across seeds of the exact tables, per step and layer): its median over the rows and
at the last step.

``--eval-pass`` measures instead, in this process, the evaluation of an exact stack of 20
Tishby nets: each seed's probe pass (``infoflow.training.probe.evaluate``, as a job runs it)
against one pass of every seed's layers as ``baddbmm`` over a seed axis, whether its layers and
figures are bit for bit each seed's, and the estimator's time per seed (binning, 30 bins).

    python benchmarks/bench_batched.py --json batched.json
    python benchmarks/bench_batched.py --eval-pass
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

COLUMNS = ("I_XT", "I_TY", "train_loss")
KEY = ["seed", "step", "layer"]


def commands(args: argparse.Namespace) -> dict[str, list[str]]:
    """Each case's overrides after ``python -m infoflow``."""
    base = ["-m", "experiment=tishby2017", "runtime.device=cpu"]
    if args.epochs is not None:
        base.append(f"trainer.epochs={args.epochs}")
    if args.evals is not None:
        base.append(f"trainer.eval=log:{args.evals}")
    many = [*base, f"seed=range({args.seeds})"]
    cases = {
        "one": [*base, "seed=0"],
        "batched": [*many, "hydra.launcher.stack=batched"],
        "exact": [*many, "hydra.launcher.stack=exact"],
    }
    if args.batched_threads:
        cases[f"batched, {args.batched_threads} threads"] = [
            *cases["batched"],
            f"runtime.threads={args.batched_threads}",
        ]
    return cases


def cpu_s() -> float:
    """CPU seconds (user + system) of this process's finished children."""
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


def run(cmd: list[str], sweep: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one sweep into ``sweep``. On a loaded machine a
    one-thread run's CPU seconds are about its wall time on an idle core."""
    t0, c0 = time.perf_counter(), cpu_s()
    out = subprocess.run(
        [sys.executable, "-m", "infoflow", *cmd, f"hydra.sweep.dir={sweep}"],
        cwd=sweep.parent, capture_output=True, text=True, env=dict(os.environ),
    )  # fmt: skip
    wall, cpu = time.perf_counter() - t0, cpu_s() - c0
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{(out.stdout + out.stderr)[-3000:]}")
    return wall, cpu


def table(sweep: Path) -> pd.DataFrame:
    df = pd.read_parquet(sweep / "results.parquet")
    return df.sort_values(KEY).set_index(KEY)


def differences(one: pd.DataFrame, batched: pd.DataFrame, exact: pd.DataFrame) -> dict:
    """Largest |batched - exact| per column, against the seeds' spread; seed 0 alone vs exact."""
    figures: dict = {}
    last = exact.index.get_level_values("step").max()
    for col in COLUMNS:
        diff = (batched[col] - exact[col]).abs()  # per seed, step, layer
        spread = exact[col].groupby(level=["step", "layer"]).std()  # across seeds
        at_last = diff.xs(last, level="step")
        figures[col] = {
            "max_diff": float(diff.max()),
            "max_diff_last_step": float(at_last.max()),
            "seed_std_median": float(spread.median()),
            "seed_std_last_step_median": float(spread.xs(last, level="step").median()),
        }
    alone = one[list(COLUMNS)]
    figures["seed0_alone_vs_exact_stack_max_diff"] = float(
        (alone - exact.loc[alone.index, list(COLUMNS)]).abs().max().max()
    )
    return figures


def stacked_pass(models: list, x: torch.Tensor, y: torch.Tensor, n_eval: int) -> list:
    """Every seed's (figures, layers) of one pass of the MLPs' layers over a seed axis: each
    layer ``baddbmm(b, h, W.T)``, the op ``nn.Linear`` runs per seed (``addmm(b, x, W.T)``)."""
    depth = len(models[0].blocks())
    with torch.no_grad():
        h = x.flatten(1).expand(len(models), *x.flatten(1).shape)  # (S, n, features)
        layers = []
        for j in range(depth + 1):
            lin = [m.blocks()[j].linear if j < depth else m.out for m in models]
            W = torch.stack([li.weight for li in lin])  # (S, o, i)
            b = torch.stack([li.bias for li in lin])  # (S, o)
            h = torch.baddbmm(b.unsqueeze(1), h, W.transpose(1, 2))  # (S, n, o)
            if j < depth:
                h = torch.tanh(h)
                layers.append(h)
        out = []
        for k in range(len(models)):
            logits = h[k, :n_eval]  # (n_eval, classes): the evaluation split's rows
            loss = 0.0 + F.cross_entropy(logits, y[:n_eval], reduction="sum")
            acc = (logits.argmax(1) == y[:n_eval]).sum()
            figures = {"eval_loss": float(loss) / n_eval, "eval_acc": float(acc) / n_eval}
            out.append((figures, [t[k] for t in layers]))
    return out


def eval_pass(seeds: int) -> None:
    """Per-seed probe passes against one stacked pass, and the estimator, per seed and point."""
    from functools import partial

    from infoflow.estimators import binning
    from infoflow.training.data import load_tishby
    from infoflow.training.models import MLP
    from infoflow.training.probe import Probe, evaluate, measure

    torch.set_num_threads(1)
    data = load_tishby()
    models = []
    for s in range(seeds):
        torch.manual_seed(s)
        models.append(
            MLP(data.in_shape, data.n_classes, [10, 7, 5, 4, 4, 3], "tanh", "truncated_normal")
        )
    probes = [Probe.of(m, ["fc*"], data.x_eval[:1]) for m in models]
    x, y = data.probe_set("all")
    est = partial(binning, bins=30, range=[-1, 1])
    names = list(probes[0].names)
    per_seed = [evaluate(m, data, 4096, False, None, "all", p) for m, p in zip(models, probes)]
    stacked = stacked_pass(models, x, y, len(data.y_eval))
    same = all(
        a[0] == b[0] and all(torch.equal(u, v) for u, v in zip(a[1], b[1]))
        for a, b in zip(per_seed, stacked)
    )

    def timed(f, reps=20):
        f()
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(reps):
                f()
            best = min(best, (time.perf_counter() - t0) / reps)
        return 1e3 * best

    t_each = timed(
        lambda: [evaluate(m, data, 4096, False, None, "all", p) for m, p in zip(models, probes)]
    )
    t_stacked = timed(lambda: stacked_pass(models, x, y, len(data.y_eval)))
    t_est = timed(lambda: [measure(layers, data, est, names, "all") for _, layers in per_seed], 5)
    print(f"{seeds} Tishby nets, 4,096 samples, one thread; ms per evaluation point, all seeds:")
    print(f"  probe pass per seed (evaluate)   {t_each:8.2f}")
    print(f"  one stacked pass (baddbmm)       {t_stacked:8.2f}   bit for bit each seed's: {same}")
    print(f"  the estimator per seed (binning) {t_est:8.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--epochs", type=int, default=None, help="trainer.epochs (default: 10,000)")
    p.add_argument("--evals", type=int, default=None, help="trainer.eval=log:N (default: 400)")
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--batched-threads", type=int, default=0, help="also batched on N threads")
    p.add_argument("--json", type=Path, help="write the figures here")
    p.add_argument("--eval-pass", action="store_true", help="measure the evaluation pass only")
    args = p.parse_args()
    if args.eval_pass:
        eval_pass(args.seeds)
        return
    cases = commands(args)
    best: dict[str, float] = {}
    cpu: dict[str, float] = {}
    work = Path(tempfile.mkdtemp(prefix="bench_batched_"))
    try:
        for rep in range(args.reps):
            for name, cmd in cases.items():
                sweep = work / name.replace(", ", "_").replace(" ", "_")
                shutil.rmtree(sweep, ignore_errors=True)
                sweep.parent.mkdir(parents=True, exist_ok=True)
                wall, used = run(cmd, sweep)
                best[name] = min(best.get(name, wall), wall)
                cpu[name] = min(cpu.get(name, used), used)
                print(f"round {rep + 1}: {name:<20} {wall:8.1f} s, CPU {used:8.1f} s", flush=True)
        tables = {n: table(work / n) for n in ("one", "batched", "exact")}
        figures = differences(tables["one"], tables["batched"], tables["exact"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"{platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; "
        f"fastest of {args.reps} round(s)"
    )
    for name, cmd in cases.items():
        print(
            f"  {name:<20} wall {best[name]:8.1f} s {best[name] / best['one']:6.2f}x one seed; "
            f"CPU {cpu[name]:8.1f} s {cpu[name] / cpu['one']:6.2f}x"
        )
        print(f"      python -m infoflow {' '.join(cmd)}")
    print("largest |batched - exact| per seed, step and layer, against the seeds' std:")
    for col in COLUMNS:
        f = figures[col]
        print(
            f"  {col:<10} max {f['max_diff']:.3g} (last step {f['max_diff_last_step']:.3g}); "
            f"seed std median {f['seed_std_median']:.3g} "
            f"(last step {f['seed_std_last_step_median']:.3g})"
        )
    print(f"  seed 0 alone vs in the exact stack: {figures['seed0_alone_vs_exact_stack_max_diff']}")
    if args.json:
        results = {"walls": best, "cpu": cpu, "commands": cases, "differences": figures}
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
