"""Wall time of the report of a sweep, as a user pays it: ``python -m infoflow.report SWEEP``.

Every repetition is a fresh process (interpreter start and imports included) writing into a new
temp folder; the best and the median of ``--reps`` are printed, with the CPU time (user +
system), which a busy machine inflates far less than the wall time. ``--against DIR``
(repeatable) times another checkout's report (a ``git worktree`` of an earlier commit, or a
copy of its ``infoflow`` package: ``DIR`` goes first on ``PYTHONPATH``) on the same sweep,
interleaved with this one's so that all see the same load on a shared machine, side by side.
``--profile`` adds a cProfile of one in-process report of this checkout (the slowest
functions, cumulative).

    python -m infoflow -m model=mlp1,mlp3,mlp5,cnn estimator.bins=10,30 hydra.sweep.dir=/tmp/sw
    python benchmarks/bench_report.py /tmp/sw --reps 5
    python benchmarks/bench_report.py /tmp/sw --reps 5 --against /tmp/old-checkout

``--verdicts N`` times the report's verdict part alone, in this process: the compression
verdicts (:func:`infoflow.compression`) of a synthetic sweep of N seeds x 5 layers x 101
evaluations x 3 estimator settings (:func:`synthetic_sweep`, the schema of a real table), their
side-by-side table and sentences, the HTML and ``verdicts.csv``:

    python benchmarks/bench_report.py --verdicts 50 --reps 5
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def cpu_of_children() -> float:
    """User + system CPU seconds of this process' finished children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def report_once(sweep: Path, code: Path, extra: list[str]) -> tuple[float, float, int]:
    """Wall and CPU seconds of one ``python -m infoflow.report`` run from ``code``, and the
    number of PNGs it wrote. On a busy machine the wall time grows, the CPU time hardly."""
    env = {**os.environ, "PYTHONPATH": str(code), "MPLBACKEND": "Agg"}
    with tempfile.TemporaryDirectory(prefix="bench_report_") as out:
        cmd = [sys.executable, "-m", "infoflow.report", str(sweep), "--out", out, *extra]
        cpu0, t0 = cpu_of_children(), time.perf_counter()
        # run from the output folder: ``-m`` puts the working directory first on sys.path,
        # before PYTHONPATH, and a checkout as working directory would win over ``code``
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=out)
        wall, cpu = time.perf_counter() - t0, cpu_of_children() - cpu0
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} (PYTHONPATH={code}) failed:\n{proc.stderr[-3000:]}")
        return wall, cpu, len(list(Path(out).glob("*.png")))


def profile(sweep: Path, extra: list[str], top: int = 25) -> None:
    """cProfile of one report of this checkout, in this process."""
    import cProfile
    import pstats

    sys.path.insert(0, str(HERE))
    from infoflow.report.page import main

    with tempfile.TemporaryDirectory(prefix="bench_report_") as out:
        prof = cProfile.Profile()
        prof.enable()
        main([str(sweep), "--out", out, *extra])
        prof.disable()
    pstats.Stats(prof).sort_stats("cumulative").print_stats(top)


