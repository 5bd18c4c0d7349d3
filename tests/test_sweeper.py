"""infoflow's sweeper (``hydra/sweeper=infoflow``, the default): Hydra's basic sweep, each job's
config composed once under infoflow's launcher, and still checked before any job starts."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from hydra.errors import HydraException

from infoflow.sweep.sweeper import SWEEPER, batches, expand


def test_expand_is_the_cartesian_product_in_hydras_order():
    jobs = expand({"model": "mlp1,cnn"}, ["estimator.bins=10,30", "seed=0"])
    assert jobs == [
        ["model=mlp1", "estimator.bins=10", "seed=0"],
        ["model=mlp1", "estimator.bins=30", "seed=0"],
        ["model=cnn", "estimator.bins=10", "seed=0"],
        ["model=cnn", "estimator.bins=30", "seed=0"],
    ]


def test_a_key_given_twice_keeps_its_first_place_and_its_last_values():
    # hydra.sweeper.params first, the command line after it, as in Hydra's basic sweeper
    jobs = expand({"seed": "0,1", "model": "mlp1"}, ["seed=range(5,7)"])
    assert jobs == [["seed=5", "model=mlp1"], ["seed=6", "model=mlp1"]]


def test_an_interval_sweep_is_refused():
    with pytest.raises(HydraException, match="sweep type"):
        expand(None, ["optimizer.lr=interval(0.1,1.0)"])


@pytest.mark.parametrize(
    "size,expected", [(None, [[1, 2, 3]]), (-1, [[1, 2, 3]]), (2, [[1, 2], [3]])]
)
def test_batches(size, expected):
    assert batches([[1], [2], [3]], size) == [[[j] for j in b] for b in expected]


def test_a_batch_size_below_one_is_refused():
    with pytest.raises(HydraException, match="max_batch_size must be > 0, got 0"):
        batches([["seed=0"]], 0)


def test_the_default_sweeper_is_infoflows(compose_cfg):
    cfg = compose_cfg(return_hydra_config=True)
    assert cfg.hydra.sweeper._target_ == SWEEPER
    basic = compose_cfg("hydra/sweeper=basic", return_hydra_config=True)
    assert basic.hydra.sweeper._target_.endswith("BasicSweeper")


def _composed(log: str) -> int:
    return log.count("COMPOSED ")


@pytest.fixture
def counting_env(tmp_path):
    """A ``sitecustomize`` that counts the job compositions of the CLI it is put before."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import sys\n"
        "from hydra._internal.config_loader_impl import ConfigLoaderImpl\n"
        "_load = ConfigLoaderImpl.load_sweep_config\n"
        "def load_sweep_config(self, master_config, sweep_overrides):\n"
        "    sys.stderr.write('COMPOSED ' + ' '.join(sweep_overrides) + '\\n')\n"
        "    return _load(self, master_config, sweep_overrides)\n"
        "ConfigLoaderImpl.load_sweep_config = load_sweep_config\n"
    )
    import os

    return {"PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


@pytest.mark.parametrize(
    "sweeper,per_job", [("hydra/sweeper=infoflow", 1), ("hydra/sweeper=basic", 2)]
)
def test_each_job_is_composed_once_under_infoflows_launcher(
    cli, tmp_path, counting_env, sweeper, per_job
):
    # the test's own hook counts Hydra's compositions (a test may reach into Hydra; infoflow
    # does not): the basic sweeper composes every job to check the batch, then the launcher
    # again; infoflow's sweeper leaves the check to the launcher, which composes all first
    proc = cli(
        "-m", "model=mlp1", "seed=0,1", "trainer.epochs=1", sweeper,
        f"hydra.sweep.dir={tmp_path / 'sweep'}", env=counting_env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _composed(proc.stderr) == 2 * per_job
    df = pd.read_parquet(tmp_path / "sweep" / "results.parquet")
    assert sorted(df.seed.unique()) == [0, 1]


def test_a_bad_job_stops_the_sweep_before_any_job_starts(cli, tmp_path):
    for launcher in ("hydra/launcher=infoflow", "hydra/launcher=basic"):
        sweep = tmp_path / launcher.split("=")[1]
        proc = cli(
            "-m", "model=mlp1,resnet", "trainer.epochs=1", launcher, f"hydra.sweep.dir={sweep}"
        )  # fmt: skip
        assert proc.returncode != 0
        assert "Could not find 'model/resnet'" in proc.stderr
        assert not list(sweep.glob("*/mi.parquet")), launcher  # mlp1 never ran


def test_batches_run_one_after_the_other_with_their_numbers(cli, tmp_path):
    sweep = tmp_path / "sweep"
    proc = cli(
        "-m", "model=mlp1", "seed=0,1,2", "trainer.epochs=1", "hydra.sweeper.max_batch_size=2",
        f"hydra.sweep.dir={sweep}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("Launching") == 2
    manifest = json.loads((sweep / "sweep.json").read_text())["jobs"]
    assert [j["overrides"] for j in manifest] == [
        ["model=mlp1", f"seed={s}", "trainer.epochs=1"] for s in range(3)
    ]
    for num, seed in enumerate(range(3)):
        table = pd.read_parquet(sweep / str(num) / "mi.parquet")
        assert set(table.seed) == {seed}
    assert len(pd.read_parquet(sweep / "results.parquet").run_id.unique()) == 3
    assert (sweep / "multirun.yaml").is_file()
