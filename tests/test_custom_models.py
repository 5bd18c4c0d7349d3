"""A user's own network through the real CLI, as a user runs it: the example of examples/ (a
residual net with BatchNorm and Dropout, its config in its own folder via --config-dir) keeps
every guarantee of the built-in nets: a seed's numbers alone and in a stack, shared passes,
resume after SIGKILL, the report; a `_target_` of one's own is recorded as such."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from infoflow import io

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "custom_model"
LAYERS = ["stem", "block1", "block2", "pool"]
MEASURED = ["epoch", "layer", "layer_name", "units", "I_XT", "I_TY", "train_loss", "eval_acc"]


@pytest.fixture
def example(tmp_path: Path) -> Path:
    return Path(shutil.copytree(EXAMPLE, tmp_path / "example"))


def infoflow(where: Path, *args: str, wait: bool = True, module: str = "infoflow"):
    cmd = [sys.executable, "-m", module, *args]
    env = {**os.environ, "PYTHONPATH": str(where), "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    if not wait:
        return subprocess.Popen(cmd, cwd=where, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)  # fmt: skip
    return subprocess.run(cmd, cwd=where, env=env, capture_output=True, text=True, timeout=600)


def rows(table: Path, **select) -> pd.DataFrame:
    df = pd.read_parquet(table)
    for key, value in select.items():
        df = df[df[key] == value]
    return df[MEASURED].sort_values(["epoch", "layer"]).reset_index(drop=True)


def test_the_example_stacked_with_shared_passes_gives_each_seed_its_numbers_alone(example):
    base = ("--config-dir", "conf", "model=mynet", "trainer.epochs=2", "runtime.device=cpu")
    sweep = infoflow(example, "-m", *base, "seed=0,1", "estimator=renyi,binning",
                     "hydra.sweep.dir=sw")  # fmt: skip
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    assert "seeds 0, 1 trained as one stack" in sweep.stderr + sweep.stdout
    alone = infoflow(example, *base, "seed=1", "estimator=renyi", "hydra.run.dir=alone")
    assert alone.returncode == 0, alone.stderr[-3000:]
    merged = pd.read_parquet(example / "sw" / "results.parquet")
    assert set(merged.model) == {"mynet"} and merged.run_id.nunique() == 4
    assert (
        merged.groupby("run_id")
        .layer_name.apply(lambda s: list(dict.fromkeys(s)))
        .map(lambda names: names == LAYERS)
        .all()
    )
    stacked = rows(example / "sw" / "results.parquet", seed=1, estimator="renyi")
    pd.testing.assert_frame_equal(stacked, rows(example / "alone" / "mi.parquet"), check_exact=True)
    assert stacked.I_XT.nunique() > 1  # renyi tells the layers apart: a comparison that can fail
    report = infoflow(example, "sw", module="infoflow.report")
    assert report.returncode == 0, report.stderr[-3000:]
    assert any((example / "sw").rglob("plane__*.png"))


@pytest.mark.slow
def test_the_example_killed_resumes_to_the_uninterrupted_table(example):
    base = ("--config-dir", "conf", "model=mynet", "trainer.epochs=4", "runtime.device=cpu",
            "estimator=renyi", "runtime.flush_s=0")  # fmt: skip
    whole = infoflow(example, *base, "hydra.run.dir=whole")
    assert whole.returncode == 0, whole.stderr[-3000:]
    proc = infoflow(example, *base, "hydra.run.dir=cut", wait=False)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        status = io.read_status(example / "cut")[0]
        if status is not None and status.get("evals_done", 0) >= 2:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert io.read_status(example / "cut")[0]["status"] == "running"  # killed mid-run
    again = infoflow(example, *base, "hydra.run.dir=cut", "runtime.resume=true")
    assert again.returncode == 0, again.stderr[-3000:]
    pd.testing.assert_frame_equal(
        rows(example / "cut" / "mi.parquet"), rows(example / "whole" / "mi.parquet"),
        check_exact=True,
    )  # fmt: skip


TINY = """
import math
from torch import nn
def tiny(in_shape, n_classes, width=8):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(in_shape), width), nn.ReLU(),
                         nn.Linear(width, n_classes))
"""


def test_a_target_of_ones_own_is_recorded_and_a_built_in_options_keys_are_explained(tmp_path):
    (tmp_path / "tnet.py").write_text(TINY)
    ok = infoflow(tmp_path, "model=custom", "model._target_=tnet.tiny", "probe.layers=[2]",
                  "trainer.epochs=1", "hydra.run.dir=run")  # fmt: skip
    assert ok.returncode == 0, ok.stderr[-3000:]
    df = pd.read_parquet(tmp_path / "run" / "mi.parquet")
    assert set(df.model) == {"tnet.tiny"} and set(df.layer_name) == {"2"}
    assert set(df.units) == {8}
    on_mlp3 = infoflow(tmp_path, "model._target_=tnet.tiny", "hydra.run.dir=bad")
    assert on_mlp3.returncode == 1
    assert "model.hidden is not a key of model tnet.tiny" in on_mlp3.stderr
    assert "start from model=custom" in on_mlp3.stderr
    unknown = infoflow(tmp_path, "model=custom", "model._target_=tnet.tiny",
                       "probe.layers=[fc1]", "hydra.run.dir=bad2")  # fmt: skip
    assert unknown.returncode == 1
    assert "'fc1' matches no module of Sequential; its modules: 0 (Flatten)" in unknown.stderr
