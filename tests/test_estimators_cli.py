"""Estimator configs as a user meets them: presets compose, bad keys fail early, sweeps run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra.utils import instantiate

from infoflow.spec import ConfigError, validate

PRESETS = sorted(p.stem for p in (Path(__file__).parents[1] / "conf" / "estimator").glob("*.yaml"))


@pytest.mark.parametrize("name", PRESETS)
def test_every_estimator_option_composes_validates_and_runs(compose_cfg, name):
    cfg = compose_cfg(f"estimator={name}", "runtime.device=cpu")
    validate(cfg)
    estimator = instantiate(cfg.estimator)
    rng = np.random.default_rng(0)
    T, X, y = rng.standard_normal((200, 16)), rng.random((200, 64)), rng.integers(0, 10, 200)
    if name == "exact":  # exact measures a quantized net's layer: values on a grid
        T = np.round(T * 15) / 15
    r = estimator(T.astype(np.float32), X, y)
    assert 0 <= r["I_XT"] <= r["H_max"] + 1e-9
    assert 0 <= r["I_TY"] <= r["H_Y"] + 1e-9
    assert {"n_samples", "H_max", "saturated", "H_Y"} <= set(r)


def test_presets_set_the_keys_their_names_promise(compose_cfg):
    assert compose_cfg("estimator=kde_0.01").estimator.noise_var == 0.01
    assert compose_cfg("estimator=kde").estimator.noise_var == 0.1
    assert compose_cfg("estimator=binning_10").estimator.bins == 10
    bw = compose_cfg("estimator=binning_bw0.5").estimator
    assert bw.bins is None and bw.bin_width == 0.5
    assert list(compose_cfg("estimator=binning_tanh").estimator.range) == [-1, 1]


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["estimator.bin_width=0.5"], ["estimator.bins", "estimator.bin_width", "bins=null"]),
        (["estimator=kde", "estimator.noise_var=0"], ["estimator.noise_var", "> 0"]),
        (["estimator.range=[1,0]"], ["estimator.range", "lo < hi", "[1, 0]"]),
        (["estimator.strategy=kmeans"], ["estimator.strategy", "'kmeans'"]),
        (["estimator.bias_correction=jk"], ["estimator.bias_correction", "'jk'"]),
    ],
)
def test_bad_estimator_keys_fail_validation_naming_key_rule_value(compose_cfg, overrides, words):
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg(*overrides, "runtime.device=cpu"))
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_cli_refuses_contradicting_bin_keys_before_training(cli, tmp_path):
    proc = cli("estimator.bin_width=0.5")
    assert proc.returncode != 0
    assert "estimator.bins and estimator.bin_width are mutually exclusive" in proc.stderr
    assert not list(tmp_path.glob("**/mi.parquet"))


def _sweep_table(cli, tmp_path, *overrides: str) -> pd.DataFrame:
    proc = cli("-m", *overrides, "model=mlp1", "trainer.epochs=1", "runtime.device=cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (merged,) = tmp_path.glob("outputs/multirun/*/*/results.parquet")
    return pd.read_parquet(merged)


@pytest.mark.slow
def test_multirun_across_estimators_with_different_keys(cli, tmp_path):
    df = _sweep_table(cli, tmp_path, "estimator=binning,kde")
    assert sorted(df.estimator.unique()) == ["binning", "kde"]
    kde_rows, bin_rows = df[df.estimator == "kde"], df[df.estimator == "binning"]
    assert (kde_rows["estimator.noise_var"] == 0.1).all()
    assert bin_rows["estimator.noise_var"].isna().all() and (bin_rows["estimator.bins"] == 30).all()
    assert (kde_rows.I_XT_lower <= kde_rows.I_XT_upper + 1e-9).all()
    assert (kde_rows.I_XT == kde_rows.I_XT_upper).all() and bin_rows.I_XT_lower.isna().all()
    for col in ("n_samples", "H_max", "saturated", "H_Y"):
        assert df[col].notna().all(), col
    assert (df.I_XT <= df.H_max + 1e-9).all() and (df.I_TY <= df.H_Y + 1e-9).all()
    assert np.allclose(df.H_max, np.log2(df.n_samples))


@pytest.mark.slow
def test_multirun_across_presets_of_one_estimator(cli, tmp_path):
    df = _sweep_table(cli, tmp_path, "estimator=kde_0.1,kde_0.01")
    assert sorted(df.estimator.unique()) == ["kde_0.01", "kde_0.1"]
    assert sorted(df["estimator.noise_var"].unique()) == [0.01, 0.1]
    # less noise resolves more of the layer: I_XT grows as noise_var shrinks
    by = df.groupby(["estimator.noise_var", "epoch", "layer"]).I_XT.first().unstack(0)
    assert (by[0.01] >= by[0.1] - 1e-9).all()
