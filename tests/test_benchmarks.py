"""The speed benchmark a user runs (issue 5) works end to end, on a small slice of the data."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from infoflow.training.data import DEBIAN_FASHION_MNIST

ROOT = Path(__file__).resolve().parents[1]


def run_benchmark(script: str, args: list[str], cwd: Path, timeout: float):
    """Run ``benchmarks/<script>`` with ``args`` as a user does; return the finished process."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
@pytest.mark.skipif(
    not os.path.isdir(DEBIAN_FASHION_MNIST), reason="apt-get install dataset-fashion-mnist"
)
def test_bench_sweep_prints_the_reference_the_sweep_and_the_epoch_check(tmp_path):
    args = ["--models", "mlp1", "--bins", "10,30", "--epochs", "1", "--subset", "2000"]
    args += ["--eval-subset", "500", "--reps", "1"]
    proc = run_benchmark("bench_sweep.py", args, tmp_path, timeout=600)
    out = proc.stdout
    rows = table(out)
    stages = [stage for stage, _, _ in rows]

    def row(stage: str) -> tuple[float, float | None]:
        assert stages.count(stage) == 1, f"{stages.count(stage)} rows {stage!r} in:\n{out}"
        _, secs, ratio = rows[stages.index(stage)]
        return secs, ratio

    # the reference ran as one process per bin count, timed end to end; its total is its parts
    assert out.count("as a process, end to end") == 2
    start, _ = row("notebook way: process start, imports, data sets")
    train, _ = row("notebook way: train (DataLoader, retrain per bins)")
    estimate, _ = row("notebook way: estimate after epochs 1..E")
    total, one = row("notebook way: total, the notebook's schedule")
    estimate0, _ = row("notebook way: + estimate at epoch 0 (as in infoflow)")
    same_rows, _ = row("notebook way: total, the same rows as infoflow")
    assert start > 0 and one == 1.0
    assert total == pytest.approx(train + estimate + start, abs=0.02)
    assert same_rows == pytest.approx(total + estimate0, abs=0.02)
    # infoflow's runs interleaved with the reference's processes: each run's ratio is the
    # reference's total over its wall time, which holds its logged train and estimate time
    whens = ["before the reference", "after bins=10", "after bins=30"]
    walls = []
    for i, when in enumerate(whens):
        at = stages.index(f"infoflow sweep (cache on), run {i + 1} ({when}): wall")
        (_, wall, ratio), (name_t, train_s, _), (name_e, estimate_s, _) = rows[at : at + 3]
        assert name_t.strip() == "of which train / cache load (logged)"
        assert name_e.strip() == "of which evaluate + estimate (logged)"
        assert 0 < train_s + estimate_s <= wall + 0.01
        assert_ratio(ratio, total, wall)
        walls.append(wall)
    mean, ratio = row("infoflow sweep, mean of 3 run(s)")
    assert mean == pytest.approx(sum(walls) / 3, abs=0.01)
    assert_ratio(ratio, total, mean)
    speed_up = re.search(r"mean run: ([\d.]+)x against the notebook's schedule, ([\d.]+)x", out)
    assert speed_up, out
    assert float(speed_up.group(1)) == pytest.approx(ratio, abs=0.011)
    assert_ratio(float(speed_up.group(2)), same_rows, mean)
    # the epoch check: ratios to the bare loop, and shares of the infoflow loop
    bare, one = row("mlp1 epoch: bare fwd/bwd/step loop")
    loop, ratio = row("mlp1 epoch: infoflow training loop")
    assert bare > 0 and one == 1.0
    assert_ratio(ratio, loop, bare)
    for stage in ("mlp1 eval pass with probes / loop", "mlp1 estimate (binning 30) / loop"):
        secs, share = row(stage)
        assert_ratio(share, secs, loop)
    assert "machine: " in out and "machine state at end" in out


def table(out: str) -> list[tuple[str, float, float | None]]:
    """The (stage, seconds, ratio) rows of the benchmark's table, in order."""
    lines = out[out.index("\nstage ") + 1 :].splitlines()[1:]
    rows = []
    for line in lines:
        match = re.fullmatch(r"(.+?)\s+(\d+\.\d\d)(?:\s+(\d+\.\d\d))?\s*", line)
        if not match:
            break
        stage, secs, ratio = match.groups()
        rows.append((stage, float(secs), None if ratio is None else float(ratio)))
    return rows


