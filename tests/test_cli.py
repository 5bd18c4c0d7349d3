"""End-to-end runs of the real CLI (`python -m infoflow`) in a temp dir, on tiny settings."""

import numpy as np
import pandas as pd
import pytest

SCHEMA = [
    "run_id", "model", "data", "optimizer", "estimator", "seed", "device", "data_source",
    "trainer.epochs", "trainer.batch_size", "model.activation", "optimizer.lr",
    "estimator.bins", "epoch", "layer", "layer_name", "units", "I_XT", "I_TY", "H_T",
    "n_samples", "train_loss", "train_acc", "eval_loss", "eval_acc",
]  # fmt: skip


def job_tables(root):
    return sorted(root.glob("outputs/runs/*/*/mi.parquet"))


def numbers(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=["run_id"]).sort_values(["epoch", "layer"]).reset_index(drop=True)


def test_single_run_writes_the_schema(cli, tmp_path):
    proc = cli("model=mlp3", "trainer.epochs=2")
    assert proc.returncode == 0, proc.stderr
    (table,) = job_tables(tmp_path)
    assert (table.parent / ".hydra" / "config.yaml").is_file()
    df = pd.read_parquet(table)
    assert list(df.columns[: len(SCHEMA)]) == SCHEMA or set(SCHEMA) <= set(df.columns)
    assert len(df) == 3 * 3  # epochs 0..2 x 3 probed layers
    assert sorted(df.epoch.unique()) == [0, 1, 2]
    assert df.layer_name.unique().tolist() == ["fc1", "fc2", "fc3"]
    assert df.units.unique().tolist() == [256, 128, 64]
    assert df.run_id.nunique() == 1
    assert (df.model == "mlp3").all() and (df.data == "digits").all()
    assert (df["estimator.bins"] == 30).all() and (df["trainer.batch_size"] == 32).all()
    assert np.isnan(df[df.epoch == 0].train_loss).all()
    assert (df[df.epoch > 0].train_acc > 0).all()
    bound = np.log2(df.n_samples)
    assert ((df.I_XT >= 0) & (df.I_XT <= bound + 1e-9)).all()
    assert ((df.I_TY >= 0) & (df.I_TY <= df.H_T + 1e-9)).all()


def test_same_seed_same_numbers_other_seed_other_numbers(cli, tmp_path):
    for seed in (0, 0, 1):
        assert cli("model=mlp1", "trainer.epochs=1", "estimator.bins=4", f"seed={seed}",
                   "runtime.device=cpu").returncode == 0  # fmt: skip
    a, b, c = (pd.read_parquet(p) for p in job_tables(tmp_path))
    by_seed = {int(t.seed.iloc[0]): t for t in (a, b, c)}
    same = [t for t in (a, b, c) if t.seed.iloc[0] == 0]
    pd.testing.assert_frame_equal(numbers(same[0]), numbers(same[1]))
    assert same[0].run_id.iloc[0] != same[1].run_id.iloc[0]
    assert not np.allclose(by_seed[0].train_loss.iloc[-1], by_seed[1].train_loss.iloc[-1])


def test_small_multirun_merges_every_job(cli, tmp_path):
    proc = cli("-m", "model=mlp1,cnn", "estimator.bins=4,10", "trainer.epochs=1")
    assert proc.returncode == 0, proc.stderr
    (merged,) = tmp_path.glob("outputs/multirun/*/*/results.parquet")
    jobs = sorted(merged.parent.glob("*/mi.parquet"))
    assert len(jobs) == 4
    df = pd.read_parquet(merged)
    assert df.run_id.nunique() == 4
    assert len(df) == sum(len(pd.read_parquet(j)) for j in jobs) == 2 * (2 * 1 + 2 * 2)
    assert set(zip(df.model, df["estimator.bins"])) == {
        ("mlp1", 4), ("mlp1", 10), ("cnn", 4), ("cnn", 10)
    }  # fmt: skip


