"""Failures that lose nothing: killed jobs (SIGKILL between evaluations, mid-epoch, mid-write),
a job that fails inside a sweep, corrupt or foreign files in a sweep directory."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT, run_cli

from infoflow.io import JOBS_TABLE, SWEEP_TABLE
from infoflow.io import read_table as read_job_table
from infoflow.sweep.merge import merge_sweep

# A job run through a driver that stops it at a chosen point and waits to be killed:
#   after_write N  after the N-th table write has landed (N-1 = last finished epoch)
#   mid_step N     before the N-th optimizer step (digits, batch 32: 45 steps an epoch)
#   mid_write N    half-way through writing the N-th table (the temporary file is torn)
DRIVER = r"""
import os, runpy, sys, time
from pathlib import Path
from torch.optim.optimizer import register_optimizer_step_pre_hook
import infoflow.io as io

mode, n, marker = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
sys.argv = ["infoflow", *sys.argv[4:]]
count = {"writes": 0, "steps": 0}
atomic = io.write_atomic


def hang():
    marker.write_text(str(os.getpid()))
    time.sleep(300)
    os._exit(3)


# Every file infoflow writes goes through io.write_atomic: a temporary file, then a rename.
def write_atomic(path, write):
    path = Path(path)
    if path.name != "mi.parquet":
        return atomic(path, write)
    count["writes"] += 1
    if mode == "mid_write" and count["writes"] == n:  # the write is torn before its rename
        tmp = path.with_name(f".{path.name}.{os.getpid()}.torn.tmp")
        write(tmp)
        tmp.write_bytes(tmp.read_bytes()[: tmp.stat().st_size // 2])
        hang()
    atomic(path, write)
    if mode == "after_write" and count["writes"] == n:
        hang()


io.write_atomic = write_atomic


def pre_step(opt, args, kwargs):
    count["steps"] += 1
    if mode == "mid_step" and count["steps"] == n:
        hang()


register_optimizer_step_pre_hook(pre_step)
runpy.run_module("infoflow", run_name="__main__", alter_sys=True)
"""

# 5 evaluations x 3 layers; every evaluation flushed (runtime.flush_s=0), so that each finished
# epoch is on disk when the job is killed
JOB = ("model=mlp3", "trainer.epochs=4", "runtime.flush_s=0")
LAYERS = [1, 2, 3]


def resume_available() -> bool:
    return "resume" in (ROOT / "conf" / "config.yaml").read_text()


def numbers(df: pd.DataFrame) -> pd.DataFrame:
    drop = [c for c in df.columns if c in ("run_id", "status") or c.startswith("time")]
    keys = [c for c in ("epoch", "step", "layer") if c in df.columns]
    return df.drop(columns=drop).sort_values(keys).reset_index(drop=True)


def assert_whole_epochs(table: pd.DataFrame, expect_epochs: list[int]) -> None:
    """Every finished epoch is there with every layer, and nothing else."""
    assert sorted(table.epoch.unique()) == expect_epochs
    for epoch, group in table.groupby("epoch"):
        assert sorted(group.layer) == LAYERS, f"epoch {epoch}: layers {sorted(group.layer)}"
    assert table[["I_XT", "I_TY"]].notna().all().all()


def kill_at(tmp_path: Path, mode: str, n: int, *args: str) -> subprocess.CompletedProcess:
    """Run the driver until it signals the point, then SIGKILL it; return the dead process."""
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    marker = tmp_path / "reached"
    proc = subprocess.Popen(
        [sys.executable, str(driver), mode, str(n), str(marker), *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "HYDRA_FULL_ERROR": "1"},
    )
    deadline = time.monotonic() + 240
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the job never reached {mode} {n}:\n{proc.communicate()[0][-3000:]}")
        time.sleep(0.05)
    os.kill(int(marker.read_text()), signal.SIGKILL)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == -signal.SIGKILL, out[-3000:]
    return proc


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same job, never interrupted."""
    root = tmp_path_factory.mktemp("reference")
    proc = run_cli("-m", *JOB, f"hydra.sweep.dir={root / 'sweep'}", cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return pd.read_parquet(root / "sweep" / "0" / "mi.parquet")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "n", "finished"),
    [
        ("after_write", 2, [0, 1]),  # killed between epochs, right after epoch 1's rows landed
        ("mid_step", 60, [0, 1]),  # killed in the middle of epoch 2's training
        ("mid_write", 3, [0, 1]),  # killed while writing epoch 2's rows
    ],
)
def test_sigkill_keeps_every_finished_epoch_and_resume_completes(
    tmp_path, reference, mode, n, finished
):
    sweep = tmp_path / "sweep"
    kill_at(tmp_path, mode, n, "-m", *JOB, f"hydra.sweep.dir={sweep}")
    job = sweep / "0"
    table, err = read_job_table(job / "mi.parquet")
    assert err is None, err
    assert_whole_epochs(table, finished)
    torn = list(job.glob(".mi.parquet.*.tmp"))
    if mode == "mid_write":  # the kill did land mid-write: the temporary file is torn
        assert len(torn) == 1 and read_job_table(torn[0])[1].startswith("not a readable")
    # the launcher died too, so nothing merged; the standalone merge reports the job
    res = merge_sweep(sweep)
    assert res.jobs.status.tolist() == ["incomplete"]
    assert res.jobs.rows.tolist() == [3 * len(finished)]
    pd.testing.assert_frame_equal(
        numbers(table), numbers(reference[reference.epoch.isin(finished)])
    )
    if not resume_available():
        pytest.skip("runtime.resume=true is not implemented yet")
    proc = run_cli("-m", *JOB, "runtime.resume=true", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed = pd.read_parquet(job / "mi.parquet")
    assert_whole_epochs(resumed, [0, 1, 2, 3, 4])
    pd.testing.assert_frame_equal(numbers(resumed), numbers(reference), check_exact=True)
    jobs = pd.read_parquet(sweep / JOBS_TABLE)
    assert jobs.status.tolist() == ["completed"]
    assert (pd.read_parquet(sweep / SWEEP_TABLE).status == "completed").all()


@pytest.mark.slow
def test_single_run_killed_then_resumed_in_its_run_dir(tmp_path, reference):
    run_dir = tmp_path / "run"
    kill_at(tmp_path, "after_write", 3, *JOB, f"hydra.run.dir={run_dir}")
    assert_whole_epochs(pd.read_parquet(run_dir / "mi.parquet"), [0, 1, 2])
    if not resume_available():
        pytest.skip("runtime.resume=true is not implemented yet")
    proc = run_cli(*JOB, "runtime.resume=true", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed = pd.read_parquet(run_dir / "mi.parquet")
    pd.testing.assert_frame_equal(numbers(resumed), numbers(reference), check_exact=True)


@pytest.mark.slow
def test_a_failing_job_does_not_stop_the_sweep_and_the_summary_names_it(tmp_path):
    # lr 1e38 overflows Adam's float32 update in the first step: the job fails at epoch 1
    sweep = tmp_path / "sweep"
    proc = run_cli(
        "-m",
        "model=mlp1",
        "optimizer.lr=1e38,1e-3",
        "trainer.epochs=2",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 1, log[-3000:]  # every job ran; the exit code says one failed
    jobs = pd.read_parquet(sweep / JOBS_TABLE)
    assert jobs.status.tolist() == ["failed", "completed"], log[-3000:]
    assert jobs.error[0] and jobs.evals_done[0] < jobs.evals_total[0]
    merged = pd.read_parquet(sweep / SWEEP_TABLE)
    assert (merged[merged.status == "completed"].epoch.unique() == [0, 1, 2]).all()
    assert (merged.status == "failed").sum() == jobs.rows[0] >= 1  # epoch 0 is kept
    last = log.strip().splitlines()[-1]  # the failure is the last thing the user sees
    assert "FAILED job 0 [model=mlp1 optimizer.lr=1e+38 trainer.epochs=2]" in last


# ---------------------------------------------------------------------------- corrupt files


def good_table(tmp_path: Path) -> bytes:
    from test_results import job_rows

    path = tmp_path / "good.parquet"
    job_rows("good", 2).to_parquet(path, index=False)
    return path.read_bytes()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (lambda good: b"run_id,epoch\nx,0\n", "not a readable Parquet file"),  # a CSV
        (lambda good: good[: len(good) // 2], "not a readable Parquet file"),  # truncated
        (lambda good: good[:-3], "not a readable Parquet file"),  # footer torn
        (lambda good: b"", "not a readable Parquet file (0 bytes"),  # empty
        (lambda good: None, "not an infoflow table (no column run_id"),  # foreign Parquet
    ],
    ids=["csv", "half", "footer", "empty", "foreign"],
)
def test_a_corrupt_or_foreign_job_table_is_named_and_skipped(tmp_path, caplog, content, reason):
    from test_results import job_rows, make_job, status

    good = good_table(tmp_path)
    sweep = tmp_path / "sweep"
    make_job(sweep, 0, job_rows("a", 2), status("completed", "a", 2, 2))
    bad = content(good)
    make_job(
        sweep,
        1,
        pd.DataFrame({"x": [1.0]}) if bad is None else bad,
        status("completed", "b", 2, 2),
    )
    with caplog.at_level(logging.WARNING):
        res = merge_sweep(sweep)  # never raises
    assert len(pd.read_parquet(sweep / SWEEP_TABLE)) == 6  # job 0's rows
    assert res.jobs.table_error[1].startswith(reason)
    assert res.jobs.rows.tolist() == [6, 0] and not res.ok
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(sweep / "1" / "mi.parquet") in m and reason in m for m in warned), warned
    assert any(m.startswith("COMPLETED job 1") and "its table" in m for m in warned), warned
    assert "Traceback" not in caplog.text


def test_foreign_files_in_a_sweep_dir_are_ignored(tmp_path):
    from test_results import job_rows, make_job, status

    make_job(tmp_path, 0, job_rows("a", 2), status("completed", "a", 2, 2))
    (tmp_path / "notes.parquet").write_text("not parquet at all")
    (tmp_path / "0" / "plot.png").write_bytes(b"\x89PNG")
    (tmp_path / "0" / ".mi.parquet.1.ab.tmp").write_bytes(b"torn")
    (tmp_path / ".train_cache" / "k").mkdir(parents=True)
    (tmp_path / ".train_cache" / "k" / "state.pt").write_bytes(b"x")
    res = merge_sweep(tmp_path)
    assert res.ok and res.jobs.job.tolist() == ["0"] and len(res.results) == 6


def test_unreadable_status_json_is_reported_not_raised(tmp_path):
    from test_results import job_rows, make_job

    job = make_job(tmp_path, 0, job_rows("a", 2), None)
    (job / "status.json").write_text('{"status": "compl')  # torn by a non-atomic writer
    res = merge_sweep(tmp_path)
    assert res.jobs.status.tolist() == ["incomplete"]
    assert res.jobs.error[0].startswith("status.json unreadable (JSONDecodeError")


@pytest.mark.slow
def test_a_sweep_stopped_by_a_job_still_merges_and_reports_at_exit(tmp_path):
    # trainer.epochs=0 fails validation: today the job exits the whole process (SystemExit),
    # Hydra never calls on_multirun_end, and the callback's atexit merge must still report
    sweep = tmp_path / "sweep"
    proc = run_cli(
        "-m", "model=mlp1", "trainer.epochs=1,0", f"hydra.sweep.dir={sweep}", cwd=tmp_path
    )
    jobs = pd.read_parquet(sweep / JOBS_TABLE)
    assert jobs.status[0] == "completed" and jobs.status[1] in ("failed", "incomplete")
    assert len(pd.read_parquet(sweep / SWEEP_TABLE)) == 2
    log = proc.stdout.strip().splitlines()  # Hydra logs to stdout; the job's error is on stderr
    assert "job 1 [model=mlp1 trainer.epochs=0]" in log[-1], log[-5:]
