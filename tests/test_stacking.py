"""Seeds trained together as one stacked model, planned by infoflow's launcher: a seed's numbers
do not depend on its stack-mates, faults stay per seed, a killed stack resumes exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra.errors import ConfigCompositionException

from infoflow import io
from infoflow import io as io_mod
from infoflow.estimators import binning
from infoflow.sweep.cache import TrainCache
from infoflow.sweep.job import Job
from infoflow.sweep.launcher import MAX_STACK, LauncherError, PlannedJob, check_options, make_stacks
from infoflow.training.data import load_digits
from infoflow.training.loop import Member, Recorder, TrainerConfig, train_stack
from infoflow.training.models import CNN, MLP
from infoflow.training.trainer import StackTrainer

DATA = load_digits()
TRAINER = TrainerConfig(epochs=3, batch_size=64)
EST = partial(binning, bins=10)


def net(seed: int, kind: str = "mlp") -> torch.nn.Module:
    torch.manual_seed(seed)
    if kind == "cnn":
        return CNN(DATA.in_shape, DATA.n_classes, channels=4)
    if kind == "narrow":  # layers as narrow as the IB papers' (a batched matmul differed there)
        return MLP(DATA.in_shape, DATA.n_classes, [10, 7], activation="tanh")
    return MLP(DATA.in_shape, DATA.n_classes, [32, 16])


def stack(seeds, kind="mlp", recorders=None, caches=None, trainer=TRAINER, **kw):
    """Run seeds as one stack; return each seed's rows (a recorder per seed)."""
    recorders = recorders or [Recorder() for _ in seeds]
    caches = caches or [None] * len(seeds)
    members = [Member(net(s, kind), s, EST, r, c) for s, r, c in zip(seeds, recorders, caches)]
    params = [p for m in members for p in m.model.parameters()]
    train_stack(members, torch.optim.Adam(params, lr=1e-3), DATA, trainer, **kw)
    return {m.seed: pd.DataFrame(m.recorder.rows) for m in members}


