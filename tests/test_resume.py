"""Resume: an interrupted job continues from its last finished evaluation, same numbers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from functools import partial

import pandas as pd
import pytest
import torch

from benchmarks.single import run
from infoflow.estimators import binning
from infoflow.sweep.cache import TrainCache
from infoflow.sweep.job import Job
from infoflow.training.data import load_digits
from infoflow.training.loop import TrainerConfig
from infoflow.training.models import MLP

DATA = load_digits()


class Interrupted(Exception):
    pass


class CutJob(Job):
    """A job interrupted before the files of evaluation ``stop_at + 1`` are written, as a kill
    would."""

    def __init__(self, path, stop_at=None):
        super().__init__(path, config_hash="h", multirun=False)
        self.stop_at = stop_at

    def record(self, rows, done, train_state):
        if self.stop_at is not None and done > self.stop_at:
            raise Interrupted
        super().record(rows, done, train_state)


def job(job_dir, trainer, cache=None, resume=False, stop_at=None):
    """One job on digits; ``stop_at`` = number of evaluations after which it is interrupted."""
    torch.manual_seed(0)
    model = MLP(DATA.in_shape, DATA.n_classes, [32, 16])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    recorder = CutJob(job_dir, stop_at)
    recorder.prepare(resume)
    est = partial(binning, bins=10)
    return run(model, opt, DATA, est, trainer, 0, recorder=recorder, cache=cache, resume=resume)


def frame(rows):
    return pd.DataFrame(rows).reset_index(drop=True)


@pytest.mark.parametrize("use_cache", [False, True])
@pytest.mark.parametrize("schedule", ["epoch", "log:9"])
def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, use_cache, schedule):
    trainer = TrainerConfig(epochs=4, batch_size=64, eval=schedule)
    whole = job(tmp_path / "whole", trainer)
    cache = (lambda: TrainCache(tmp_path / "cache", {"k": 1})) if use_cache else (lambda: None)
    with pytest.raises(Interrupted):
        job(tmp_path / "cut", trainer, cache=cache(), stop_at=3)
    status = read_status(tmp_path / "cut")
    assert status["status"] == "running" and status["evals_done"] == 3
    resumed = job(tmp_path / "cut", trainer, cache=cache(), resume=True)  # all rows
    cols = [c for c in frame(whole).columns if c != "run_id"]
    pd.testing.assert_frame_equal(frame(resumed)[cols], frame(whole)[cols], check_exact=True)
    assert read_status(tmp_path / "cut")["status"] == "completed"
    assert pd.read_parquet(tmp_path / "cut" / "mi.parquet").shape[0] == len(whole)


class TableOnlyJob(CutJob):
    """Killed after evaluation ``stop_at + 1``'s table was written, before its checkpoint."""

    def _write_checkpoint(self, rows):
        if self.stop_at is not None and self.evals_done > self.stop_at:
            raise Interrupted
        super()._write_checkpoint(rows)

    def record(self, rows, done, train_state):
        Job.record(self, rows, done, train_state)


def test_a_kill_between_table_and_checkpoint_measures_that_evaluation_again(tmp_path):
    trainer = TrainerConfig(epochs=4, batch_size=64)
    whole = job(tmp_path / "whole", trainer)
    torch.manual_seed(0)
    model = MLP(DATA.in_shape, DATA.n_classes, [32, 16])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    cut = TableOnlyJob(tmp_path / "cut", stop_at=2)
    with pytest.raises(Interrupted):
        run(model, opt, DATA, partial(binning, bins=10), trainer, 0, recorder=cut)
    table = pd.read_parquet(tmp_path / "cut" / "mi.parquet")
    assert table.epoch.nunique() == 3  # one evaluation more than the checkpoint counts
    assert torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=False)["evals_done"] == 2
    resumed = job(tmp_path / "cut", trainer, resume=True)
    cols = [c for c in frame(whole).columns if c != "run_id"]
    pd.testing.assert_frame_equal(frame(resumed)[cols], frame(whole)[cols], check_exact=True)
    on_disk = pd.read_parquet(tmp_path / "cut" / "mi.parquet")
    pd.testing.assert_frame_equal(on_disk[cols], frame(whole)[cols], check_exact=True)


