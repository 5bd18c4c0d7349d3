"""A sweep's own guards: its merge survives signals, a repeated job is refused, a place it
cannot write is named in one line."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from omegaconf import OmegaConf

from infoflow import io
from infoflow.sweep import callbacks
from infoflow.sweep.callbacks import MergeResults, OutputDir, repeated
from infoflow.sweep.job import Interrupted, describe
from infoflow.sweep.launcher import inside, job_numbers
from infoflow.sweep.merge import job_record


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


# ---------------------------------------------------------------------------------------------
# places the sweep cannot write: one line that says so, never a traceback or a wrong culprit


@pytest.mark.parametrize(
    ("args", "key"),
    [(("-m", "seed=0,1", "hydra.sweep.dir=afile/sweep"), "hydra.sweep.dir"),
     (("hydra.run.dir=afile/run",), "hydra.run.dir")],
    ids=["sweep", "run"],
)  # fmt: skip
def test_an_output_dir_that_cannot_be_made_is_one_line(cli, tmp_path, args, key):
    (tmp_path / "afile").write_text("not a folder\n")  # root may write anywhere, not under a file
    proc = cli(*args, "trainer.epochs=1")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"infoflow: error: {key} must be a folder infoflow can create and write, got "
        f"'afile/{key.split('.')[1]}': Not a directory; choose another with {key}=DIR"
    ]


def enospc() -> OSError:
    return OSError(errno.ENOSPC, "No space left on device", "/full/0/mi.parquet")


def test_a_full_disk_or_a_read_only_place_is_named_in_one_line():
    assert describe(enospc()).startswith(
        "cannot write the job's files: no space left on the device (/full/0/mi.parquet); free"
    )
    try:  # torch's checkpoint writer: a RuntimeError, the OSError as its context
        try:
            raise enospc()
        except OSError as cause:
            raise RuntimeError(
                "[enforce fail at inline_container.cc:626] . unexpected pos"
            ) from cause
    except RuntimeError as err:
        assert describe(err).startswith("cannot write the job's files: no space left")
    alone = RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")
    assert describe(alone).startswith("cannot write the job's checkpoint: the disk is most")
    assert "read-only" in describe(OSError(errno.EROFS, "Read-only file system", "/ro/x"))
    assert describe(ValueError("other")) == "ValueError: other"  # anything else keeps its type


def test_a_job_that_could_not_write_its_failure_is_failed_not_killed(tmp_path):
    job = tmp_path / "0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("- seed=0\n")
    (job / io.STATUS_FILE).write_text(json.dumps({"status": "running", "run_id": "r0"}))
    why = describe(enospc())  # what Job.failed kept in memory when status.json would not take it
    rec, _ = job_record(job, tmp_path, error=why)
    assert (rec["status"], rec["error"]) == ("failed", why)
    rec, _ = job_record(job, tmp_path)  # no known error: a job still marked running was killed
    assert rec["status"] == "incomplete" and "SIGKILL" in rec["error"]


def test_a_second_sweep_into_a_running_sweeps_dir_is_refused(tmp_path):
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "sw")}}})
    first, second = OutputDir(), OutputDir()
    first.on_multirun_start(config)
    with pytest.raises(SystemExit, match=r"another sweep is running in .*sw: wait for it"):
        second.on_multirun_start(config)
    first.on_multirun_end(config)
    second.on_multirun_start(config)  # once the first has ended, the dir is free
    second.on_multirun_end(config)


def test_a_job_dir_outside_the_sweep_dir_is_refused(tmp_path):
    inside(str(tmp_path), "3")
    inside(str(tmp_path), "lr=0.1/3")
    for subdir in ("../x3", "/elsewhere/3"):
        with pytest.raises(SystemExit, match=r"hydra\.sweep\.subdir must name a folder inside"):
            inside(str(tmp_path), subdir)


def test_a_sweep_resumed_with_its_values_in_another_order_finds_its_jobs(tmp_path):
    first = [["model=mlp1", "seed=0"], ["model=mlp1", "seed=1"], ["model=cnn", "seed=0"]]
    for num, overrides in enumerate([*first, ["model=cnn", "seed=1"]]):
        (tmp_path / str(num) / ".hydra").mkdir(parents=True)
        (tmp_path / str(num) / ".hydra" / "overrides.yaml").write_text(
            "".join(f"- {o}\n" for o in overrides)
        )
    resumed = [  # -m seed=0,1 model=mlp1,cnn,mlp5 runtime.resume=true
        ["seed=0", "model=mlp1", "runtime.resume=true"],
        ["seed=0", "model=cnn", "runtime.resume=true"],
        ["seed=0", "model=mlp5", "runtime.resume=true"],
        ["seed=1", "model=mlp1", "runtime.resume=true"],
        ["seed=1", "model=cnn", "runtime.resume=true"],
        ["seed=1", "model=mlp5", "runtime.resume=true"],
    ]
    assert job_numbers(resumed, 0, str(tmp_path)) == [0, 2, 4, 1, 3, 5]
    assert job_numbers(resumed, 0, None) == [0, 1, 2, 3, 4, 5]  # not resuming: launch order


# ---------------------------------------------------------------------------------------------
# the real CLI, signalled around its final merge

MARKED_MERGE = r"""
import os, runpy, sys, time
from infoflow.sweep import callbacks

