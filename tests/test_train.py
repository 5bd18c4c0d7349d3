"""The training loop: schedules, exact continuation, divergence, threads, job-key validation."""

from __future__ import annotations

import io
import math
from functools import partial

import pytest
import torch

from benchmarks.single import Trainer, run
from infoflow.estimators import binning
from infoflow.io import read_status
from infoflow.spec import ConfigError, validate
from infoflow.sweep.job import Job
from infoflow.sweep.runner import resolve_threads
from infoflow.training.data import load_digits
from infoflow.training.loop import TrainerConfig
from infoflow.training.models import MLP
from infoflow.training.trainer import TrainingDiverged

DATA = load_digits()  # 1,437 train / 360 eval


def build(seed: int = 0, data=DATA):
    torch.manual_seed(seed)
    model = MLP(data.in_shape, data.n_classes, [32, 16])
    return model, torch.optim.Adam(model.parameters(), lr=1e-3)


def go(trainer: TrainerConfig, seed: int = 0, **kw):
    model, opt = build(seed)
    rows = run(model, opt, DATA, partial(binning, bins=10), trainer, seed, **kw)
    return rows, model


def same_params(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_default_schedule_rows_epochs_and_steps():
    rows, _ = go(TrainerConfig(epochs=3, batch_size=64))
    per_epoch = math.ceil(1437 / 64)
    assert [(r["epoch"], r["step"], r["layer"]) for r in rows] == [
        (e, e * per_epoch, layer) for e in range(4) for layer in (1, 2)
    ]
    assert all(isinstance(r["epoch"], int) for r in rows)
    assert math.isnan(rows[0]["train_loss"]) and not math.isnan(rows[-1]["train_loss"])
    assert rows[-1]["eval_acc"] > rows[0]["eval_acc"] + 0.2  # it learned


def test_evaluating_more_often_does_not_change_training():
    """log-spaced evaluation (mid-epoch stops) trains exactly the same net as per-epoch."""
    rows_log, model_log = go(TrainerConfig(epochs=3, batch_size=64, eval="log:12"))
    rows_ep, model_ep = go(TrainerConfig(epochs=3, batch_size=64))
    assert same_params(model_log, model_ep)
    steps = sorted({r["step"] for r in rows_log})
    assert steps[0] == 0 and steps[-1] == 3 * 23 and any(0 < s < 23 for s in steps)
    assert all(isinstance(r["epoch"], float) for r in rows_log)
    last_log = [r for r in rows_log if r["step"] == 69]
    last_ep = [r for r in rows_ep if r["step"] == 69]
    assert [r["I_XT"] for r in last_log] == [r["I_XT"] for r in last_ep]
    assert last_log[0]["eval_loss"] == last_ep[0]["eval_loss"]


def test_trainer_state_round_trip_mid_epoch_continues_bit_for_bit():
    straight = Trainer(*build(), DATA, 64, seed=3)
    straight.train_to(60)
    first = Trainer(*build(), DATA, 64, seed=3)
    first.train_to(30)  # mid epoch 2 (23 steps per epoch)
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    second = Trainer(*build(seed=99), DATA, 64, seed=99)  # other init, other generator
    second.load_state_dict(torch.load(buf, weights_only=False))
    stats = second.train_to(60)
    assert second.step == 60 and same_params(second.model, straight.model)
    assert stats["train_loss"] > 0


def test_nan_loss_stops_keeps_rows_and_marks_status(tmp_path):
    bad = DATA.__class__("digits", DATA.x_train.clone(), DATA.y_train, DATA.x_eval, DATA.y_eval)
    bad.x_train[5] = float("nan")
    torch.manual_seed(0)
    model = MLP(bad.in_shape, bad.n_classes, [8])
    opt = torch.optim.Adam(model.parameters())
    job = Job(tmp_path, config_hash="h", multirun=True)
    with job.running():  # in a sweep the job ends quietly, its status says why
        run(model, opt, bad, binning, TrainerConfig(epochs=3), 0, recorder=job)
    assert [r["epoch"] for r in job.rows] == [0]  # the untrained point was measured and kept
    status, _ = read_status(tmp_path)
    assert status["status"] == "failed" and "diverged" in status["error"]
    assert (status["evals_done"], status["evals_total"]) == (1, 4)
    assert status["run_id"] == job.run_id
    assert job.load_checkpoint()["evals_done"] == 1
    with pytest.raises(SystemExit, match=r"train_loss is nan.*optimizer\.lr"):  # a single run
        with Job(tmp_path / "single", config_hash="h", multirun=False).running():
            run(*build(), bad, binning, TrainerConfig(epochs=3), 0)


def test_divergence_is_a_training_diverged_error():
    bad = DATA.__class__("digits", DATA.x_train.clone(), DATA.y_train, DATA.x_eval, DATA.y_eval)
    bad.x_train[5] = float("nan")
    with pytest.raises(TrainingDiverged, match=r"over optimizer steps 1\.\.45"):
        run(*build(), bad, binning, TrainerConfig(epochs=3, batch_size=32), 0)


def test_status_json_running_then_completed(tmp_path):
    states = []

    class Watched(Job):
        def record(self, rows, done, train_state):
            states.append(read_status(tmp_path)[0])
            super().record(rows, done, train_state)

    job = Watched(tmp_path, config_hash="h", multirun=False)
    model, opt = build()
    run(model, opt, DATA, binning, TrainerConfig(epochs=2), 0, recorder=job)
    assert states[0]["status"] == "running" and states[0]["evals_done"] == 0
    assert states[-1]["evals_done"] == 2  # written after the previous evaluation
    final, _ = read_status(tmp_path)
    assert final == {
        "status": "completed",
        "error": None,
        "evals_done": 3,
        "evals_total": 3,
        "run_id": job.run_id,
        "config_hash": "h",
    }


def test_threads_follow_the_launcher(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("infoflow.sweep.runner.cores", lambda: 8)
    assert resolve_threads(3) == 3
    assert resolve_threads("auto") == 8  # basic launcher: one job at a time
    assert resolve_threads("auto", {"n_jobs": 2}) == 4
    assert resolve_threads("auto", {"n_jobs": -1}) == 1  # joblib: every core busy
    assert resolve_threads("auto", {"n_jobs": -3}) == 1  # 6 workers on 8 cores
    assert resolve_threads("auto", {"n_jobs": 16}) == 1
    assert resolve_threads("auto", {"cpus_per_task": 2, "n_jobs": None}) == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert resolve_threads("auto", {"n_jobs": 2}) == 5
    monkeypatch.delenv("OMP_NUM_THREADS")
    for n_jobs in (1, 2, 3, 4, 8, -1):
        threads = resolve_threads("auto", {"n_jobs": n_jobs})
        assert (n_jobs if n_jobs > 0 else 8) * threads <= 8


@pytest.mark.parametrize(
    "override, key",
    [
        ("trainer.eval=sometimes", "trainer.eval"),
        ("runtime.resume=maybe", "runtime.resume"),
        ("runtime.threads=0", "runtime.threads"),
        ("runtime.threads=many", "runtime.threads"),
        ("runtime.cache.enabled=2", "runtime.cache.enabled"),
        ("runtime.cache.wait_s=0", "runtime.cache.wait_s"),
        ("probe.batch_size=0", "probe.batch_size"),
    ],
)
def test_job_keys_are_validated(compose_cfg, override, key):
    cfg = compose_cfg(override)
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    assert str(info.value).startswith(f"{key} must") and "got" in str(info.value)


def test_default_job_keys_are_valid(compose_cfg):
    cfg = compose_cfg()
    validate(cfg)
    rt = cfg.runtime
    assert (cfg.trainer.eval, rt.resume, rt.threads, rt.cache.enabled, rt.device) == (
        "epoch",
        False,
        "auto",
        True,
        "auto",
    )


def test_a_long_stretch_of_training_says_how_far_it_is(monkeypatch, caplog):
    import infoflow.training.trainer as loop

    monkeypatch.setattr(loop, "PROGRESS_S", 0.0)  # every chunk is "long"
    monkeypatch.setattr(loop, "PROGRESS_BATCHES", 10)
    straight = Trainer(*build(), DATA, 64, seed=3)
    with caplog.at_level("INFO", logger=loop.__name__):
        straight.train_to(2 * straight.per_epoch)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("training: ")]
    # 46 steps in chunks of 10 that stop at each epoch's end (23 steps): a line after every
    # chunk but the last
    assert [line.split(" (")[1].split(")")[0] for line in lines] == [
        "22%; epoch 1, 10/23 of its steps",
        "43%; epoch 1, 20/23 of its steps",
        "50%; epoch 1, 23/23 of its steps",
        "72%; epoch 2, 10/23 of its steps",
        "93%; epoch 2, 20/23 of its steps",
    ]
    assert lines[0].startswith("training: step 10/46 to the next evaluation (22%")
    chunked = Trainer(*build(), DATA, 64, seed=3)
    monkeypatch.setattr(loop, "PROGRESS_BATCHES", 10**6)
    chunked.train_to(2 * chunked.per_epoch)
    assert same_params(straight.model, chunked.model)  # chunks change nothing but the log