@pytest.mark.parametrize(
    "args,expected",
    [
        (["model=resnet"], "Could not find 'model/resnet'"),
        (
            ["estimator.bins=1"],
            "estimator.bins must be an integer >= 2 (or null when estimator.bin_width is set), "
            "got 1",
        ),
        (["trainer.epochs=0"], "trainer.epochs must be an integer >= 1 and <= 1000000, got 0"),
        (["trainer.batch_size=0"], "trainer.batch_size must be an integer >= 1, got 0"),
        (["model.activation=gelu"], "model.activation must be one of relu, tanh, got 'gelu'"),
        (["data=imagenet"], "Could not find 'data/imagenet'"),
        (["estimator=mine"], "Could not find 'estimator/mine'"),
        (["trainer.eval=log:1"], "trainer.eval must be 'epoch', an integer K >= 1"),
        (["estimator=kde", "estimator.noise_var=0"], "estimator.noise_var must be a number > 0"),
    ],
)
def test_bad_input_stops_before_training(cli, tmp_path, args, expected):
    proc = cli(*args)
    assert proc.returncode != 0
    assert expected in proc.stderr + proc.stdout
    assert not list(tmp_path.glob("outputs/**/mi.parquet"))


def test_unknown_option_lists_the_valid_ones(cli):
    proc = cli("model=resnet")
    assert all(name in proc.stderr for name in ("mlp1", "mlp3", "mlp5", "cnn"))


def test_absent_device_is_refused(cli, tmp_path):
    # the GPUs hidden as the submitit launchers hide them by default: absent on any machine
    proc = cli("runtime.device=cuda", env={"CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode != 0
    assert "runtime.device must be present on this machine, got 'cuda'" in proc.stderr
    assert "CUDA_VISIBLE_DEVICES is '' in this job's environment" in proc.stderr
    assert "hydra.launcher.gpus_per_node" in proc.stderr
    assert not list(tmp_path.glob("outputs/**/mi.parquet"))


def test_auto_device_says_when_the_gpus_are_hidden(cli, tmp_path):
    proc = cli(
        "trainer.epochs=1", "model=mlp1", "runtime.device=auto", env={"CUDA_VISIBLE_DEVICES": "-1"}
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (
        "runtime.device=auto runs on the CPU: CUDA_VISIBLE_DEVICES is '-1'"
        in proc.stdout + proc.stderr
    )
    assert list(tmp_path.glob("outputs/**/mi.parquet"))
    quiet = cli(
        "trainer.epochs=1", "model=mlp1", "runtime.device=auto", env={"CUDA_VISIBLE_DEVICES": "0"}
    )
    assert quiet.returncode == 0 and "runs on the CPU" not in quiet.stdout + quiet.stderr


def test_missing_data_says_where_it_looked(cli, tmp_path):
    empty = tmp_path / "nothing-here"
    proc = cli("data=mnist", f"data.root={empty}", "data.download=false")
    assert proc.returncode != 0
    assert f"no mnist IDX files in {empty}" in proc.stderr
    assert "train-images-idx3-ubyte" in proc.stderr


def test_a_bad_job_in_a_sweep_fails_alone(cli, tmp_path):
    """A config error in one job of a sweep marks it failed; the others run; the sweep exits 1."""
    proc = cli("-m", "model=mlp1", "model.activation=gelu,relu", "trainer.epochs=1",
               "hydra.sweep.dir=sw")  # fmt: skip
    assert proc.returncode == 1
    assert "model.activation must be one of relu, tanh, got 'gelu'" in proc.stdout + proc.stderr
    jobs = pd.read_parquet(tmp_path / "sw" / "jobs.parquet")
    assert jobs.status.tolist() == ["failed", "completed"]
    assert "model.activation" in jobs.error[0]
    assert not (tmp_path / "sw" / "0" / "mi.parquet").exists()
    assert len(pd.read_parquet(tmp_path / "sw" / "results.parquet")) == 2  # job 1: epochs 0, 1


def test_help_names_infoflow_its_commands_and_where_outputs_go(cli):
    proc = cli("--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("infoflow: ")
    assert "powered by Hydra" not in proc.stdout
    assert "infoflow -m model=mlp1,mlp3,mlp5,cnn estimator.bins=10,30" in proc.stdout
    assert "hydra.sweep.dir=DIR" in proc.stdout and "hydra.run.dir=DIR" in proc.stdout
    assert "estimator: binning" in proc.stdout  # the groups and their options follow