real = callbacks.merge_sweep


def merge(root, **kwargs):  # says when it starts, and lasts long enough to be hit
    open(os.environ["MERGE_MARK"], "w").close()
    time.sleep(0.2)
    return real(root, **kwargs)


callbacks.merge_sweep = merge
sys.argv = ["infoflow", *sys.argv[1:]]
runpy.run_module("infoflow", run_name="__main__", alter_sys=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "offset"), [(signal.SIGTERM, 0.0), (signal.SIGINT, 0.1), (signal.SIGTERM, 0.3)]
)
def test_a_signal_around_the_final_merge_leaves_tables_that_match_the_jobs(tmp_path, sig, offset):
    driver, mark = tmp_path / "driver.py", tmp_path / "merging"
    driver.write_text(MARKED_MERGE)
    env = {**os.environ, "MERGE_MARK": str(mark), "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1"}
    args = ("-m", "model=mlp1", "seed=0,1,2", "trainer.epochs=1", "hydra.sweep.dir=sw")
    proc = subprocess.Popen(
        [sys.executable, str(driver), *args], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while not mark.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(offset)  # during the merge, at its end, or after it
    if proc.poll() is None:
        proc.send_signal(sig)
    out = proc.communicate(timeout=120)[0]
    # 0: the signal came after the sweep's end; 128 + sig: the sweep acted on it; -sig: it came
    # while Python was finalising, when the default action is back (everything was written)
    assert proc.returncode in (0, 128 + sig, -sig), out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    jobs = pd.read_parquet(tmp_path / "sw" / io.JOBS_TABLE)
    assert jobs.status.tolist() == ["completed"] * 3
    merged = pd.read_parquet(tmp_path / "sw" / io.SWEEP_TABLE)
    assert sorted(merged.run_id.unique()) == sorted(jobs.run_id)


def test_a_sweep_into_an_earlier_sweeps_dir_says_what_it_replaces(tmp_path, caplog):
    from infoflow.sweep.callbacks import say_what_it_replaces

    caplog.set_level("INFO", logger=callbacks.__name__)
    say_what_it_replaces(tmp_path, resume=False)  # a new folder: nothing to say
    assert not caplog.records
    job_dirs(tmp_path)
    say_what_it_replaces(tmp_path, resume=False)
    say_what_it_replaces(tmp_path, resume=True)
    replaced, resumed = (r.getMessage() for r in caplog.records)
    assert "holds an earlier sweep of 3 jobs: this sweep replaces it" in replaced
    assert "add runtime.resume=true to continue it instead" in replaced
    assert resumed.endswith("holds an earlier sweep of 3 jobs: resuming it")
