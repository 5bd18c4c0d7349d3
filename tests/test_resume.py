"""Resume: an interrupted job continues from its last finished evaluation, same numbers."""

from __future__ import annotations

import json
import os
import random
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
from infoflow.training.loop import Member, Recorder, TrainerConfig, train_stack
from infoflow.training.models import MLP

DATA = load_digits()


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: these nets are too small to split, and on a shared machine a second
    thread waits for a core (a run took 8 s on 2 threads against 0.7 s on 1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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


def files_of(path):
    """(status, evaluations the checkpoint counts, evaluations in the table) of a job dir."""
    ckpt = torch.load(path / "checkpoint.pt", weights_only=False) if (
        path / "checkpoint.pt").exists() else {"evals_done": 0}  # fmt: skip
    table = pd.read_parquet(path / "mi.parquet") if (path / "mi.parquet").exists() else None
    evals = 0 if table is None else table.epoch.nunique()
    return read_status(path), ckpt["evals_done"], evals


@pytest.mark.slow
def test_cli_job_killed_at_random_points_between_flushes_resumes_to_the_same_table(tmp_path):
    """SIGKILL twice at random instants of a job flushing every 0.4 s, then resume: each kill
    leaves files that agree (status <= checkpoint <= table), each resume goes on from them,
    and the job ends with the uninterrupted table; resumed once more, it is skipped."""
    common = ["model=mlp1", "trainer.epochs=150", "estimator.bins=10", "runtime.flush_s=0.4"]
    done = cli(*common, "hydra.run.dir=whole", cwd=tmp_path)
    assert done.returncode == 0, done.stdout
    rng, counted, run_id = random.Random(0), 0, None
    for kill in range(2):
        resume = ["runtime.resume=true"] if kill else []
        proc = cli(*common, "hydra.run.dir=cut", *resume, cwd=tmp_path, wait=False)
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:  # a flush beyond the last kill's
            st = read_status(tmp_path / "cut")
            if st is not None and st["evals_done"] > counted:
                break
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 0.6))  # then anywhere between two flushes, or in one
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        st, ckpt, evals = files_of(tmp_path / "cut")
        assert st["status"] == "running" and counted < st["evals_done"] <= ckpt <= evals < 151, (
            st, ckpt, evals)  # fmt: skip
        assert run_id in (None, st["run_id"])
        counted, run_id = ckpt, st["run_id"]
    again = cli(*common, "hydra.run.dir=cut", "runtime.resume=true", cwd=tmp_path)
    assert again.returncode == 0, again.stdout
    assert f"resuming after evaluation {counted}/151" in again.stdout
    whole = pd.read_parquet(tmp_path / "whole" / "mi.parquet")
    cut = pd.read_parquet(tmp_path / "cut" / "mi.parquet")
    assert (cut["run_id"] == run_id).all()
    pd.testing.assert_frame_equal(
        cut.drop(columns="run_id"), whole.drop(columns="run_id"), check_exact=True
    )
    assert files_of(tmp_path / "cut")[0]["evals_done"] == 151
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


# ---------------------------------------------------------------------------------------------
# flushes every runtime.flush_s seconds: what the files hold between them, kills at any point


class Killed(BaseException):
    """A SIGKILL: nothing of the job's own handling runs (not even ``except Exception``)."""


class Clocked(Job):
    """A job whose clock reads its evaluation count: ``flush_s=k`` flushes every k evaluations.

    ``kill`` = (evaluation, where): the process dies at that evaluation's record, ``before``
    its files, or during its flush ``after_table`` (table written, checkpoint not) or
    ``after_checkpoint`` (status not yet written); nothing dies where no flush falls.
    """

    def __init__(self, path, flush_s, kill=None):
        super().__init__(path, config_hash="h", multirun=True, flush_s=flush_s)
        self.now = 0
        self.clock = lambda: self.now
        self.kill = kill
        self.flushes = 0

    def armed(self, where):
        return self.kill is not None and self.kill == (self.evals_done, where)

    def begin(self, rows, done, total):
        self.now, self.started = done, done
        self.meta = {"run_id": self.run_id}  # as a job's rows have: resume checks it
        super().begin(rows, done, total)

    def record(self, rows, done, train_state):
        self.now = done
        if self.kill == (done, "before"):
            raise Killed
        super().record(rows, done, train_state)

    def _write_checkpoint(self, rows):
        if self.armed("after_table"):
            raise Killed
        super()._write_checkpoint(rows)

    def write_status(self, status, error=None):
        if status == "running" and self.armed("after_checkpoint"):
            raise Killed
        super().write_status(status, error)
        self.flushes += status == "running"


