"""Launchers: the same sweep under infoflow's, basic, joblib and submitit_local gives the same
merged table; Slurm and Ray configs compose and validate without a cluster; directories never
collide."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_cli
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

# runtime.device=cpu: on a GPU machine auto would take CUDA under basic and joblib, while
# submitit_local hides the GPUs by default (hydra.launcher.gpus_per_node=0), and a net trained
# on another device has other numbers (seen on an H200 machine, 2026-11-29)
SWEEP = ("-m", "model=mlp1,mlp3", "trainer.epochs=1", "runtime.device=cpu")
LAUNCHERS = ("basic", "infoflow", "joblib", "submitit_local")


def comparable(df: pd.DataFrame) -> pd.DataFrame:
    """Numbers only: no run id, no timings; rows in a fixed order."""
    drop = [c for c in df.columns if c == "run_id" or c.startswith("time")]
    keys = [c for c in ("model", "epoch", "step", "layer") if c in df.columns]
    return df.drop(columns=drop).sort_values(keys).reset_index(drop=True)


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    """The same 2-job sweep under every launcher: {launcher: (process, sweep dir)}."""
    root = tmp_path_factory.mktemp("launchers")
    out = {}
    for launcher in LAUNCHERS:
        sweep_dir = root / launcher
        # one torch thread everywhere: joblib's workers get one each from threads=auto (every
        # core busy), and another thread count sums the same floats in another order
        threads = () if launcher == "joblib" else ("runtime.threads=1",)
        proc = run_cli(
            *SWEEP, *threads, f"hydra/launcher={launcher}", f"hydra.sweep.dir={sweep_dir}",
            cwd=root,
        )  # fmt: skip
        out[launcher] = (proc, sweep_dir)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_merge_callback_runs_under_every_launcher(sweeps, launcher):
    proc, sweep_dir = sweeps[launcher]
    assert proc.returncode == 0, proc.stderr[-3000:]
    merged = pd.read_parquet(sweep_dir / "results.parquet")
    jobs = pd.read_parquet(sweep_dir / "jobs.parquet")
    assert jobs.status.tolist() == ["completed", "completed"], jobs
    assert jobs.overrides.str.contains("model=mlp1").tolist() == [True, False]
    assert len(merged) == 2 * (1 + 3)  # evaluations x layers, mlp1 + mlp3
    assert "2 jobs (2 completed)" in proc.stderr + proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["infoflow", "joblib", "submitit_local"])
def test_parallel_launchers_give_the_basic_launchers_numbers(sweeps, launcher):
    basic = pd.read_parquet(sweeps["basic"][1] / "results.parquet")
    other = pd.read_parquet(sweeps[launcher][1] / "results.parquet")
    assert set(other.run_id).isdisjoint(basic.run_id)
    pd.testing.assert_frame_equal(comparable(basic), comparable(other), check_exact=True)


@pytest.mark.slow
def test_joblib_workers_do_not_oversubscribe_the_cores(sweeps):
    _, sweep_dir = sweeps["joblib"]
    logs = [p.read_text() for p in sorted(sweep_dir.glob("*/*.log"))]
    threads = [int(m) for t in logs for m in re.findall(r", (\d+) threads", t)]
    if not threads:
        pytest.skip("the job log does not report its torch thread count")
    cores = len(os.sched_getaffinity(0))
    assert len(threads) == 2
    # both jobs run at once in loky workers: together they use at most the cores
    assert sum(threads) <= max(cores, 2), threads


@pytest.mark.slow
def test_runs_and_sweeps_started_together_get_their_own_dirs(tmp_path):
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    cmds = [
        ["model=mlp1", "trainer.epochs=1"],
        ["model=mlp1", "trainer.epochs=1"],
        ["-m", "model=mlp1", "trainer.epochs=1"],
        ["-m", "model=mlp1", "trainer.epochs=1"],
    ]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "infoflow", *c],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for c in cmds
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, outs
    runs = sorted(tmp_path.glob("outputs/runs/*/*/mi.parquet"))
    sweeps = sorted(tmp_path.glob("outputs/multirun/*/*/results.parquet"))
    assert len(runs) == 2 and len(sweeps) == 2, outs
    for p in (*runs, *sweeps):
        assert len(pd.read_parquet(p).run_id.unique()) == 1  # nobody wrote into another's dir
    pattern = r"\d{4}-\d{2}-\d{2}/\d{2}-\d{2}-\d{2}-[0-9a-f]{6}"
    for p in runs:
        assert re.fullmatch(pattern, p.parent.relative_to(tmp_path / "outputs/runs").as_posix())
    for p in sweeps:
        rel = p.parent.relative_to(tmp_path / "outputs/multirun").as_posix()
        assert re.fullmatch(pattern, rel)
        assert (p.parent / "0" / "mi.parquet").is_file()


# ---------------------------------------------------------------------------- configs only


def test_joblib_config_composes(compose_cfg):
    cfg = compose_cfg("hydra/launcher=joblib", "hydra.launcher.n_jobs=4", return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("JoblibLauncher")
    assert launcher.n_jobs == 4 and launcher.prefer == "processes"
    assert cfg.hydra.callbacks.merge_results._target_ == "infoflow.sweep.callbacks.MergeResults"


SLURM = (
    "hydra/launcher=submitit_slurm",
    "hydra.launcher.partition=gpu",
    "hydra.launcher.account=myproject",
    "hydra.launcher.timeout_min=120",
    "hydra.launcher.gpus_per_node=1",
    "hydra.launcher.cpus_per_task=8",
    "hydra.launcher.mem_gb=32",
    "hydra.launcher.max_num_timeout=3",
    "hydra.job.name=infoflow",
)


def test_slurm_config_makes_a_valid_sbatch_script(compose_cfg, tmp_path, monkeypatch):
    """Compose, translate the keys as hydra-submitit-launcher does, let submitit write sbatch."""
    submitit = pytest.importorskip("submitit")
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from submitit.slurm.slurm import _make_sbatch_string

    cfg = compose_cfg(*SLURM, f"hydra.sweep.dir={tmp_path}", return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    params.pop("_target_")
    fake_bin = tmp_path / "bin"  # submitit checks that srun exists; nothing is submitted
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 1\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    executor = submitit.AutoExecutor(
        folder=params.pop("submitit_folder"),
        cluster="slurm",
        slurm_max_num_timeout=params.pop("max_num_timeout"),
    )
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    inner = executor._executor
    script = _make_sbatch_string(
        command="python -m infoflow", folder=inner.folder, **inner.parameters
    )
    for line in (
        "--partition=gpu",
        "--account=myproject",
        "--time=120",
        "--gpus-per-node=1",
        "--cpus-per-task=8",
        "--mem=32GB",
        "--signal=USR2@120",  # submitit's preemption/timeout signal: requeue, then resume
        f"--output={tmp_path}/.submitit/",
    ):
        assert f"#SBATCH {line}" in script, line


def test_slurm_misspelled_key_fails_at_compose(compose_cfg):
    with pytest.raises(ConfigCompositionException, match="partiton"):
        compose_cfg("hydra/launcher=submitit_slurm", "hydra.launcher.partiton=gpu")


def test_submitit_local_config_composes(compose_cfg):
    cfg = compose_cfg(
        "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=30", return_hydra_config=True
    )
    assert cfg.hydra.launcher._target_.endswith("submitit_launcher.LocalLauncher")
    assert cfg.hydra.launcher.timeout_min == 30


def test_ray_config_composes(compose_cfg):
    pytest.importorskip(
        "hydra_plugins.hydra_ray_launcher",
        reason="hydra-ray-launcher is not installed (pip install 'infoflow[ray]')",
    )
    cfg = compose_cfg(
        "hydra/launcher=ray", "+hydra.launcher.ray.init.num_cpus=4", return_hydra_config=True
    )
    assert cfg.hydra.launcher._target_.endswith("RayLauncher")
    assert cfg.hydra.launcher.ray.init.num_cpus == 4


def test_every_launcher_keeps_the_merge_callback_and_the_sweep_dir_shape(compose_cfg):
    for launcher in ("infoflow", "basic", "joblib", "submitit_local", "submitit_slurm"):
        cfg = compose_cfg(f"hydra/launcher={launcher}", return_hydra_config=True)
        assert "merge_results" in cfg.hydra.callbacks
        assert re.fullmatch(
            r"outputs/multirun/[\d-]+/\d{2}-\d{2}-\d{2}-[0-9a-f]{6}", str(cfg.hydra.sweep.dir)
        )
        assert Path(str(cfg.hydra.sweep.dir)).parts[0] == "outputs"
