"""Stacks on every core: infoflow's launcher runs a sweep's independent units in worker
processes (``hydra.launcher.n_workers``). The plan's units, the pool's behaviour when a task
fails or its worker dies, and the real CLI: the same tables as a serial run, per-job logs and
statuses, a killed worker's jobs marked failed and resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_cli

from infoflow import io
from infoflow.sweep import launcher as launcher_mod
from infoflow.sweep.launcher import (
    MIN_SPLIT,
    LauncherError,
    PlannedJob,
    check_options,
    default_workers,
    make_stacks,
    make_units,
)
from infoflow.sweep.workers import Outcome, run_tasks

# ---------------------------------------------------------------------------------------------
# the plan's units


class Spec:
    """What the plan reads of a job spec."""

    def __init__(self, seed, runtime=None, **rest):
        self.seed = seed
        self.stack_key = io.config_hash({"model": "m", **rest})
        self.runtime = runtime or {"device": "cpu", "threads": 1}


def planned(idx, seed, trains="m", **rest):
    """A job of training config ``trains`` (None: no cache) and estimate ``rest``."""
    job = PlannedJob(idx, [f"seed={seed}"], None, spec=Spec(seed, **rest))
    job.trains_with = trains
    return job


def shape(units):
    return [[[j.idx for j in stack] for stack in unit] for unit in units]


def test_a_20_seed_stack_on_2_workers_runs_as_two_stacks_of_10():
    jobs = [planned(i, i) for i in range(20)]
    units = make_units(make_stacks(jobs, 32), n_workers=2)
    assert shape(units) == [[list(range(10))], [list(range(10, 20))]]
    assert shape(make_units(make_stacks(jobs, 32), n_workers=3)) == [
        [list(range(7))],
        [list(range(7, 14))],
        [list(range(14, 20))],
    ]
    assert shape(make_units(make_stacks(jobs, 32), n_workers=1)) == [[list(range(20))]]


def test_a_small_stack_is_not_split_and_units_outnumbering_workers_are_not_either():
    few = [planned(i, i) for i in range(2 * MIN_SPLIT - 1)]
    assert shape(make_units(make_stacks(few, 32), 2)) == [[list(range(2 * MIN_SPLIT - 1))]]
    nets = [planned(10 * m + s, s, trains=f"net{m}", net=m) for m in range(4) for s in range(10)]
    units = make_units(make_stacks(nets, 32), 2)
    assert shape(units) == [[list(range(10 * m, 10 * m + 10))] for m in range(4)]


def test_stacks_sharing_training_keys_are_one_unit_and_split_together():
    """Two estimators of the same nets (one training, shared passes): one unit, the first
    stack trains and evaluates for both; split by seed, each part keeps both estimators."""
    a = [planned(i, i, est="binning") for i in range(8)]
    b = [planned(8 + i, i, est="kde") for i in range(8)]
    other = [planned(16, 0, trains=None, est="x")]  # no cache: shares nothing
    stacks = make_stacks([*a, *b, *other], 32)
    assert shape(make_units(stacks, 1)) == [[list(range(8)), list(range(8, 16))], [[16]]]
    assert shape(make_units(stacks, 3)) == [
        [[0, 1, 2, 3], [8, 9, 10, 11]],
        [[4, 5, 6, 7], [12, 13, 14, 15]],
        [[16]],
    ]


def test_stacks_cut_by_max_stack_share_nothing_and_are_units_of_their_own():
    jobs = [planned(i, i) for i in range(10)]
    assert shape(make_units(make_stacks(jobs, 4), 2)) == [[[0, 1, 2, 3]], [[4, 5, 6, 7]], [[8, 9]]]


def test_an_invalid_job_is_a_unit_alone():
    jobs = [planned(0, 0), PlannedJob(1, ["bad"], None), planned(2, 1)]
    assert shape(make_units(make_stacks(jobs, 32), 4)) == [[[0, 2]], [[1]]]


def test_default_workers_are_the_cores_over_each_jobs_threads(monkeypatch):
    monkeypatch.setattr("infoflow.sweep.runner.cores", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    auto = {"device": "cpu", "threads": "auto"}
    assert default_workers([planned(0, 0, runtime=auto)]) == 1  # auto: every core, as alone
    one, two = {"device": "cpu", "threads": 1}, {"device": "cpu", "threads": 2}
    assert default_workers([planned(0, 0, runtime=one)]) == 8
    assert default_workers([planned(0, 0, runtime=one), planned(1, 1, runtime=two)]) == 4
    assert default_workers([planned(0, 0, runtime=one), planned(1, 1, runtime=auto)]) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert default_workers([planned(0, 0, runtime=auto)]) == 2
    monkeypatch.setattr(launcher_mod, "resolve_device", lambda name: __import__("torch").device(
        "cuda" if name == "cuda" else "cpu"))  # fmt: skip
    assert default_workers([planned(0, 0, runtime={"device": "cuda", "threads": 1})]) == 1


@pytest.mark.parametrize("value", [0, -1, True, "2", 1.5, 10_000])
def test_a_bad_n_workers_names_key_rule_and_value(value):
    with pytest.raises(LauncherError, match=rf"hydra.launcher.n_workers must be null .*{value!r}"):
        check_options({"n_workers": value})
    assert check_options({"n_workers": None}) == check_options({"n_workers": 3}) == 32


# ---------------------------------------------------------------------------------------------
# the pool


def square(x):
    return x * x


def fail(x):
    raise ValueError(f"no {x}")


def die(x):
    os.kill(os.getpid(), signal.SIGKILL)


def threads_env(x):
    return os.environ.get("OMP_NUM_THREADS"), os.getpid()


@pytest.mark.slow  # two worker starts: a fresh interpreter importing torch each
def test_the_pool_runs_tasks_reports_failures_and_outlives_a_dead_worker():
    tasks = [(square, (2,)), (fail, (3,)), (die, (0,)), (square, (5,)), (threads_env, (0,))]
    done: dict[int, Outcome] = {}
    t0 = time.monotonic()
    run_tasks(tasks, 1, {"OMP_NUM_THREADS": "3"}, lambda i, o: done.setdefault(i, o) and None)
    assert sorted(done) == [0, 1, 2, 3, 4], done
    assert done[0].value == 4 and done[3].value == 25
    assert "ValueError: no 3" in done[1].error and done[1].value is None
    assert done[2].error == "its worker process was killed by SIGKILL (out of memory?)"
    env, pid = done[4].value
    assert env == "3" and pid != os.getpid()
    assert time.monotonic() - t0 < 120


# ---------------------------------------------------------------------------------------------
# the real CLI


def numbers(sweep: Path) -> pd.DataFrame:
    df = pd.read_parquet(sweep / "results.parquet").drop(columns=["run_id"])
    return df.sort_values(["seed", "epoch", "layer"]).reset_index(drop=True)


SEEDS = ("-m", "model=mlp1", "seed=range(8)", "trainer.epochs=2", "runtime.device=cpu",
         "runtime.threads=1")  # fmt: skip


@pytest.mark.slow
def test_a_seed_alone_in_a_stack_or_in_a_parallel_worker_has_the_same_table(tmp_path):
    """Eight seeds: one stack in this process, two stacks of 4 in two workers, every seed
    alone in two workers: the tables are identical, bit for bit; logs and statuses per job."""
    runs = {
        "serial": ("hydra.launcher.n_workers=1",),
        "workers": ("hydra.launcher.n_workers=2",),
        "alone": ("hydra.launcher.n_workers=2", "hydra.launcher.max_stack=1"),
    }
    out = {}
    for name, extra in runs.items():
        proc = run_cli(*SEEDS, *extra, f"hydra.sweep.dir={tmp_path / name}", cwd=tmp_path)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        out[name] = proc.stdout + proc.stderr
    assert "Launching 8 jobs in this process" in out["serial"]
    assert "seeds 0, 1, 2, 3, 4, 5, 6, 7 trained as one stack" in out["serial"]
    assert "Launching 8 jobs in 2 worker processes" in out["workers"]
    assert "seeds 0, 1, 2, 3 trained as one stack" in out["workers"]
    assert "seeds 4, 5, 6, 7 trained as one stack" in out["workers"]
    assert "trained as one stack" not in out["alone"]
    assert ", 1 threads," in out["workers"]
    reference = numbers(tmp_path / "serial")
    for name in ("workers", "alone"):
        pd.testing.assert_frame_equal(numbers(tmp_path / name), reference, check_exact=True)
        jobs = pd.read_parquet(tmp_path / name / io.JOBS_TABLE)
        assert jobs.status.tolist() == ["completed"] * 8
    for seed in range(8):  # each job's log holds its own seed's evaluations
        lines = (tmp_path / "workers" / str(seed) / "__main__.log").read_text().splitlines()
        evals = [line for line in lines if ": eval " in line]
        assert len(evals) == 3 and all(f"seed {seed}: eval" in line for line in evals), lines


@pytest.mark.slow
def test_a_failing_job_in_a_worker_fails_alone_and_the_sweep_exits_1(tmp_path, monkeypatch):
    """Two units in two workers: one job diverges, one has a bad config; each fails alone
    with its own message, the others complete, the sweep exits 1; each worker's jobs take
    the cores divided by the workers as their threads."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # the launcher sets the workers' own
    sweep = tmp_path / "sw"
    proc = run_cli("-m", "model=mlp1", "optimizer=sgd", "optimizer.lr=1e12,0.01",
                   "model.activation=relu,bogus",
                   "trainer.epochs=2", "runtime.device=cpu", "hydra.launcher.n_workers=2",
                   f"hydra.sweep.dir={sweep}", cwd=tmp_path)  # fmt: skip
    log = proc.stdout + proc.stderr
    assert proc.returncode == 1, log[-3000:]
    assert "in 2 worker processes" in log
    threads = max(1, len(os.sched_getaffinity(0)) // 2)  # runtime.threads=auto in a worker
    assert f", {threads} threads," in log and f", {2 * threads} threads," not in log
    jobs = pd.read_parquet(sweep / io.JOBS_TABLE)
    assert jobs.status.tolist() == ["failed", "failed", "completed", "failed"], jobs
    assert "training diverged" in jobs.error[0]
    assert "model.activation must be one of" in jobs.error[1]
    assert "Traceback" not in log
    assert log.strip().splitlines()[-1].startswith("[")  # the summary closes the output
    assert "FAILED job 3 [model=mlp1 optimizer=sgd optimizer.lr=0.01 model.activation=bogus" in log


def holders(sweep: Path) -> dict[str, int]:
    """Training cache key dir -> the pid of the process training it."""
    found = {}
    for path in (sweep / ".train_cache").glob("*/holder"):
        try:
            found[path.parent.name] = int(path.read_text().split()[-1])
        except (OSError, ValueError, IndexError):
            pass
    return found


@pytest.mark.slow
def test_a_killed_worker_fails_its_jobs_the_others_finish_and_resume_completes(tmp_path):
    args = ("-m", "model=mlp1", "seed=0,1", "optimizer.lr=1e-3,2e-3", "trainer.epochs=100",
            "runtime.device=cpu", "runtime.threads=1", "runtime.flush_s=0.2",
            "hydra.launcher.n_workers=2")  # fmt: skip
    sweep = tmp_path / "sw"
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "infoflow", *args, f"hydra.sweep.dir={sweep}"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    deadline, victim = time.monotonic() + 240, None
    while time.monotonic() < deadline and proc.poll() is None and victim is None:
        pids = set(holders(sweep).values()) - {proc.pid}
        st = io.read_status(sweep / "0")[0]
        if pids and st is not None and st["evals_done"] >= 2:
            victim = min(pids)
        time.sleep(0.05)
    assert victim is not None, proc.communicate()[0][-3000:]
    os.kill(victim, signal.SIGKILL)
    log = proc.communicate(timeout=300)[0]
    assert proc.returncode == 1, log[-3000:]
    assert "its worker process was killed by SIGKILL" in log
    jobs = pd.read_parquet(sweep / io.JOBS_TABLE)
    assert sorted(jobs.status) == ["completed", "completed", "failed", "failed"], jobs
    assert jobs[jobs.status == "failed"].error.str.contains("killed by SIGKILL").all()
    again = run_cli(*args, f"hydra.sweep.dir={sweep}", "runtime.resume=true", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming after evaluation" in again.stdout + again.stderr
    whole = run_cli(*args, f"hydra.sweep.dir={tmp_path / 'whole'}", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr[-3000:]
    keys = ["optimizer.lr", "seed", "epoch", "layer"]
    got, ref = (
        pd.read_parquet(d / "results.parquet").drop(columns="run_id").sort_values(keys)
        for d in (sweep, tmp_path / "whole")
    )
    pd.testing.assert_frame_equal(got.reset_index(drop=True), ref.reset_index(drop=True),
                                  check_exact=True)  # fmt: skip
    statuses = [json.loads((sweep / str(i) / "status.json").read_text()) for i in range(4)]
    assert [s["status"] for s in statuses] == ["completed"] * 4