def on_disk(path):
    """(evaluations in the table, checkpoint's count, status's count)."""
    table = pd.read_parquet(path / "mi.parquet") if (path / "mi.parquet").exists() else None
    ckpt = path / "checkpoint.pt"
    counted = torch.load(ckpt, weights_only=False)["evals_done"] if ckpt.exists() else 0
    evals = 0 if table is None else len(table[["epoch", "step"]].drop_duplicates())
    return evals, counted, read_status(path)["evals_done"]


def test_a_job_flushes_every_flush_s_and_its_files_agree_between_flushes(tmp_path):
    trainer = TrainerConfig(epochs=4, batch_size=64, eval="log:9")
    seen = []

    class Watch(Clocked):
        def record(self, rows, done, train_state):
            super().record(rows, done, train_state)
            seen.append((done, *on_disk(self.path)))

    torch.manual_seed(0)
    model = MLP(DATA.in_shape, DATA.n_classes, [32, 16])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    recorder = Watch(tmp_path, flush_s=3)
    recorder.prepare(False)
    rows = run(model, opt, DATA, partial(binning, bins=10), trainer, 0, recorder=recorder)
    total = len(frame(rows)[["epoch", "step"]].drop_duplicates())
    assert total >= 8 and [s[0] for s in seen] == list(range(1, total + 1))
    for done, table, ckpt, status in seen:  # the files move together, every 3 evaluations
        assert table == ckpt == status == done - done % 3, seen
    assert recorder.flushes == 1 + total // 3  # begin, then every third evaluation
    assert on_disk(tmp_path) == (total, total, total)  # and at the end
    assert read_status(tmp_path)["status"] == "completed"


def test_a_flush_keeps_the_state_of_its_evaluation_not_the_state_training_reached(tmp_path):
    """Between flushes training goes on in the very tensors the last evaluation's state
    names: the job copies that state, so a flush at a signal writes the evaluation's state."""
    trainer = TrainerConfig(epochs=4, batch_size=64)
    whole = job(tmp_path / "whole", trainer)
    torch.manual_seed(0)
    model = MLP(DATA.in_shape, DATA.n_classes, [32, 16])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    cut = Clocked(tmp_path / "cut", flush_s=100)  # no flush while it runs

    class Signalled(Exception):
        pass

    def stop_later(optimizer, args, kwargs):  # a signal in the middle of epoch 3's steps
        if cut.evals_done == 3:
            stop_later.steps += 1
            if stop_later.steps == 5:
                raise Signalled

    stop_later.steps = 0
    cut.prepare(False)
    handle = opt.register_step_pre_hook(stop_later)
    try:
        with pytest.raises(Signalled):
            run(model, opt, DATA, partial(binning, bins=10), trainer, 0, recorder=cut)
    finally:
        handle.remove()
    assert on_disk(tmp_path / "cut") == (0, 0, 0)  # nothing flushed yet: rows in memory
    cut.interrupted(KeyboardInterrupt())  # what the job's handler does at SIGINT
    assert on_disk(tmp_path / "cut") == (3, 3, 3)
    assert read_status(tmp_path / "cut")["status"] == "interrupted"
    resumed = job(tmp_path / "cut", trainer, resume=True)
    cols = [c for c in frame(whole).columns if c != "run_id"]
    pd.testing.assert_frame_equal(frame(resumed)[cols], frame(whole)[cols], check_exact=True)


WHERE = ("before", "after_table", "after_checkpoint")


