"""One evaluation pass per training key: jobs that differ only in what they estimate read the
rows another job stored, and get exactly the numbers they would have computed themselves."""

from __future__ import annotations

import logging
import subprocess
import sys
from functools import partial
from pathlib import Path

import pandas as pd
import pytest
import torch

import infoflow.training.probe as train_mod
from benchmarks.single import run
from infoflow.estimators import binning
from infoflow.io import write_json
from infoflow.spec import JobSpec
from infoflow.sweep.cache import TrainCache
from infoflow.sweep.sharing import SharedEstimates, plan_path, plan_sweep
from infoflow.training.data import load_digits
from infoflow.training.loop import TrainerConfig
from infoflow.training.models import MLP

ROOT = Path(__file__).resolve().parents[1]
DATA = load_digits()
TRAINER = TrainerConfig(epochs=2, batch_size=64)
KEY = {"model": "mlp[32,16]", "data": "digits", "seed": 0, "trainer": "epochs 2 batch 64"}


def spec(bins: int = 10, output: bool = False, batch_size: int = 4096, **est) -> dict:
    estimator = {"_target_": "infoflow.estimators.binning", "_partial_": True, "bins": bins}
    return {
        "estimator": {**estimator, **est},
        "probe": {"output": output, "batch_size": batch_size},
    }


def build(cfg) -> partial:
    cfg = dict(cfg)
    assert cfg.pop("_target_") == "infoflow.estimators.binning" and cfg.pop("_partial_")
    return partial(binning, **cfg)


def job(cache: TrainCache | None, own: dict, shared: bool = True) -> list[dict]:
    torch.manual_seed(0)
    model = MLP(DATA.in_shape, DATA.n_classes, [32, 16])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    est = build(own["estimator"])
    plan_file = cache.dir / "plan.json" if cache is not None else None
    share = SharedEstimates(cache, plan_file, own, build) if cache is not None and shared else None
    return run(
        model,
        opt,
        DATA,
        est,
        TRAINER,
        0,
        probe_output=own["probe"]["output"],
        eval_batch_size=own["probe"]["batch_size"],
        cache=cache,
        shared=share,
    )


def plan(cache: TrainCache, *specs: dict) -> None:
    write_json({"specs": list(specs)}, cache.dir / "plan.json")


class CountEvaluations:
    def __init__(self, monkeypatch):
        self.calls = 0
        real = train_mod.evaluate

        def counting(*args, **kw):
            self.calls += 1
            return real(*args, **kw)

        monkeypatch.setattr(train_mod, "evaluate", counting)


def frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows)


def test_the_second_job_reads_the_rows_the_first_computed_for_it(tmp_path, monkeypatch):
    a, b = spec(bins=10), spec(bins=30)
    fresh_b = job(None, b)
    cache = TrainCache(tmp_path, KEY)
    plan(cache, a, b)
    counter = CountEvaluations(monkeypatch)
    rows_a = job(TrainCache(tmp_path, KEY), a)
    assert counter.calls == 3  # epochs 0, 1, 2: one pass each, for both specs
    rows_b = job(TrainCache(tmp_path, KEY), b)
    assert counter.calls == 3  # the second job evaluated nothing
    pd.testing.assert_frame_equal(frame(rows_b), frame(fresh_b), check_exact=True)
    assert frame(rows_a)["I_XT"].ne(frame(rows_b)["I_XT"]).any()  # bins 10 vs 30 differ


def test_a_spec_probing_the_output_gets_its_output_rows(tmp_path, monkeypatch):
    a, b = spec(bins=10), spec(bins=10, output=True)
    fresh_a, fresh_b = job(None, a), job(None, b)
    plan(TrainCache(tmp_path, KEY), a, b)
    counter = CountEvaluations(monkeypatch)
    rows_a = job(TrainCache(tmp_path, KEY), a)
    rows_b = job(TrainCache(tmp_path, KEY), b)
    assert counter.calls == 3
    pd.testing.assert_frame_equal(frame(rows_a), frame(fresh_a), check_exact=True)
    pd.testing.assert_frame_equal(frame(rows_b), frame(fresh_b), check_exact=True)
    assert set(frame(rows_b)["layer_name"]) == {"fc1", "fc2", "output"}


def test_another_eval_batch_size_is_not_shared(tmp_path, monkeypatch):
    a, b = spec(bins=10), spec(bins=10, batch_size=100)
    plan(TrainCache(tmp_path, KEY), a, b)
    counter = CountEvaluations(monkeypatch)
    job(TrainCache(tmp_path, KEY), a)
    job(TrainCache(tmp_path, KEY), b)
    assert counter.calls == 6