def synthetic_sweep(
    n_seeds: int = 50,
    layers: int = 5,
    epochs: int = 100,
    settings: tuple[str, ...] = ("exact", "binning_30", "kde_nn"),
    noise: float = 0.1,
    seed: int = 0,
):
    """A loaded table as :func:`infoflow.load` returns it: ``ib_net`` on ``tishby``, one run per
    seed and estimator setting, evaluated at epochs 0..``epochs``. I(X;T) (bits) rises to a
    peak at 30% of training, then layer ``l`` falls by ``l / layers`` x 2 bits under ``exact``
    and ``binning_30`` and stays flat under the others, plus ``noise`` bits of seed noise per
    evaluation; I(T;Y) rises."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    e = np.arange(epochs + 1, dtype=float)
    peak = 0.3 * epochs
    frames = []
    for setting in settings:
        falls = setting in ("exact", "binning_30")
        for layer in range(1, layers + 1):
            fall = 2.0 * layer / layers if falls else 0.0
            curve = np.where(e <= peak, 6 + 4 * e / peak, 10 - fall * (e - peak) / (epochs - peak))
            xt = curve + noise * rng.standard_normal((n_seeds, len(e)))  # (seeds, epochs)
            seeds = np.repeat(np.arange(n_seeds), len(e))
            frames.append(pd.DataFrame({
                "run_id": [f"{setting}-s{s}" for s in seeds], "model": "ib_net",
                "data": "tishby", "optimizer": "adam", "estimator": setting, "seed": seeds,
                "device": "cpu", "trainer.epochs": epochs, "model.hidden": "[10, 7, 5, 4, 3]",
                "model.activation": "tanh",
                "estimator.bins": 30.0 if setting == "binning_30" else np.nan,
                "epoch": np.tile(e, n_seeds), "layer": layer, "layer_name": f"fc{layer}",
                "units": 10, "I_XT": xt.ravel(), "I_TY": np.tile(0.2 + 0.7 * e / epochs, n_seeds),
                "H_Y": 0.999, "n_samples": 4096, "train_acc": 0.9, "eval_acc": 0.85,
                "status": "completed",
            }))  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def time_verdicts(n_seeds: int, reps: int) -> None:
    """Print the time of the report's verdict part on :func:`synthetic_sweep` of ``n_seeds``."""
    sys.path.insert(0, str(HERE))
    from infoflow.report.page import verdict_section

    df = synthetic_sweep(n_seeds)
    verdict_section(df.head(1000))  # imports (scipy's special functions) out of the timing
    walls, cpus = [], []
    with tempfile.TemporaryDirectory(prefix="bench_verdicts_") as out:
        for _ in range(max(1, reps)):
            cpu0, t0 = time.process_time(), time.perf_counter()
            section = verdict_section(df)
            section.table.to_csv(Path(out) / "verdicts.csv", index=False)
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - cpu0)
    layers, settings = df["layer"].nunique(), df["estimator"].nunique()
    print(
        f"verdicts of {n_seeds} seeds x {layers} layers x {df['epoch'].nunique()} evaluations x "
        f"{settings} estimator settings ({len(df):,} rows; compression(), table, HTML, CSV)"
    )
    print(
        f"  best of {len(walls)}  {min(walls):6.3f} s  (median {statistics.median(walls):.3f} s, "
        f"CPU {min(cpus):.3f} s, {len(section.table)} verdicts)"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "sweep", type=Path, nargs="?", help="a sweep (or job) directory, as for the report"
    )
    p.add_argument(
        "--verdicts", type=int, metavar="N", help="time the verdict part on N synthetic seeds"
    )
    p.add_argument("--reps", type=int, default=5, help="repetitions per checkout (best of N)")
    p.add_argument(
        "--against", type=Path, action="append", default=[], help="another checkout (repeatable)"
    )
    p.add_argument("--dpi", type=int, default=None, help="passed to the report")
    p.add_argument("--profile", action="store_true", help="also profile one report")
    args = p.parse_args()
    if args.verdicts is not None:
        time_verdicts(args.verdicts, args.reps)
        if args.sweep is None:
            return
    if args.sweep is None:
        p.error("give a sweep directory, or --verdicts N")
    extra = [] if args.dpi is None else ["--dpi", str(args.dpi)]
    codes = {"this checkout": HERE}
    for other in args.against:
        codes[str(other)] = other.resolve()
    times: dict[str, list[float]] = {name: [] for name in codes}
    cpus: dict[str, list[float]] = {name: [] for name in codes}
    figures = {}
    for _ in range(max(1, args.reps)):
        for name, code in codes.items():  # interleaved: the same machine load for both
            wall, cpu, figures[name] = report_once(args.sweep, code, extra)
            times[name].append(wall)
            cpus[name].append(cpu)
    print(f"python -m infoflow.report {args.sweep} {' '.join(extra)}".rstrip())
    print(f"best of {args.reps}, a fresh process each (start, imports, load, figures, page)")
    mine = min(times["this checkout"])
    for name, ts in times.items():
        ratio = "" if name == "this checkout" else f"   {min(ts) / mine:.2f}x this checkout's"
        print(
            f"  {name:<32} {min(ts):6.2f} s  (median {statistics.median(ts):.2f} s, "
            f"CPU {min(cpus[name]):.2f} s, {figures[name]} figures){ratio}"
        )
    if args.profile:
        profile(args.sweep, extra)


if __name__ == "__main__":
    main()