@pytest.mark.parametrize("draw", range(3))
def test_kills_at_random_points_between_flushes_resume_to_the_uninterrupted_table(tmp_path, draw):
    """Killed again and again, at random evaluations and at random places in a flush, with
    flushes every 2 or 3 evaluations: each resume loses at most the evaluations since the last
    flush, and the job ends with the uninterrupted table, on disk and in memory."""
    rng = random.Random(draw)
    trainer = TrainerConfig(epochs=4, batch_size=64, eval="log:12")
    whole = job(tmp_path / "whole", trainer)
    total = len(frame(whole)[["epoch", "step"]].drop_duplicates())
    flush_s = rng.choice([2, 3])
    path, resume, kills, rows = tmp_path / "cut", False, 0, None
    while rows is None:
        start = on_disk(path)[1] if resume else 0
        where = rng.choice(WHERE)
        flushes = range(start + flush_s, total + 1, flush_s)  # where this run's flushes fall
        at = rng.choice(flushes if where != "before" and flushes else range(start + 1, total + 1))
        kill = (at, where if flushes else "before") if kills < 3 else None
        torch.manual_seed(0)
        model = MLP(DATA.in_shape, DATA.n_classes, [32, 16])
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        recorder = Clocked(path, flush_s, kill=kill)
        recorder.prepare(resume)
        try:
            rows = run(model, opt, DATA, partial(binning, bins=10), trainer, 0,
                       recorder=recorder, resume=resume)  # fmt: skip
        except Killed:
            table, ckpt, status = on_disk(path)
            # each file counts at most what the one written before it holds
            assert status <= ckpt <= table, (kill, table, ckpt, status)
            assert kill[0] - ckpt <= flush_s, (kill, ckpt)  # at most flush_s of work lost
            assert ckpt >= start  # a resume never goes back
            kills += 1
        assert recorder.started == start  # it resumed from its files, not from scratch
        resume = True
    assert kills == 3
    cols = [c for c in frame(whole).columns if c != "run_id"]
    pd.testing.assert_frame_equal(frame(rows)[cols], frame(whole)[cols], check_exact=True)
    table = pd.read_parquet(path / "mi.parquet")
    pd.testing.assert_frame_equal(frame(table)[cols], frame(whole)[cols], check_exact=True)
    assert read_status(path)["evals_done"] == total


def test_a_stack_killed_between_flushes_resumes_to_the_uninterrupted_tables(tmp_path):
    """Three seeds flushing every 2 evaluations, killed in the middle of the second seed's
    flush: the first seed's files are one flush ahead of the others; each resumes from its
    own files to its uninterrupted table."""
    seeds = [0, 1, 2]
    trainer = TrainerConfig(epochs=4, batch_size=64, eval="log:9")

    def stack(recorders, resume=False):
        members = []
        for s, r in zip(seeds, recorders):
            torch.manual_seed(s)
            members.append(Member(MLP(DATA.in_shape, DATA.n_classes, [32, 16]), s,
                                  partial(binning, bins=10), r))  # fmt: skip
        params = [p for m in members for p in m.model.parameters()]
        train_stack(members, torch.optim.Adam(params, lr=1e-3), DATA, trainer, resume=resume)
        return {m.seed: frame(m.recorder.rows) for m in members}

    whole = stack([Recorder() for _ in seeds])
    cut = [Clocked(tmp_path / str(s), 2, kill=(4, "after_table") if s == 1 else None)
           for s in seeds]  # fmt: skip
    for r in cut:
        r.prepare(False)
    with pytest.raises(Killed):
        stack(cut)
    assert [on_disk(tmp_path / str(s)) for s in seeds] == [(4, 4, 4), (4, 2, 2), (2, 2, 2)]
    again = [Clocked(tmp_path / str(s), 2) for s in seeds]
    for r in again:
        r.prepare(True)
    resumed = stack(again, resume=True)
    for s in seeds:
        cols = [c for c in whole[s].columns if c != "run_id"]
        pd.testing.assert_frame_equal(resumed[s][cols], whole[s][cols], check_exact=True)
        table = frame(pd.read_parquet(tmp_path / str(s) / "mi.parquet"))
        pd.testing.assert_frame_equal(table[cols], whole[s][cols], check_exact=True)


@pytest.mark.parametrize("value", ["-1", "inf", "true", "'5'"])
def test_a_bad_flush_s_names_key_rule_and_value(compose_cfg, value):
    from infoflow.spec import ConfigError, JobSpec

    with pytest.raises(ConfigError, match=r"runtime.flush_s must be a finite number >= 0"):
        JobSpec.of(compose_cfg(f"runtime.flush_s={value}"))
    assert JobSpec.of(compose_cfg("runtime.flush_s=0")).runtime["flush_s"] == 0
    assert JobSpec.of(compose_cfg()).runtime["flush_s"] == 5