def test_a_failing_estimator_of_another_job_is_left_to_that_job(tmp_path, caplog):
    a, bad = spec(bins=10), spec(bins=10, strategy="no-such-strategy")
    fresh_a = job(None, a)
    plan(TrainCache(tmp_path, KEY), a, bad)
    with caplog.at_level(logging.WARNING, logger="infoflow.sweep.sharing"):
        rows_a = job(TrainCache(tmp_path, KEY), a)
    pd.testing.assert_frame_equal(frame(rows_a), frame(fresh_a), check_exact=True)
    assert "estimator.strategy" in caplog.text
    with pytest.raises(ValueError, match=r"estimator\.strategy"):
        job(TrainCache(tmp_path, KEY), bad)  # its own job meets its own error


def test_rows_are_keyed_by_the_estimator_code(tmp_path, monkeypatch):
    a, b = spec(bins=10), spec(bins=30)
    plan(TrainCache(tmp_path, KEY), a, b)
    job(TrainCache(tmp_path, KEY), a)
    monkeypatch.setattr("infoflow.io.code_version", lambda: "edited")
    counter = CountEvaluations(monkeypatch)
    job(TrainCache(tmp_path, KEY), b)
    assert counter.calls == 3  # rows stored by other estimator code are not served


def test_without_sharing_every_job_evaluates(tmp_path, monkeypatch):
    a, b = spec(bins=10), spec(bins=30)
    plan(TrainCache(tmp_path, KEY), a, b)
    counter = CountEvaluations(monkeypatch)
    job(TrainCache(tmp_path, KEY), a, shared=False)
    job(TrainCache(tmp_path, KEY), b, shared=False)
    assert counter.calls == 6


def test_estimate_spec_is_what_the_training_key_leaves_out():
    cfg = {
        "model": {"hidden": [8]},
        "data": {"name": "digits"},
        "optimizer": {"lr": 1e-3},
        "trainer": {"epochs": 2},
        "seed": 1,
        "runtime": {"device": "cpu"},
        "estimator": {"bins": 30},
        "probe": {"output": True, "batch_size": 512},
    }
    spec = JobSpec.of(cfg)
    assert spec.estimate == {
        "estimator": {"bins": 30},
        "probe": {"output": True, "batch_size": 512},
    }
    assert set(spec.training) == {"model", "data", "optimizer", "trainer", "seed", "device"}


def test_the_plan_groups_specs_by_training_config(tmp_path):
    a, b, c = spec(bins=10), spec(bins=30), spec(bins=10, output=True)
    entries = [
        (tmp_path, {"seed": 0}, a),
        (tmp_path, {"seed": 0}, b),
        (tmp_path, {"seed": 1}, c),  # alone: nothing to share
        (None, {"seed": 0}, c),  # no cache: not planned
        (tmp_path, {"seed": 0}, a),  # the same spec twice counts once
    ]
    assert plan_sweep(entries) == 1
    planned = pd.read_json(plan_path(tmp_path, {"seed": 0}), typ="series")["specs"]
    assert planned == [a, b]
    assert not plan_path(tmp_path, {"seed": 1}).exists()


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    out = subprocess.run(
        [sys.executable, "-m", "infoflow", *args], cwd=cwd, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.mark.slow
def test_a_sweep_shares_passes_and_equals_a_sweep_without_cache(tmp_path):
    sweep = ["-m", "model=mlp1", "estimator=binning,kde", "probe.output=false,true"]
    # one thread in both: without the cache the four jobs are four units in two workers, with
    # it one unit in the launching process, and runtime.threads=auto would differ (cores / 2)
    small = ["trainer.epochs=1", "runtime.threads=1"]
    on = cli(*sweep, *small, f"hydra.sweep.dir={tmp_path / 'on'}", cwd=tmp_path)
    off = cli(
        *sweep,
        *small,
        "runtime.cache.enabled=false",
        f"hydra.sweep.dir={tmp_path / 'off'}",
        cwd=tmp_path,
    )
    log = on.stdout + on.stderr
    assert "1 training config(s) share their evaluation passes" in log
    assert log.count("rows from another job's evaluation") == 3 * 2  # 3 jobs x epochs 0, 1
    assert "rows from another job" not in off.stdout + off.stderr
    key = ["estimator", "probe.output", "epoch", "layer"]
    a = pd.read_parquet(tmp_path / "on" / "results.parquet").sort_values(key)
    b = pd.read_parquet(tmp_path / "off" / "results.parquet").sort_values(key)
    a, b = a.drop(columns="run_id").reset_index(drop=True), b.drop(columns="run_id")
    b = b[a.columns].reset_index(drop=True)
    assert len(a) == 2 * 2 * (1 + 2)  # 2 estimators x 2 points x (fc1 | fc1 + output)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
