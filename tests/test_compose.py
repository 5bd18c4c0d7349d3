"""A sweep's job configs composed once per group of seeds: every job's config equals Hydra's own
composition of its overrides, and Hydra composes only each group's first and last job."""

from __future__ import annotations

import pytest
from conftest import CONF
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode
from omegaconf import OmegaConf

from infoflow.sweep import compose
from infoflow.sweep.compose import compose_jobs, same
from infoflow.sweep.job import register_resolvers


class Counting:
    """Hydra's config loader, counting the jobs it composes."""

    def __init__(self, loader):
        self.loader, self.composed = loader, []

    def load_sweep_config(self, master, overrides):
        self.composed.append(list(overrides))
        return self.loader.load_sweep_config(master, overrides)


@pytest.fixture
def hydra_loader():
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()

        def master(*hydra_overrides: str):
            return loader.load_configuration("config", list(hydra_overrides), RunMode.MULTIRUN)

        yield loader, master


def hydras(loader, master, jobs):
    return [loader.load_sweep_config(master, list(o)) for o in jobs]


def equal(a, b) -> bool:
    return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))


SWEEPS = [
    # (the sweep's hydra overrides, every job's overrides)
    ([], [["model=mlp1", f"seed={s}"] for s in range(5)]),
    (
        ["hydra.job.config.override_dirname.exclude_keys=[seed]"],
        [
            [f"model={m}", f"seed={s}", "estimator.bins=10"]
            for m in ("mlp1", "cnn")
            for s in (3, 7, 11)
        ],
    ),
    (
        ["hydra.sweep.subdir=${hydra.job.override_dirname}"],
        [["experiment=tishby2017", f"seed={s}", "trainer.epochs=2"] for s in (0, 1, 2, 10)],
    ),
    ([], [[f"seed={s}", "data=tishby", "model=ib_net"] for s in ("007", "1_000", "12")]),
]


@pytest.mark.parametrize("hydra_overrides,jobs", SWEEPS)
def test_every_config_is_hydras_and_each_group_is_composed_twice(
    hydra_loader, hydra_overrides, jobs
):
    loader, master_of = hydra_loader
    master = master_of(*hydra_overrides)
    counting = Counting(loader)
    got = compose_jobs(counting, master, jobs)
    want = hydras(loader, master, jobs)
    assert equal(got, want)
    groups = {tuple(o for o in job if not o.startswith("seed=")) for job in jobs}
    assert len(counting.composed) == 2 * len(groups) < len(jobs)
    assert [OmegaConf.select(c, "seed") for c in got] == [OmegaConf.select(c, "seed") for c in want]
    assert [c.hydra.job.override_dirname for c in got] == [
        c.hydra.job.override_dirname for c in want
    ]


def test_jobs_that_differ_in_more_than_the_seed_are_composed_each(hydra_loader):
    loader, master_of = hydra_loader
    master = master_of()
    jobs = [["model=mlp1", "seed=0"], ["model=mlp3", "seed=1"], ["++seed=2"], ["model=cnn"]]
    jobs += [["model=mlp5", "seed=5"], ["model=mlp5", "seed=6"]]  # a group of two: composed
    counting = Counting(loader)
    assert equal(compose_jobs(counting, master, jobs), hydras(loader, master, jobs))
    assert len(counting.composed) == len(jobs)


def test_a_derived_config_unlike_hydras_makes_its_group_composed(hydra_loader, monkeypatch):
    loader, master_of = hydra_loader
    master = master_of()
    jobs = [["model=mlp1", f"seed={s}"] for s in range(4)]
    right = compose.derive

    def wrong(base, master, overrides):
        cfg = right(base, master, overrides)
        cfg.trainer.epochs = 99  # a difference the check must see
        return cfg

    monkeypatch.setattr(compose, "derive", wrong)
    counting = Counting(loader)
    got = compose_jobs(counting, master, jobs)
    assert equal(got, hydras(loader, master, jobs))
    assert len(counting.composed) == len(jobs)
    assert {c.trainer.epochs for c in got} == {5}


def test_job_dirs_named_by_override_dirname(cli, tmp_path):
    sweep = tmp_path / "sweep"
    proc = cli(
        "-m", "model=mlp1", "seed=0,1,2", "trainer.epochs=1",
        "hydra.sweep.subdir=${hydra.job.override_dirname}", f"hydra.sweep.dir={sweep}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    for s in range(3):
        job = sweep / f"model=mlp1,seed={s},trainer.epochs=1"
        assert OmegaConf.load(job / ".hydra" / "config.yaml").seed == s
        assert OmegaConf.load(job / ".hydra" / "overrides.yaml") == [
            "model=mlp1", f"seed={s}", "trainer.epochs=1"
        ]  # fmt: skip
        assert set(__import__("pandas").read_parquet(job / "mi.parquet").seed) == {s}