def test_the_checkpoint_holds_rows_only_once_the_job_is_completed(tmp_path):
    """Each evaluation writes what it adds: while the job runs its checkpoint holds the training
    state, not the rows (rewriting every row at every evaluation made the files cost more than
    the estimates); the completed job's checkpoint keeps every row to restore its table."""
    seen = []

    class Watch(CutJob):
        def record(self, rows, done, train_state):
            super().record(rows, done, train_state)
            seen.append(torch.load(self.path / "checkpoint.pt", weights_only=False))

    torch.manual_seed(0)
    model = MLP(DATA.in_shape, DATA.n_classes, [32, 16])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    rows = run(model, opt, DATA, partial(binning, bins=10), TrainerConfig(epochs=3), 0,
               recorder=Watch(tmp_path))  # fmt: skip
    assert [c["evals_done"] for c in seen] == [1, 2, 3, 4]
    assert all(c["rows"] is None and c["train"]["step"] >= 0 for c in seen)
    final = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert final["evals_done"] == 4
    pd.testing.assert_frame_equal(frame(final["rows"]), frame(rows), check_exact=True)


def test_resume_ignores_a_checkpoint_of_another_config(tmp_path):
    trainer = TrainerConfig(epochs=2, batch_size=64)
    job(tmp_path, trainer)
    other = Job(tmp_path, config_hash="not h", multirun=False)
    assert other.load_checkpoint() is None
    assert other.prepare(resume=True) is False  # not this job's: started over
    assert not (tmp_path / "mi.parquet").exists() and not (tmp_path / "checkpoint.pt").exists()


# ---------------------------------------------------------------------------------------------
# the real CLI, killed with SIGKILL mid-run


def cli(*args, cwd, wait=True):
    cmd = [sys.executable, "-m", "infoflow", *args]
    env = {**os.environ, "HYDRA_FULL_ERROR": "1", "OMP_NUM_THREADS": "1"}
    if wait:  # Hydra logs to stdout: merge it with stderr for the assertions
        return subprocess.run(
            cmd,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=300,
        )
    return subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def read_status(path):
    try:
        return json.loads((path / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


@pytest.mark.slow
def test_cli_killed_job_resumes_to_the_same_table_and_is_then_skipped(tmp_path):
    common = ["model=mlp1", "trainer.epochs=12", "estimator.bins=10"]
    done = cli(*common, "hydra.run.dir=whole", cwd=tmp_path)
    assert done.returncode == 0, done.stdout
    proc = cli(*common, "hydra.run.dir=cut", cwd=tmp_path, wait=False)
    deadline = time.time() + 120
    while time.time() < deadline:
        st = read_status(tmp_path / "cut")
        if (st is not None and st["evals_done"] >= 3) or proc.poll() is not None:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    st = read_status(tmp_path / "cut")
    assert st["status"] == "running" and 3 <= st["evals_done"] < 13, st  # really cut short
    run_id = st["run_id"]
    again = cli(*common, "hydra.run.dir=cut", "runtime.resume=true", cwd=tmp_path)
    assert again.returncode == 0, again.stdout
    assert "resuming after evaluation" in again.stdout
    whole = pd.read_parquet(tmp_path / "whole" / "mi.parquet")
    cut = pd.read_parquet(tmp_path / "cut" / "mi.parquet")
    assert (cut["run_id"] == run_id).all()
    pd.testing.assert_frame_equal(
        cut.drop(columns="run_id"), whole.drop(columns="run_id"), check_exact=True
    )
    stamp = (tmp_path / "cut" / "mi.parquet").stat().st_mtime_ns
    skip = cli(*common, "hydra.run.dir=cut", "runtime.resume=true", cwd=tmp_path)
    assert skip.returncode == 0 and "completed, skipping" in skip.stdout
    assert (tmp_path / "cut" / "mi.parquet").stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_cli_sweep_resume_skips_completed_jobs_and_a_failed_job_does_not_stop_the_sweep(tmp_path):
    args = [
        "-m",
        "model=mlp1",
        "optimizer=sgd",
        "optimizer.lr=1e12,0.01",
        "trainer.epochs=2",
        "hydra.sweep.dir=sw",
    ]
    first = cli(*args, cwd=tmp_path)
    assert "error: training diverged" in first.stdout
    assert first.returncode == 1
    assert read_status(tmp_path / "sw" / "0")["status"] == "failed"
    assert read_status(tmp_path / "sw" / "1")["status"] == "completed"  # the sweep went on
    assert len(pd.read_parquet(tmp_path / "sw" / "0" / "mi.parquet")) == 1  # epoch 0 kept
    stamp = (tmp_path / "sw" / "1" / "mi.parquet").stat().st_mtime_ns
    second = cli(*args, "runtime.resume=true", cwd=tmp_path)
    assert "completed, skipping" in second.stdout
    assert (tmp_path / "sw" / "1" / "mi.parquet").stat().st_mtime_ns == stamp
    assert read_status(tmp_path / "sw" / "0")["status"] == "failed"  # retried, fails again