def equal(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    pd.testing.assert_frame_equal(
        a.reset_index(drop=True), b.reset_index(drop=True), check_exact=True
    )
    return True


# ---------------------------------------------------------------------------------------------
# numbers


@pytest.mark.parametrize("kind", ["mlp", "narrow", "cnn"])
def test_seed_3_alone_and_in_a_stack_of_8_give_identical_tables(kind):
    """On every thread count the CPU gives (the last batch of each epoch is short: 29 of 64)."""
    alone = stack([3], kind)[3]
    stacked = stack(list(range(8)), kind)
    assert equal(stacked[3], alone)
    assert len(alone) == 4 * 2  # epochs 0..3, two probed layers
    assert not stacked[3]["eval_loss"].equals(stacked[4]["eval_loss"])  # seeds differ: can fail


def test_a_seed_state_continues_in_a_stack_of_another_size():
    """A seed's training state (checkpoint, cache) is its net's alone: loaded mid-epoch into a
    stack of 3, it ends where the seed's straight run does."""

    def trainer(models, seeds):
        opt = torch.optim.Adam([p for m in models for p in m.parameters()])
        return StackTrainer(models, opt, DATA, 64, seeds)

    straight = trainer([net(1)], [1])
    straight.advance(40)
    first = trainer([net(1)], [1])
    first.advance(30)  # mid epoch 2 (23 steps per epoch)
    second = trainer([net(7), net(5), net(8)], [7, 99, 8])  # other init, other generator
    second.advance(30)
    second.load_state_dict(first.state_dict(0), 1)
    second.advance(40)
    for a, b in zip(second.models[1].parameters(), straight.models[0].parameters()):
        assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------
# faults per seed


class Poisoned(Recorder):
    """After the first evaluation, sets its net's weights to NaN: its next loss is NaN."""

    def __init__(self):
        super().__init__()
        self.model = None

    def record(self, rows, done, train_state):
        super().record(rows, done, train_state)
        if done == 1:
            with torch.no_grad():
                next(self.model.parameters()).fill_(float("nan"))


def test_a_diverged_seed_fails_alone_keeps_its_rows_and_the_others_finish(tmp_path):
    seeds = [0, 1, 2]
    jobs = [Job(tmp_path / str(s), config_hash="h", multirun=True) for s in seeds]
    poisoned = Poisoned()
    recorders = [jobs[0], poisoned, jobs[2]]
    members = [Member(net(s), s, EST, r) for s, r in zip(seeds, recorders)]
    poisoned.model = members[1].model
    failed = {}
    params = [p for m in members for p in m.model.parameters()]
    train_stack(
        members,
        torch.optim.Adam(params),
        DATA,
        TRAINER,
        on_error=lambda m, err: failed.setdefault(m.seed, err),
    )
    assert list(failed) == [1] and "train_loss is nan" in str(failed[1])
    assert members[1].error is failed[1]
    assert [r["epoch"] for r in poisoned.rows] == [0, 0]  # its untrained point (2 layers) kept
    alone = stack([2])[2]
    assert equal(pd.DataFrame(jobs[2].rows), alone)  # the others: as if alone
    assert json.loads((tmp_path / "0" / "status.json").read_text())["status"] == "completed"


# ---------------------------------------------------------------------------------------------
# interrupted stacks resume exactly


class Cut(Exception):
    pass


class CutJob(Job):
    """Stops the whole stack (as a kill would) before the files of evaluation stop_at + 1."""

    def __init__(self, path, stop_at=None):
        super().__init__(path, config_hash="h", multirun=True)
        self.stop_at = stop_at

    def record(self, rows, done, train_state):
        if self.stop_at is not None and done > self.stop_at:
            raise Cut
        super().record(rows, done, train_state)


@pytest.mark.parametrize("use_cache", [False, True])
def test_a_stack_cut_between_two_seeds_records_resumes_to_the_uninterrupted_tables(
    tmp_path, use_cache
):
    seeds = [0, 1, 2]
    trainer = TrainerConfig(epochs=4, batch_size=64, eval="log:7")
    whole = stack(seeds, trainer=trainer)

    def caches():
        return [TrainCache(tmp_path / "cache", {"seed": s}) for s in seeds] if use_cache else None

    # seed 1 stops the stack while recording point 3: seed 0 has it, seeds 1 and 2 do not, and
    # they resume as two stacks
    cut = [CutJob(tmp_path / str(s), stop_at=3 if s != 1 else 2) for s in seeds]
    for job in cut:
        job.prepare(resume=False)
    with pytest.raises(Cut):
        stack(seeds, recorders=cut, caches=caches(), trainer=trainer)
    assert [j.evals_done for j in cut] == [3, 2, 2]  # seed 2 never got to record its point 3
    again = [CutJob(tmp_path / str(s)) for s in seeds]
    for job in again:
        job.prepare(resume=True)
    resumed = stack(seeds, recorders=again, caches=caches(), trainer=trainer, resume=True)
    for s in seeds:
        cols = [c for c in whole[s].columns if c != "run_id"]
        assert equal(resumed[s][cols], whole[s][cols])
        table = pd.read_parquet(tmp_path / str(s) / "mi.parquet")
        assert equal(table[cols], whole[s][cols])


# ---------------------------------------------------------------------------------------------
# the launcher's plan


class Spec:
    """What the plan reads of a job spec: its seed and what it shares with its stack-mates."""

    def __init__(self, seed, **rest):
        self.seed, self.stack_key = seed, io_mod.config_hash({"model": "m", **rest})


def planned(idx, seed, **rest):
    return PlannedJob(idx, [f"seed={seed}"], None, spec=Spec(seed, **rest))


def test_stacks_hold_distinct_seeds_up_to_max_stack_in_launch_order():
    jobs = [planned(i, s) for i, s in enumerate([0, 1, 2, 3, 4])]
    jobs += [planned(5, 0, lr=2), planned(6, 0), PlannedJob(7, ["bad"], None)]
    stacks = make_stacks(jobs, max_stack=2)
    assert [[j.idx for j in s] for s in stacks] == [[0, 1], [2, 3], [4, 6], [5], [7]]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_stack": 0}, "hydra.launcher.max_stack must be an integer between 1 and.*got 0"),
        ({"max_stack": "4"}, "max_stack must be an integer between 1 and .*got '4'"),
        ({"max_stack": MAX_STACK + 1}, f"between 1 and {MAX_STACK} .*got {MAX_STACK + 1}"),
        ({"stacks": 4}, "launcher.stacks is not an option.*max_stack, stack, n_workers.*stacks=4"),
        ({"stack": 4}, "hydra.launcher.stack must be one of exact, batched .*got 4"),
    ],
)
def test_bad_launcher_options_name_key_rule_and_value(options, message):
    with pytest.raises(LauncherError, match=message):
        check_options(options)
    assert check_options({}) == 32 and check_options({"max_stack": 1}) == 1


def test_the_stack_cap_under_another_launcher_fails_at_compose(compose_cfg):
    with pytest.raises(ConfigCompositionException, match="max_stack"):
        compose_cfg("hydra/launcher=joblib", "hydra.launcher.max_stack=4", return_hydra_config=True)


def test_infoflow_launcher_is_the_default(compose_cfg):
    cfg = compose_cfg(return_hydra_config=True)
    assert cfg.hydra.launcher._target_.startswith("hydra_plugins.infoflow_launcher.")
    assert cfg.hydra.launcher.max_stack == 32


# ---------------------------------------------------------------------------------------------
# the real CLI


