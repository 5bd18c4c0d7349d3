"""The training cache: same numbers as retraining, no retraining, safe with concurrent jobs."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import socket
import time
from functools import partial
from pathlib import Path

import pandas as pd
import pytest
import torch

import infoflow.training.trainer as train_mod
from benchmarks.single import run
from infoflow.estimators import binning
from infoflow.io import write_json
from infoflow.spec import JobSpec, config_hash
from infoflow.sweep.cache import CacheTimeout, TrainCache
from infoflow.training.data import load_digits
from infoflow.training.loop import Recorder, TrainerConfig
from infoflow.training.models import MLP

DATA = load_digits()
TRAINER = TrainerConfig(epochs=3, batch_size=64)
KEY = {"model": "mlp[32,16]", "data": "digits", "seed": 0, "trainer": "epochs 3 batch 64"}


def key_of(cfg, device, fingerprint):
    """The training key of a composed config on ``device`` for data of ``fingerprint``."""
    return JobSpec.of(cfg).training_key(device.type, fingerprint)


def job(cache: TrainCache | None, bins: int = 10, recorder=None, trainer=TRAINER, **kw):
    torch.manual_seed(0)
    model = MLP(DATA.in_shape, DATA.n_classes, [32, 16])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    est = partial(binning, bins=bins)
    return run(model, opt, DATA, est, trainer, 0, recorder=recorder, cache=cache, **kw)


def same(a: list[dict], b: list[dict]) -> bool:
    """Rows equal value for value (NaN equal to NaN, floats exactly)."""
    pd.testing.assert_frame_equal(pd.DataFrame(a), pd.DataFrame(b), check_exact=True)
    return True


class CountSteps:
    """Counts optimizer steps by wrapping the hot loop."""

    def __init__(self, monkeypatch):
        self.steps = 0
        real = train_mod.train_batches

        def counting(model, optimizer, data, index_batches, sums):
            self.steps += len(index_batches)
            real(model, optimizer, data, index_batches, sums)

        monkeypatch.setattr(train_mod, "train_batches", counting)


def test_cache_gives_the_numbers_of_retraining_and_trains_once(tmp_path, monkeypatch):
    fresh_10, fresh_30 = job(None, bins=10), job(None, bins=30)
    counter = CountSteps(monkeypatch)
    cached_10 = job(TrainCache(tmp_path, KEY), bins=10)
    assert counter.steps == 3 * 23
    cached_30 = job(TrainCache(tmp_path, KEY), bins=30)  # another estimator: no training
    assert counter.steps == 3 * 23
    assert same(cached_10, fresh_10) and same(cached_30, fresh_30)
    assert [r["I_XT"] for r in fresh_10] != [r["I_XT"] for r in fresh_30]  # the test can fail
    assert len(list(Path(TrainCache(tmp_path, KEY).dir).glob("point_*.pt"))) == 4


def test_other_training_key_gets_its_own_folder(tmp_path):
    a, b = TrainCache(tmp_path, KEY), TrainCache(tmp_path, {**KEY, "seed": 1})
    assert a.dir != b.dir and a.dir.parent == b.dir.parent == tmp_path
    assert (a.dir / "key.json").exists()


class Stop(Exception):
    pass


class stop_after(Recorder):
    """A recorder that fails at its n-th point, like a job killed there."""

    def __init__(self, n_points: int) -> None:
        super().__init__()
        self.n_points = n_points

    def record(self, rows, done, train_state):
        super().record(rows, done, train_state)
        if done == self.n_points:
            raise Stop


def test_a_dead_trainer_is_taken_over_from_the_latest_state(tmp_path, monkeypatch):
    """A trainer that stopped after point 2 leaves points 0..2; the next job trains only 3."""
    fresh = job(None)
    with pytest.raises(Stop):
        job(TrainCache(tmp_path, KEY), recorder=stop_after(3))
    cache = TrainCache(tmp_path, KEY)
    assert cache.load_point(2) is not None and cache.load_point(3) is None
    counter = CountSteps(monkeypatch)
    assert same(job(cache), fresh)
    assert counter.steps == 23  # one epoch: from the stored state at point 2, not from 0


def test_a_damaged_point_file_is_retrained(tmp_path):
    fresh = job(None)
    cache = TrainCache(tmp_path, KEY)
    job(cache)
    cache.point_path(3).write_bytes(b"torn")  # not loadable: trained again
    (cache.dir / "state.pt").unlink()
    assert same(job(TrainCache(tmp_path, KEY)), fresh)


def _concurrent_job(root: str, bins: int) -> tuple[list[dict], int]:
    steps = 0
    real = train_mod.train_batches

    def counting(model, optimizer, data, index_batches, sums):
        nonlocal steps
        steps += len(index_batches)
        real(model, optimizer, data, index_batches, sums)

    train_mod.train_batches = counting
    trainer = TrainerConfig(epochs=4, batch_size=32)
    return job(TrainCache(root, KEY, poll_s=0.05), bins=bins, trainer=trainer), steps


@pytest.mark.slow  # two spawned processes import torch: ~20 s on 2 cores
def test_two_jobs_at_once_train_once_and_agree(tmp_path):
    trainer = TrainerConfig(epochs=4, batch_size=32)
    fresh = {bins: job(None, bins=bins, trainer=trainer) for bins in (10, 30)}
    ctx = mp.get_context("spawn")
    with ctx.Pool(2) as pool:
        out = pool.starmap(_concurrent_job, [(str(tmp_path), 10), (str(tmp_path), 30)])
    (rows_10, steps_10), (rows_30, steps_30) = out
    assert same(rows_10, fresh[10]) and same(rows_30, fresh[30])
    assert steps_10 + steps_30 == 4 * 45  # one job trained, the other read its points


# ---------------------------------------------------------------------------------------------
# what the key is made of


def test_training_key_ignores_estimator_probe_and_runtime_keys(compose_cfg):
    cpu = torch.device("cpu")

    def training_key(cfg, device):
        return key_of(cfg, device, "fingerprint")

    base = training_key(compose_cfg(), cpu)
    for same in (
        "estimator.bins=10",
        "estimator=per_neuron",
        "probe.output=true",
        "probe.batch_size=100",
        "runtime.resume=true",
        "runtime.threads=1",
        "runtime.cache.dir=/elsewhere",
        "runtime.device=cpu",
    ):
        assert training_key(compose_cfg(same), cpu) == base, same
    for other in (
        "seed=1",
        "model=mlp1",
        "model.activation=tanh",
        "optimizer.lr=0.01",
        "trainer.epochs=2",
        "trainer.batch_size=64",
        "trainer.eval=log:10",
        "data.split_seed=1",
    ):
        assert training_key(compose_cfg(other), cpu) != base, other
    assert training_key(compose_cfg(), torch.device("cuda")) != base
    assert training_key(compose_cfg("trainer.eval=1"), cpu) == base  # canonical form
    assert key_of(compose_cfg(), cpu, "other content") != base  # the data's content counts


def test_training_key_covers_the_code_that_trains(compose_cfg):
    """Every source file of the package counts, the runner (which seeds the weights) too."""
    import infoflow.io as io_mod

    cpu = torch.device("cpu")
    base = key_of(compose_cfg(), cpu, "f")
    sources = sorted(Path(io_mod.__file__).parent.rglob("*.py"))
    assert {"__main__.py", "runner.py", "loop.py", "models.py", "data.py"} <= {
        p.name for p in sources
    }
    real = Path.read_bytes
    main = Path(io_mod.__file__).parent / "sweep" / "runner.py"
    try:
        Path.read_bytes = lambda p: real(p) + (b"#" if p == main else b"")
        assert key_of(compose_cfg(), cpu, "f") != base
    finally:
        Path.read_bytes = real


def test_job_hash_ignores_runtime_keys_only(compose_cfg):
    base = config_hash(compose_cfg())
    runtime = ("runtime.resume=true", "runtime.threads=1", "runtime.cache.enabled=false")
    assert config_hash(compose_cfg(*runtime)) == base
    assert config_hash(compose_cfg("estimator.bins=10")) != base


def test_cache_dir_choice(compose_cfg, tmp_path):
    def root(*overrides, sweep=None):
        return JobSpec.of(compose_cfg(*overrides)).cache_root(sweep)

    assert root() is None  # single run: the job's checkpoint suffices
    assert root(sweep=str(tmp_path)) == tmp_path / ".train_cache"
    assert root("runtime.cache.enabled=false", sweep=str(tmp_path)) is None
    assert root(f"runtime.cache.dir={tmp_path}/c") == tmp_path / "c"


def test_atomic_json_leaves_no_temp_files(tmp_path):
    write_json({"a": 1}, tmp_path / "s.json")
    write_json({"a": 2}, tmp_path / "s.json")
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]
    assert pd.read_json(tmp_path / "s.json", typ="series")["a"] == 2


def test_a_failing_job_lets_go_of_the_lock_at_once(tmp_path):
    """Same process, same key (a basic-launcher sweep): the next job must not wait forever."""
    cache = TrainCache(tmp_path, KEY)
    kept = None
    try:
        job(cache, recorder=stop_after(2))  # fails while it is the trainer
    except Stop as err:
        kept = err  # its traceback keeps the job's frames alive, as Hydra's JobReturn does
    with cache.try_lock() as mine:
        assert mine and kept is not None


def test_the_lock_is_one_try_names_its_holder_and_is_let_go(tmp_path):
    """A second try at a held lock says no at once (this process too: a basic-launcher sweep
    runs its jobs in one), a waiter sees the holder's host and pid, and the holder's note goes
    with the lock."""
    first, second = TrainCache(tmp_path, KEY), TrainCache(tmp_path, KEY)
    assert second.holder() == "another process"  # nobody has held it yet
    with first.try_lock() as mine:
        assert mine
        start = time.monotonic()
        with second.try_lock() as theirs:
            assert not theirs
        assert time.monotonic() - start < 1.0  # never waits for the lock
        assert second.holder() == f"'{socket.gethostname()} pid {os.getpid()}'"
    assert second.holder() == "another process" and not (first.dir / "holder").exists()
    with second.try_lock() as theirs:
        assert theirs


def _hold_lock_and_die(root: str, ready) -> None:
    with TrainCache(root, KEY).try_lock() as mine:
        assert mine
        ready.set()
        time.sleep(60)  # killed here, holding the lock


def test_a_dead_holders_lock_is_free_at_once(tmp_path):
    """The operating system lets go of the lock with its process: a trainer killed (SIGKILL,
    no cleanup) does not block the others, and the next holder's note replaces its stale one."""
    ctx = mp.get_context("fork")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_lock_and_die, args=(str(tmp_path), ready))
    holder.start()
    try:
        assert ready.wait(30)
        cache = TrainCache(tmp_path, KEY)
        with cache.try_lock() as mine:
            assert not mine and cache.holder() == f"'{socket.gethostname()} pid {holder.pid}'"
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(30)
    with cache.try_lock() as mine:
        assert mine and cache.holder() == f"'{socket.gethostname()} pid {os.getpid()}'"


def _hold_lock(root: str, ready, stop) -> None:
    cache = TrainCache(root, KEY)
    with cache.try_lock() as mine:
        assert mine
        ready.set()
        stop.wait(60)


def test_a_waiting_job_names_the_holder_and_gives_up(tmp_path, caplog):
    """A process that holds the lock and makes no progress (stopped, hung) must not make the
    others wait forever: they log who they wait for, then fail with a clear error."""
    ctx = mp.get_context("fork")
    ready, stop = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(tmp_path), ready, stop))
    holder.start()
    try:
        assert ready.wait(30)
        cache = TrainCache(tmp_path, KEY, wait_s=0.5, poll_s=0.05)
        with caplog.at_level("INFO"), pytest.raises(CacheTimeout) as info:
            job(cache)
        assert f"pid {holder.pid}" in caplog.text and "waiting for point 0" in caplog.text
        msg = str(info.value)
        assert msg.startswith("runtime.cache.wait_s:") and f"pid {holder.pid}" in msg
    finally:
        stop.set()
        holder.join(30)
