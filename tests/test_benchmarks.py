"""The speed benchmark a user runs (issue 5) works end to end, on a small slice of the data."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from infoflow.data import DEBIAN_FASHION_MNIST

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(
    not os.path.isdir(DEBIAN_FASHION_MNIST), reason="apt-get install dataset-fashion-mnist"
)
def test_bench_sweep_prints_the_reference_the_sweep_and_the_epoch_check(tmp_path):
    args = ["--models", "mlp1", "--bins", "10,30", "--epochs", "1", "--subset", "2000"]
    args += ["--eval-subset", "500", "--reps", "1"]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_sweep.py"), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout

    def seconds(stage: str) -> float:
        match = re.search(rf"^{re.escape(stage)}\s+([\d.]+)", out, re.M)
        assert match, f"no row {stage!r} in:\n{out}"
        return float(match.group(1))

    # the reference ran as one process per bin count, timed end to end
    assert out.count("as a process, end to end") == 2
    start = seconds("notebook way: process start, imports, data sets")
    total = seconds("notebook way: total, the notebook's schedule")
    parts = seconds("notebook way: train (DataLoader, retrain per bins)") + seconds(
        "notebook way: estimate after epochs 1..E"
    )
    assert start > 0 and total == pytest.approx(parts + start, abs=0.02)
    # infoflow's runs interleaved with the reference's processes
    assert seconds("infoflow sweep (cache on), run 1 (before the reference): wall") > 0
    assert seconds("infoflow sweep (cache on), run 2 (after bins=10): wall") > 0
    assert seconds("infoflow sweep (cache on), run 3 (after bins=30): wall") > 0
    assert "speed-up of infoflow's mean run" in out
    assert seconds("mlp1 epoch: bare fwd/bwd/step loop") > 0
    assert seconds("mlp1 epoch: infoflow training loop") > 0
    assert seconds("mlp1 estimate (binning 30) / loop") >= 0
    assert "machine: " in out and "machine state at end" in out