def cli(*args, cwd, wait=True):
    cmd = [sys.executable, "-m", "infoflow", *args]
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1"}
    if wait:
        return subprocess.run(
            cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, timeout=600,
        )  # fmt: skip
    return subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def numbers(sweep: Path) -> pd.DataFrame:
    df = pd.read_parquet(sweep / "results.parquet")
    return (
        df.drop(columns=["run_id"]).sort_values(["seed", "epoch", "layer"]).reset_index(drop=True)
    )


SEEDS = ("-m", "model=mlp1", "seed=0,1,2", "trainer.epochs=2", "runtime.device=cpu")


def test_each_job_of_a_stack_logs_its_own_seed_to_its_own_file(tmp_path):
    out = cli(*SEEDS, "hydra.sweep.dir=sw", cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:]
    for job, seed in enumerate((0, 1, 2)):
        lines = (tmp_path / "sw" / str(job) / "__main__.log").read_text().splitlines()
        evals = [line for line in lines if ": eval " in line]
        assert len(evals) == 3 and all(f"- seed {seed}: eval" in line for line in evals), lines
        assert any("seeds 0, 1, 2 trained as one stack" in line for line in lines)
        assert sum("of its ceiling" in line for line in lines) == 1  # its own job's warning
    assert out.stdout.count(": eval ") == 9  # the console has every seed's lines
    # and the saturation once, short, at the sweep's end: the detail is in each job's log
    assert "of its ceiling" not in out.stdout
    assert out.stdout.count("at its ceiling log2 n_samples") == 1


def test_a_bad_stack_cap_stops_the_sweep_before_any_job(tmp_path):
    out = cli(*SEEDS, "hydra.launcher.max_stack=0", "hydra.sweep.dir=sw", cwd=tmp_path)
    assert out.returncode == 1
    expected = "infoflow: error: hydra.launcher.max_stack must be an integer between 1 and 128"
    assert expected in out.stdout
    assert not (tmp_path / "sw" / "0").exists()


@pytest.mark.slow
def test_cli_stacks_give_the_numbers_of_jobs_run_alone_under_every_launcher(tmp_path):
    """infoflow's launcher stacks the seeds (here 2 + 1 with max_stack=2); the joblib launcher
    runs every job alone (a stack of one per job): the same tables, bit for bit."""
    stacked = cli(*SEEDS, "hydra.launcher.max_stack=2", "hydra.sweep.dir=st", cwd=tmp_path)
    assert stacked.returncode == 0, stacked.stdout[-3000:]
    assert "seeds 0, 1 trained as one stack" in stacked.stdout
    alone = cli(*SEEDS, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "runtime.threads=1",
                "hydra.sweep.dir=jl", cwd=tmp_path)  # fmt: skip
    assert alone.returncode == 0, alone.stdout[-3000:]
    logs = "".join(p.read_text() for p in (tmp_path / "jl").glob("*/*.log"))
    assert "eval 2/2" in logs and "stacked" not in logs and "seed 0: eval" not in logs
    assert equal(numbers(tmp_path / "st"), numbers(tmp_path / "jl"))
    for sweep in ("st", "jl"):
        jobs = pd.read_parquet(tmp_path / sweep / "jobs.parquet")
        assert jobs.status.tolist() == ["completed"] * 3
        assert all(
            (tmp_path / sweep / str(i) / ".hydra" / "config.yaml").exists() for i in range(3)
        )


@pytest.mark.slow
def test_cli_stack_killed_mid_group_resumes_to_the_uninterrupted_tables(tmp_path):
    # every evaluation flushed: the kill lands after evaluation 3, mid group
    args = ["-m", "model=mlp1", "seed=0,1,2,3", "trainer.epochs=12", "estimator.bins=10",
            "runtime.flush_s=0"]  # fmt: skip
    whole = cli(*args, "hydra.sweep.dir=whole", cwd=tmp_path)
    assert whole.returncode == 0, whole.stdout[-3000:]
    proc = cli(*args, "hydra.sweep.dir=cut", cwd=tmp_path, wait=False)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        st = io.read_status(tmp_path / "cut" / "3")[0]
        if st is not None and st["evals_done"] >= 3:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    states = [io.read_status(tmp_path / "cut" / str(i))[0] for i in range(4)]
    assert all(s["status"] == "running" and s["evals_done"] < 13 for s in states), states
    again = cli(*args, "hydra.sweep.dir=cut", "runtime.resume=true", cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-3000:]
    assert "resuming after evaluation" in again.stdout
    assert equal(numbers(tmp_path / "cut"), numbers(tmp_path / "whole"))
    jobs = pd.read_parquet(tmp_path / "cut" / "jobs.parquet")
    assert jobs.status.tolist() == ["completed"] * 4
