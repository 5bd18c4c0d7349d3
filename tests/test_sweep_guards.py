"""A sweep's own guards: its merge survives signals, a repeated job is refused."""

from __future__ import annotations

import json
import os
import signal

import pandas as pd
import pytest

from infoflow import io
from infoflow.sweep import callbacks
from infoflow.sweep.callbacks import MergeResults, repeated
from infoflow.sweep.job import Interrupted


def job_dirs(root, n=3):
    """A sweep dir as the CLI leaves it: sweep.json, and n completed jobs."""
    listed = []
    for i in range(n):
        job = root / str(i)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- seed={i}\n")
        rows = [
            {"run_id": f"r{i}", "seed": i, "epoch": e, "layer": 1, "I_XT": 1.0, "I_TY": 0.5}
            for e in range(3)
        ]
        pd.DataFrame(rows).to_parquet(job / io.JOB_TABLE, index=False)
        (job / io.STATUS_FILE).write_text(
            json.dumps(
                {"status": "completed", "evals_done": 3, "evals_total": 3, "run_id": f"r{i}"}
            )
        )
        listed.append({"num": i, "overrides": [f"seed={i}"]})
    (root / io.MANIFEST).write_text(json.dumps({"jobs": listed}))


def signalling_merge(monkeypatch, *signals):
    """merge_sweep that receives ``signals`` (to this process) halfway through."""
    real = callbacks.merge_sweep

    def merge(root, **kwargs):
        for sig in signals:
            os.kill(os.getpid(), sig)
        return real(root, **kwargs)

    monkeypatch.setattr(callbacks, "merge_sweep", merge)


@pytest.mark.parametrize(
    "signals", [(signal.SIGTERM,), (signal.SIGINT, signal.SIGINT)], ids=["SIGTERM", "2xSIGINT"]
)
def test_a_signal_during_the_final_merge_waits_for_it(tmp_path, monkeypatch, signals):
    job_dirs(tmp_path)
    signalling_merge(monkeypatch, *signals)
    merge = MergeResults()
    merge._sweep_dir = tmp_path
    with pytest.raises(Interrupted) as info:  # acted upon once the merge is done
        merge.on_multirun_end(config=None)
    assert info.value.signum == signals[0]
    assert merge._merged  # the exit-time merge has nothing left to do
    jobs = pd.read_parquet(tmp_path / io.JOBS_TABLE)
    assert jobs.status.tolist() == ["completed"] * 3
    assert pd.read_parquet(tmp_path / io.SWEEP_TABLE).run_id.nunique() == 3
    assert signal.getsignal(signal.SIGTERM) is not None  # the handlers are back


def test_the_exit_time_merge_finishes_through_a_signal(tmp_path, monkeypatch):
    job_dirs(tmp_path)
    signalling_merge(monkeypatch, signal.SIGINT)
    merge = MergeResults()
    merge._sweep_dir = tmp_path  # on_multirun_end never ran: the sweep was interrupted
    merge._merge_at_exit()  # the process ends anyway: the signal is dropped, not raised
    assert merge._merged
    assert len(pd.read_parquet(tmp_path / io.JOBS_TABLE)) == 3


def test_a_job_listed_twice_is_found():
    assert repeated([["seed=0"], ["seed=1"]]) is None
    assert repeated([["a=1", "seed=0"], ["seed=1", "a=1"], ["seed=0", "a=1"]]) == ["seed=0", "a=1"]


def test_a_sweep_that_repeats_a_job_stops_before_any_job(cli, tmp_path):
    proc = cli("-m", "model=mlp1", "seed=0,0,1", "trainer.epochs=1", "hydra.sweep.dir=sw")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "infoflow: error: the sweep launches the same job twice (model=mlp1 seed=0 "
        "trainer.epochs=1): a job's directory, table and status are its own; give each value "
        "once"
    ]
    assert not (tmp_path / "sw" / "0").exists()
