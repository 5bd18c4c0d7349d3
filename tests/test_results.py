"""Result I/O: atomic writes, the unique directory resolver, merging a sweep, jobs summary."""

from __future__ import annotations

import json
import logging
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from infoflow.io import JOBS_TABLE, MANIFEST, SWEEP_TABLE
from infoflow.io import read_table as read_job_table
from infoflow.io import write_json as write_json_atomic
from infoflow.io import write_parquet as write_parquet_atomic
from infoflow.sweep import merge as results
from infoflow.sweep.callbacks import MergeResults
from infoflow.sweep.merge import merge_sweep


def job_rows(run_id: str, epochs: int, layers: int = 3, **extra) -> pd.DataFrame:
    """A small infoflow-shaped table: epochs 0..epochs-1 x layers 1..layers."""
    e, lay = np.meshgrid(np.arange(epochs), np.arange(1, layers + 1), indexing="ij")
    n = e.size
    return pd.DataFrame(
        {
            "run_id": run_id,
            "model": "mlp3",
            "epoch": e.ravel(),
            "layer": lay.ravel(),
            "I_XT": np.linspace(1, 2, n),
            "I_TY": np.linspace(0, 1, n),
            **extra,
        }
    )


def make_job(
    root: Path,
    num: int | str,
    table: pd.DataFrame | bytes | None,
    status: dict | None,
    overrides: list[str] | None = None,
) -> Path:
    job = root / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(
        "".join(f"- {o}\n" for o in (overrides or [f"seed={num}"]))
    )
    if isinstance(table, pd.DataFrame):
        table.to_parquet(job / "mi.parquet", index=False)
    elif isinstance(table, bytes):
        (job / "mi.parquet").write_bytes(table)
    if status is not None:
        (job / "status.json").write_text(json.dumps(status))
    return job


def status(state: str, run_id: str, done: int, total: int = 3, error: str | None = None):
    return {
        "status": state,
        "error": error,
        "evals_done": done,
        "evals_total": total,
        "run_id": run_id,
    }


# ---------------------------------------------------------------------------- atomic writes


def test_atomic_parquet_write_replaces_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "sub" / "mi.parquet"
    write_parquet_atomic(job_rows("a", 1), path)
    write_parquet_atomic(job_rows("a", 2), path)
    assert len(pd.read_parquet(path)) == 6
    assert sorted(p.name for p in path.parent.iterdir()) == ["mi.parquet"]


