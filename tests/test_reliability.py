"""No silent wrong answers: paths where a job or sweep used to exit 0 with stale, missing or
mislabelled numbers, each run through the real CLI."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import infoflow
from infoflow.io import JOBS_TABLE, MANIFEST, SWEEP_TABLE

TINY = ("model=mlp1", "trainer.epochs=1", "runtime.device=cpu")


def cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "infoflow", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def start(*args: str, cwd: Path, group: bool = False) -> subprocess.Popen:
    """The CLI, running; ``group``: in a process group of its own (its workers too), which
    ``os.killpg`` signals as a terminal's Ctrl-C does."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "infoflow", *args],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=group,
    )  # fmt: skip


def wait_for_evaluation(status: Path, proc: subprocess.Popen, evals: int = 1) -> None:
    """Wait until the job of ``status`` has measured ``evals`` evaluations, as its log says:
    its files follow only at its next flush (``runtime.flush_s``)."""
    log = status.parent / "__main__.log"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if f"eval {evals}/" in log.read_text():
                return
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"no evaluation in {log}:\n{proc.communicate()[0][-3000:]}")


def status_of(job: Path) -> dict:
    return json.loads((job / "status.json").read_text())


# ------------------------------------------------------------------- the data's content counts


def write_idx(folder: Path, seed: int) -> None:
    """A 10-class 8x8 'MNIST' (64 train / 40 test images) as gzipped IDX files."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for stem, n in (("train", 64), ("t10k", 40)):
        labels = np.arange(n, dtype=np.uint8) % 10
        images = (rng.random((n, 8, 8)) * 255).astype(np.uint8)
        images[np.arange(n), labels % 8, :] = 255  # learnable: the label's row is bright
        head = bytes([0, 0, 8, 3]) + b"".join(int(d).to_bytes(4, "big") for d in images.shape)
        with gzip.open(folder / f"{stem}-images-idx3-ubyte.gz", "wb") as f:
            f.write(head + images.tobytes())
        with gzip.open(folder / f"{stem}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + labels.tobytes())


@pytest.mark.slow
def test_the_training_cache_follows_the_data_not_its_path(tmp_path):
    """Files rewritten under the same data.root are other data: the cache must not serve the
    nets it trained on the old files (it did: jobs of one sweep disagreed, rc 0)."""
    root, cache = tmp_path / "idx", tmp_path / "cache"
    args = ("-m", "data=mnist", f"data.root={root}", "data.download=false", "estimator.bins=4,8",
            "trainer.batch_size=16", f"runtime.cache.dir={cache}", *TINY)  # fmt: skip
    write_idx(root, seed=0)
    first = cli(*args, "hydra.sweep.dir=a", cwd=tmp_path)
    assert first.returncode == 0, first.stdout[-3000:]
    write_idx(root, seed=1)  # same names, other content
    second = cli(*args, "hydra.sweep.dir=b", cwd=tmp_path)
    assert second.returncode == 0, second.stdout[-3000:]
    a, b = (pd.read_parquet(tmp_path / d / SWEEP_TABLE) for d in ("a", "b"))
    for df in (a, b):  # the two jobs of a sweep saw the same nets
        assert df.groupby("epoch").eval_acc.nunique().eq(1).all()
    assert not np.array_equal(a.eval_loss.to_numpy(), b.eval_loss.to_numpy())
    assert len(list(cache.glob("*/key.json"))) == 2  # one training key per content


# ------------------------------------------------------------------------- resume and tables


@pytest.mark.parametrize("damage", ["deleted", "truncated", "foreign"])
def test_resume_restores_a_completed_jobs_damaged_table(tmp_path, damage):
    run = ("hydra.run.dir=run", *TINY)
    assert cli(*run, cwd=tmp_path).returncode == 0
    table = tmp_path / "run" / "mi.parquet"
    whole = pd.read_parquet(table)
    if damage == "deleted":
        table.unlink()
    elif damage == "truncated":
        table.write_bytes(table.read_bytes()[:100])
    else:
        pd.DataFrame({"x": [1]}).to_parquet(table)
    again = cli(*run, "runtime.resume=true", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "table restored from checkpoint.pt" in again.stdout + again.stderr
    pd.testing.assert_frame_equal(pd.read_parquet(table), whole)


def test_a_failed_rerun_into_a_sweep_dir_never_shows_the_old_rows(tmp_path):
    ok = cli("-m", "seed=0,1", "hydra.sweep.dir=sw", *TINY, cwd=tmp_path)
    assert ok.returncode == 0
    bad = cli("-m", "seed=0,1", "optimizer.lr=-1", "hydra.sweep.dir=sw", *TINY, cwd=tmp_path)
    assert bad.returncode == 1
    jobs = pd.read_parquet(tmp_path / "sw" / JOBS_TABLE)
    assert jobs.status.tolist() == ["failed", "failed"] and jobs.rows.tolist() == [0, 0]
    assert jobs.error.str.contains("optimizer.lr must be a finite number > 0, got -1").all()
    assert not (tmp_path / "sw" / SWEEP_TABLE).exists()
    assert not (tmp_path / "sw" / "0" / "mi.parquet").exists()
    for num, run_id in enumerate(jobs.run_id):
        assert status_of(tmp_path / "sw" / str(num))["run_id"] == run_id


def test_load_and_the_report_keep_the_job_status(tmp_path):
    proc = cli("-m", "optimizer=sgd", "optimizer.lr=1e12,0.01", "hydra.sweep.dir=sw", *TINY,
               cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 1
    df = infoflow.load(tmp_path / "sw")
    assert df.status.notna().all()
    by_lr = df.groupby("optimizer.lr").status.first().to_dict()
    assert by_lr == {1e12: "failed", 0.01: "completed"}
    job_only = infoflow.load(tmp_path / "sw" / "0" / "mi.parquet")
    assert set(job_only.status) == {"failed"}


# ------------------------------------------------------------------------ what was launched


def test_the_sweep_lists_its_jobs_before_the_first_starts(tmp_path):
    proc = cli("-m", "model=mlp1", "seed=0,1", "estimator.bins=4,8", "hydra.sweep.dir=sw",
               "trainer.epochs=1", "runtime.device=cpu", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr  # digits' 360 samples: binning saturates; the sweep says so
    assert log.count("at its ceiling log2 n_samples (binning 100%)") == 1  # once, short
    for job in range(4):  # and each job's log says it in full, with the keys to change
        job_log = (tmp_path / "sw" / str(job) / "__main__.log").read_text()
        assert job_log.count("have I(X;T) within 1% of its ceiling") == 1
        assert "fewer bins (estimator.bins)" in job_log
    listed = json.loads((tmp_path / "sw" / MANIFEST).read_text())["jobs"]
    assert len(listed) == 4
    for job in listed:  # exactly the overrides Hydra gave each job
        dir_overrides = tmp_path / "sw" / str(job["num"]) / ".hydra" / "overrides.yaml"
        assert [f"- {o}" for o in job["overrides"]] == dir_overrides.read_text().splitlines()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize(
    ("launcher", "expect"),
    [
        # one job after another, in this process
        (("max_stack=1", "n_workers=1"), ["completed", "interrupted", *["not started"] * 2]),
        # the four seeds train as one stack: all stop together
        (("max_stack=32",), ["interrupted"] * 4),
        # two stacks of two in two worker processes: the signal goes on to both
        (("max_stack=2", "n_workers=2"), ["interrupted"] * 4),
        # the same signal to the process group (the terminal's Ctrl-C): each worker gets it
        # from the terminal and from the launcher, and acts once
        (("max_stack=2", "n_workers=2", "group"), ["interrupted"] * 4),
    ],
    ids=["alone", "stacked", "workers", "workers-group"],
)
def test_a_signalled_sweep_ends_interrupted_merged_and_lists_every_job(
    tmp_path, sig, launcher, expect
):
    options = [f"hydra.launcher.{o}" for o in launcher if o != "group"]
    proc = start("-m", "model=mlp1", "seed=0,1,2,3", "trainer.epochs=40", "hydra.sweep.dir=sw",
                 *options, "runtime.device=cpu", cwd=tmp_path,
                 group="group" in launcher)  # fmt: skip
    # the running stacks' last seeds: every running job is set up and training
    running = {"max_stack=1": (1,), "max_stack=2": (1, 3), "max_stack=32": (3,)}[launcher[0]]
    for last in running:
        wait_for_evaluation(tmp_path / "sw" / str(last) / "status.json", proc)
    if "group" in launcher:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    out = proc.communicate(timeout=180)[0]
    said = "\n".join(line for line in out.splitlines() if " eval " not in line)[-4000:]
    assert proc.returncode == 128 + sig, said
    assert "Traceback" not in out, said
    assert f"interrupted by {sig.name}" in out
    jobs = pd.read_parquet(tmp_path / "sw" / JOBS_TABLE)
    assert jobs.status.tolist() == expect, said
    merged = pd.read_parquet(tmp_path / "sw" / SWEEP_TABLE)
    assert set(merged.status) == set(expect) - {"not started"}
    for i in (k for k, s in enumerate(expect) if s == "interrupted"):
        assert "runtime.resume=true" in jobs.error[i]
    assert (merged.groupby("seed").size() > 0).sum() == 4 - expect.count("not started")


@pytest.mark.slow
def test_sigint_on_a_single_run_is_one_line_and_status_interrupted(tmp_path):
    """Flushes 100 s apart: the rows measured before the signal reach the table at the signal,
    and the status counts exactly them."""
    proc = start("model=mlp1", "trainer.epochs=40", "hydra.run.dir=run", "runtime.device=cpu",
                 "runtime.flush_s=100", cwd=tmp_path)  # fmt: skip
    wait_for_evaluation(tmp_path / "run" / "status.json", proc, evals=3)
    assert status_of(tmp_path / "run")["evals_done"] == 0  # nothing flushed yet
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130 and "Traceback" not in out, out[-3000:]
    st = status_of(tmp_path / "run")
    assert st["status"] == "interrupted" and st["error"].startswith("interrupted by SIGINT")
    assert st["evals_done"] >= 4  # epoch 0 and three more, at least
    assert len(pd.read_parquet(tmp_path / "run" / "mi.parquet")) == st["evals_done"]


@pytest.mark.slow
def test_a_stacked_sweep_killed_between_flushes_resumes_to_the_uninterrupted_tables(tmp_path):
    """SIGKILL at a random instant of a stack of three seeds flushing every 0.4 s: every job's
    files agree (status <= checkpoint <= table), and the resumed sweep ends with the tables
    of the uninterrupted one."""
    import torch

    args = ("-m", "model=mlp1", "seed=0,1,2", "trainer.epochs=150", "runtime.device=cpu",
            "runtime.flush_s=0.4")  # fmt: skip
    whole = cli(*args, "hydra.sweep.dir=whole", cwd=tmp_path)
    assert whole.returncode == 0, whole.stdout[-3000:]
    proc = start(*args, "hydra.sweep.dir=cut", cwd=tmp_path)
    wait_for_evaluation(tmp_path / "cut" / "2" / "status.json", proc, evals=2)
    delay = np.random.default_rng().uniform(0, 0.6)  # a random instant, said on failure
    time.sleep(delay)
    proc.kill()
    proc.communicate(timeout=60)
    for job in range(3):
        path = tmp_path / "cut" / str(job)
        st = status_of(path)
        # before its first flush a job has neither (its status counts 0)
        ckpt, table = path / "checkpoint.pt", path / "mi.parquet"
        ckpt = torch.load(ckpt, weights_only=False)["evals_done"] if ckpt.exists() else 0
        table = pd.read_parquet(table).epoch.nunique() if table.exists() else 0
        assert st["status"] == "running" and st["evals_done"] <= ckpt <= table < 151, (
            delay, job, st, ckpt, table)  # fmt: skip
    again = cli(*args, "hydra.sweep.dir=cut", "runtime.resume=true", cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-3000:]

    def numbers(sweep: str) -> pd.DataFrame:
        df = pd.read_parquet(tmp_path / sweep / SWEEP_TABLE).drop(columns="run_id")
        return df.sort_values(["seed", "epoch", "layer"]).reset_index(drop=True)

    pd.testing.assert_frame_equal(numbers("cut"), numbers("whole"), check_exact=True)
    assert pd.read_parquet(tmp_path / "cut" / JOBS_TABLE).status.tolist() == ["completed"] * 3


# ------------------------------------------------------------------------ input to refuse


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["+modle=mlp1"], "modle is not a config key"),
        (["+estimator.bin=10"], "estimator.bin is not a key of estimator"),
        (["data=fashion_mnist", "data.root=/etc/passwd"], "data.root"),
    ],
)
def test_input_that_nothing_reads_is_refused_in_one_line(tmp_path, args, message):
    proc = cli(*args, *TINY, cwd=tmp_path)
    assert proc.returncode == 1
    assert message in proc.stderr and "Traceback" not in proc.stderr + proc.stdout
    assert "InstantiationException" not in proc.stderr and "\\n" not in proc.stderr
    assert not list(tmp_path.glob("outputs/**/mi.parquet"))