def assert_ratio(ratio: float | None, num: float, den: float) -> None:
    """``ratio`` is ``num / den`` as far as the three printed figures' last digits allow."""
    assert ratio is not None and den > 0
    half = 0.005  # every figure is printed with 2 decimals
    low = (num - half) / (den + half) - half
    high = (num + half) / (den - half) + half if den > half else math.inf
    assert low <= ratio <= high, f"{ratio} is not {num} / {den}"


@pytest.mark.slow
def test_bench_stack_times_one_seed_and_many_side_by_side(tmp_path):
    args = ["--epochs", "20", "--evals", "4", "--seeds", "3", "--digits-seeds", "2"]
    args += ["--digits-epochs", "1", "--json", str(tmp_path / "stack.json")]
    proc = run_benchmark("bench_stack.py", args, tmp_path, timeout=900)
    got = json.loads((tmp_path / "stack.json").read_text())
    for which, seeds in (("tishby", 3), ("digits", 2)):
        one, many = got[which]["one"], got[which]["many"]
        assert got[which]["ratio"] == pytest.approx(many["wall"] / one["wall"])
        assert many["evaluations"] == seeds * one["evaluations"]  # every seed evaluated
        assert one["evaluations"] > 0 and got[which]["seeds"] == seeds
        assert f"ratio {seeds} seeds / 1 seed" in proc.stdout


def test_bench_stack_floor_times_the_four_cases_and_their_ratios(tmp_path):
    args = ["--seeds", "3", "--steps", "4", "--reps", "1", "--threads", "1"]
    proc = run_benchmark("bench_stack_floor.py", args, tmp_path, timeout=300)
    rows = {}
    for line in proc.stdout.splitlines():
        if m := re.match(r"(job, 1 seed|job, 3 seeds|batched, 3 seeds|matmuls only, 3 seeds)"
                         r"\s+([\d.]+)\s+([\d.]+)x$", line):  # fmt: skip
            rows[m[1]] = (float(m[2]), float(m[3]))
    assert len(rows) == 4, proc.stdout
    one = rows["job, 1 seed"][0]
    assert rows["job, 1 seed"][1] == 1.0 and one > 0
    for ms, ratio in rows.values():  # each ratio is its time over one seed's step
        assert ms > 0 and ratio == pytest.approx(ms / one, abs=0.01, rel=0.01)


@pytest.mark.slow
def test_bench_malloc_runs_the_cli_both_ways_and_finds_the_same_tables(tmp_path):
    args = ["--data", "digits", "--epochs", "1", "--reps", "1"]
    proc = run_benchmark("bench_malloc.py", args, tmp_path, timeout=300)
    out = proc.stdout
    assert "single on digits, 1 epochs" in out and "tables equal" in out  # asserted, not said
    runs = re.findall(r"'run': '([^']+)'.*'minflt': (\d+)", out)
    assert [r for r, _ in runs] == ["glibc defaults", "kept (infoflow)"]
    assert all(int(n) > 0 for _, n in runs)
    assert re.search(r"kept against defaults: wall [\d.]+x, training [\d.]+x", out)


def test_estimator_study_checks_and_draws_a_small_sweep(tmp_path):
    """The study script of docs/estimators.md on a tiny digits sweep: its check table counts
    every row and seed, and its figure has one row of panels per estimator."""
    from tests.conftest import run_cli

    sweep = tmp_path / "sweep"
    proc = run_cli(
        "-m",
        "model=mlp1,mlp3",
        "seed=0,1",
        "estimator=renyi,sliced",
        "trainer.epochs=2",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    fig = tmp_path / "study.png"
    out = run_benchmark("estimator_study.py", [str(sweep), "--figure", str(fig)], tmp_path, 300)
    lines = [line for line in out.stdout.splitlines() if line.startswith("| ")]
    checks = {line.split(" | ")[0][2:]: line.split(" | ") for line in lines[:3]}
    assert set(checks) == {"estimator", "renyi", "sliced"}
    for est in ("renyi", "sliced"):
        cells = checks[est]
        # 2 seeds x 3 evaluations x the nets' 1 + 3 layers
        assert cells[1] == str(2 * 3 * (1 + 3))
        assert cells[2] == "mlp1 2, mlp3 2"
        assert cells[4] == "0.0%"  # nothing saturated at the defaults
        assert re.fullmatch(r"[0-4] of 4(; least span/std [\d.]+)?", cells[5])  # 4 trajectories
    # the trajectory table: one line per (estimator, net, layer)
    assert sum(line.startswith(("| renyi | ", "| sliced | ")) for line in lines) == 2 + 2 * 4
    from PIL import Image

    with Image.open(fig) as image:
        width, height = image.size
    assert width > height > 0  # two estimator rows of four net columns