def test_atomic_write_follows_the_umask_not_mkstemp_0600(tmp_path):
    old = os.umask(0o022)
    try:
        write_parquet_atomic(job_rows("a", 1), tmp_path / "mi.parquet")
        write_json_atomic({"status": "running"}, tmp_path / "status.json")
    finally:
        os.umask(old)
    for name in ("mi.parquet", "status.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


def test_failed_write_keeps_the_old_file_and_cleans_up(tmp_path, monkeypatch):
    path = tmp_path / "mi.parquet"
    write_parquet_atomic(job_rows("a", 2), path)

    def boom(self, tmp, **kw):
        Path(tmp).write_bytes(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", boom)
    with pytest.raises(OSError, match="disk full"):
        write_parquet_atomic(job_rows("a", 3), path)
    monkeypatch.undo()
    assert len(pd.read_parquet(path)) == 6  # the old, complete table
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mi.parquet"]


def test_json_atomic_roundtrip(tmp_path):
    write_json_atomic({"status": "failed", "error": "loss is nan"}, tmp_path / "status.json")
    assert json.loads((tmp_path / "status.json").read_text())["error"] == "loss is nan"


# ---------------------------------------------------------------------------- unique dirs


def test_run_and_sweep_dirs_differ_between_two_composes_in_the_same_second(compose_cfg):
    pattern = r"outputs/{}/\d{{4}}-\d{{2}}-\d{{2}}/\d{{2}}-\d{{2}}-\d{{2}}-[0-9a-f]{{6}}"
    a = compose_cfg(return_hydra_config=True)
    b = compose_cfg(return_hydra_config=True)
    dirs = []
    for cfg in (a, b):
        run, sweep = str(cfg.hydra.run.dir), str(cfg.hydra.sweep.dir)
        assert re.fullmatch(pattern.format("runs"), run), run
        assert re.fullmatch(pattern.format("multirun"), sweep), sweep
        assert str(cfg.hydra.run.dir) == run  # drawn once per config, then cached
        dirs.append(run)
    assert dirs[0] != dirs[1]


def test_resolver_value_survives_hydras_copy_cache_into_job_configs():
    cfg = OmegaConf.create({"d": "x-${infoflow.unique:}"})
    first = str(cfg.d)
    job = OmegaConf.create({"d": "x-${infoflow.unique:}"})
    OmegaConf.copy_cache(from_config=cfg, to_config=job)  # what Hydra does per sweep job
    assert str(job.d) == first


# ---------------------------------------------------------------------------- merge


@pytest.fixture
def sweep(tmp_path):
    """Jobs 0 completed, 1 failed (NaN), 2 killed after writing 'running', 10 killed early."""
    make_job(tmp_path, 0, job_rows("r0", 3), status("completed", "r0", 3))
    make_job(
        tmp_path, 1, job_rows("r1", 2), status("failed", "r1", 2, error="loss is nan at epoch 2")
    )
    make_job(tmp_path, 2, job_rows("r2", 1), status("running", "r2", 1))
    make_job(tmp_path, 10, job_rows("r10", 2), None)
    (tmp_path / ".submitit" / "123").mkdir(parents=True)
    (tmp_path / ".submitit" / "123" / "status.json").write_text("{}")  # not a job
    (tmp_path / "0" / ".mi.parquet.99.ab.tmp").write_bytes(b"torn")  # left by a kill
    return tmp_path


def test_merge_writes_every_row_and_one_job_row_per_job(sweep, caplog):
    with caplog.at_level(logging.INFO, logger="infoflow"):
        res = merge_sweep(sweep)
    merged = pd.read_parquet(sweep / SWEEP_TABLE)
    jobs = pd.read_parquet(sweep / JOBS_TABLE)
    assert len(merged) == 9 + 6 + 3 + 6
    assert jobs.job.tolist() == ["0", "1", "2", "10"]  # natural order, .submitit skipped
    assert jobs.status.tolist() == ["completed", "failed", "incomplete", "incomplete"]
    assert jobs.run_id.tolist() == ["r0", "r1", "r2", "r10"]  # r10 from its table
    assert jobs.rows.tolist() == [9, 6, 3, 6]
    assert jobs.evals_done.tolist() == [3, 2, 1, 2]  # r10: counted in its table
    assert jobs.overrides.tolist() == ["seed=0", "seed=1", "seed=2", "seed=10"]
    assert jobs.error[1] == "loss is nan at epoch 2"
    assert "still says running" in jobs.error[2] and "no status.json" in jobs.error[3]
    by_run = merged.groupby("run_id").status.first()
    assert by_run.to_dict() == {
        "r0": "completed",
        "r1": "failed",
        "r2": "incomplete",
        "r10": "incomplete",
    }
    assert not res.ok
    text = caplog.text
    assert "4 jobs (1 completed, 1 failed, 2 incomplete)" in text
    assert "FAILED job 1 [seed=1]: loss is nan at epoch 2 (2/3 evaluations, 6 rows kept)" in text
    assert "INCOMPLETE job 10" in text and "COMPLETED" not in text


def test_merge_of_a_clean_sweep_is_ok_and_quiet(tmp_path, caplog):
    for i in range(3):
        make_job(tmp_path, i, job_rows(f"r{i}", 2), status("completed", f"r{i}", 2, 2))
    with caplog.at_level(logging.INFO, logger="infoflow"):
        res = merge_sweep(tmp_path)
    assert res.ok and len(res.results) == 18
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_merge_writes_columns_of_mixed_types_across_jobs(tmp_path):
    make_job(tmp_path, 0, job_rows("a", 1, **{"estimator.range": None}), None)
    make_job(tmp_path, 1, job_rows("b", 1, **{"estimator.range": "[-1, 1]"}), None)
    make_job(tmp_path, 2, job_rows("c", 1, **{"estimator.range": 3}), None)
    res = merge_sweep(tmp_path)
    back = pd.read_parquet(tmp_path / SWEEP_TABLE)
    assert len(back) == len(res.results) == 9
    assert set(back["estimator.range"].dropna()) == {"[-1, 1]", "3"}


def test_merge_of_a_dir_without_jobs_warns_and_writes_nothing(tmp_path, caplog):
    res = merge_sweep(tmp_path)
    assert res.results is None and len(res.jobs) == 0
    assert "nothing to merge" in caplog.text
    assert not (tmp_path / SWEEP_TABLE).exists()


def test_read_job_table_names_what_is_wrong(tmp_path):
    good = tmp_path / "good.parquet"
    job_rows("a", 2).to_parquet(good)
    df, err = read_job_table(good)
    assert err is None and len(df) == 6
    (tmp_path / "junk.parquet").write_text("epoch,layer\n0,1\n")
    df, err = read_job_table(tmp_path / "junk.parquet")
    assert df is None and err.startswith("not a readable Parquet file (16 bytes; ArrowInvalid")
    assert "magic bytes" in err and str(tmp_path) not in err
    pd.DataFrame({"x": [1]}).to_parquet(tmp_path / "foreign.parquet")
    df, err = read_job_table(tmp_path / "foreign.parquet")
    assert df is None and err.startswith("not an infoflow table (no column run_id, epoch")


# ---------------------------------------------------------------------------- CLI


def test_cli_merge_exit_status_and_summary(sweep, tmp_path_factory):
    proc = subprocess.run(
        [sys.executable, "-m", "infoflow.sweep.merge", str(sweep)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr  # some jobs failed or are incomplete
    assert "FAILED job 1" in proc.stderr and (sweep / JOBS_TABLE).is_file()
    empty = tmp_path_factory.mktemp("empty")
    assert results.main([str(empty)]) == 2
    assert results.main([str(empty / "absent")]) == 2


def test_cli_merge_of_a_clean_sweep_exits_0(tmp_path):
    make_job(tmp_path, 0, job_rows("a", 2), status("completed", "a", 2, 2))
    assert results.main([str(tmp_path)]) == 0


# ---------------------------------------------------------------------------- callback


class _Ret:
    def __init__(self, status, value):
        self.status, self._return_value = status, value


def _job_cfg(job_dir: Path):
    return OmegaConf.create({"hydra": {"runtime": {"output_dir": str(job_dir)}}})


def test_an_error_the_job_dir_could_not_hold_is_reported(tmp_path):
    job = make_job(tmp_path, 0, None, None)
    res = merge_sweep(tmp_path, errors={str(job.absolute()): "PermissionError: [Errno 13] x"})
    assert res.jobs.status.tolist() == ["failed"]
    assert res.jobs.error[0] == "PermissionError: [Errno 13] x"
    assert res.jobs.table_error.isna().all()


def manifest(root: Path, *jobs: list[str]) -> None:
    write_json_atomic(
        {"jobs": [{"num": i, "overrides": o} for i, o in enumerate(jobs)]}, root / MANIFEST
    )


def test_every_launched_job_is_listed_even_without_a_directory(tmp_path, caplog):
    make_job(tmp_path, 0, job_rows("r0", 3), status("completed", "r0", 3))
    make_job(tmp_path, 1, job_rows("r1", 3), status("completed", "r1", 3))
    manifest(tmp_path, ["seed=0"], ["seed=1"], ["seed=2"], ["seed=3"])
    with caplog.at_level(logging.INFO, logger="infoflow"):
        res = merge_sweep(tmp_path)
    assert res.jobs.status.tolist() == ["completed", "completed", "not started", "not started"]
    assert res.jobs.overrides.tolist() == ["seed=0", "seed=1", "seed=2", "seed=3"]
    assert not res.ok and len(res.results) == 18
    assert "4 jobs (2 completed, 2 not started)" in caplog.text
    assert "NOT STARTED job - [seed=3]" in caplog.text


def test_job_dirs_of_another_sweep_are_left_out(tmp_path):
    make_job(tmp_path, 0, job_rows("new", 3), status("completed", "new", 3), ["lr=1"])
    make_job(tmp_path, 1, job_rows("old", 3), status("completed", "old", 3), ["lr=old"])
    manifest(tmp_path, ["lr=1"])
    res = merge_sweep(tmp_path)
    assert res.ok and res.jobs.job.tolist() == ["0"] and set(res.results.run_id) == {"new"}


def test_rows_of_an_earlier_run_are_never_merged_under_a_new_job(tmp_path):
    """A job that failed before training, in a dir whose table an earlier sweep wrote."""
    make_job(tmp_path, 0, job_rows("old", 3), status("failed", "new", 0, error="lr bad"))
    res = merge_sweep(tmp_path)
    assert res.results is None and not (tmp_path / SWEEP_TABLE).exists()
    assert res.jobs.rows.tolist() == [0] and res.jobs.status.tolist() == ["failed"]
    assert res.jobs.table_error[0] == "9 rows of another run (old) left out"


def test_a_merge_without_rows_removes_an_earlier_merged_table(tmp_path):
    job_rows("old", 3).to_parquet(tmp_path / SWEEP_TABLE)
    make_job(tmp_path, 0, None, status("failed", "new", 0, error="lr bad"))
    merge_sweep(tmp_path)
    assert not (tmp_path / SWEEP_TABLE).exists()


def test_merge_runs_at_exit_when_the_sweep_raised_before_its_end(sweep, monkeypatch):
    registered = []
    monkeypatch.setattr("atexit.register", registered.append)
    cb = MergeResults()
    cb.on_multirun_start(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    assert registered == [cb._merge_at_exit]
    assert not (sweep / SWEEP_TABLE).exists()
    registered[0]()  # the interpreter exits: Hydra skipped on_multirun_end
    assert len(pd.read_parquet(sweep / JOBS_TABLE)) == 4
    (sweep / JOBS_TABLE).unlink()
    registered[0]()  # merges once only
    assert not (sweep / JOBS_TABLE).exists()
