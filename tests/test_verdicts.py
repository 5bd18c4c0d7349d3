"""infoflow.compression: verdicts on synthetic I(X;T) trajectories with known truth."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd
import pytest

import infoflow
from infoflow import compression


def table(
    curve: np.ndarray,
    n_seeds: int,
    noise: float = 0.0,
    rng_seed: int = 0,
    layers: int = 1,
    first_seed: int = 0,
    **config: object,
) -> pd.DataFrame:
    """Rows of ``n_seeds`` runs whose I(X;T) is ``curve`` (per epoch) plus iid noise (bits)."""
    rng = np.random.default_rng(rng_seed)
    epochs = np.arange(len(curve))
    frames = []
    for s in range(first_seed, first_seed + n_seeds):
        for layer in range(layers):
            xt = curve + noise * rng.standard_normal(len(curve))
            frames.append(
                pd.DataFrame(
                    {
                        "run_id": f"run{s}-{config}",
                        "seed": s,
                        "model": "mlp3",
                        "data": "mnist",
                        "estimator": "binning",
                        "estimator.bins": 30,
                        "trainer.epochs": len(curve) - 1,
                        **config,
                        "epoch": epochs,
                        "layer": layer,
                        "layer_name": f"fc{layer}",
                        "I_XT": xt,
                        "I_TY": 0.1 + 0.9 * epochs / max(len(curve) - 1, 1),
                        "status": "completed",
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def rise_fall(n_epochs: int = 30, drop: float = 1.0) -> np.ndarray:
    """Rises from 2 to 4 bits by epoch 10, then falls by ``I_XT_drop`` bits to the end."""
    e = np.arange(n_epochs, dtype=float)
    return np.where(e <= 10, 2 + 2 * e / 10, 4 - drop * (e - 10) / (n_epochs - 11))


def naive_drop(df: pd.DataFrame) -> float:
    """Mean over seeds of each seed's own max minus its last value: the inflated estimate."""
    g = df.sort_values("epoch").groupby("seed")["I_XT"]
    return float((g.max() - g.last()).mean())


def test_planted_drop_compresses():
    df = table(rise_fall(drop=1.0), n_seeds=5, noise=0.02)
    out = compression(df)
    assert len(out) == 1
    row = out.iloc[0]
    assert row["verdict"] == "compresses"
    assert abs(row["I_XT_drop"] - 1.0) < 0.1
    assert row["I_XT_drop_lo"] <= row["I_XT_drop"] <= row["I_XT_drop_hi"]
    assert row["peak_epoch"] == 10
    assert row["n_seeds"] == 5
    assert row["I_XT_peak"] - row["I_XT_final"] == pytest.approx(row["I_XT_drop"])
    assert row["I_TY_gain"] == pytest.approx(0.9)


def test_flat_noisy_never_compresses():
    flat = np.full(50, 3.0)
    naive = []
    for noise_seed in range(8):
        df = table(flat, n_seeds=10, noise=0.05, rng_seed=noise_seed)
        row = compression(df, seed=noise_seed).iloc[0]
        assert row["verdict"] != "compresses", (noise_seed, row.to_dict())
        assert abs(row["I_XT_drop"]) < 0.1
        naive.append(naive_drop(df))
    # the test could fail: a seed's own max minus its last value says "compression"
    assert max(naive) > 0.1, naive


def test_rising_no_compression():
    df = table(np.linspace(1, 4, 30), n_seeds=5, noise=0.02)
    row = compression(df).iloc[0]
    assert row["verdict"] == "no compression"
    assert row["I_XT_drop_hi"] < 0.1
    assert row["peak_epoch"] == 29


def test_one_seed_undetermined():
    df = table(rise_fall(drop=2.0), n_seeds=1, noise=0.0)
    row = compression(df).iloc[0]
    assert row["n_seeds"] == 1
    assert row["verdict"] == "undetermined"
    assert np.isnan(row["I_XT_drop_lo"]) and np.isnan(row["I_XT_drop_hi"])
    assert row["I_XT_drop"] == pytest.approx(2.0)


def test_seed_in_two_runs_counted_once_and_warns():
    df = table(rise_fall(), n_seeds=4, noise=0.02)
    again = df[df["seed"] == 2].copy()
    again["run_id"] = "second-sweep-run2"
    again["I_XT"] += 0.01
    with pytest.warns(UserWarning, match=r"^1 \(configuration, layer, seed\) groups"):
        out = compression(pd.concat([df, again], ignore_index=True))
    assert out["n_seeds"].tolist() == [4]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert compression(df)["n_seeds"].tolist() == [4]


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ({"estimator": "binning"}, {"estimator": "kde"}),
        ({"estimator.bins": 10}, {"estimator.bins": 30}),
    ],
)
def test_configurations_never_pooled(a, b):
    df = pd.concat(
        [
            table(rise_fall(drop=1.0), n_seeds=3, noise=0.02, layers=2, **a),
            table(np.linspace(1, 4, 30), n_seeds=3, noise=0.02, layers=2, **b),
        ],
        ignore_index=True,
    )
    out = compression(df)
    assert len(out) == 4
    assert (out.groupby("layer").size() == 2).all()
    assert (out["n_seeds"] == 3).all()
    key = next(iter(a))
    verdicts = out.groupby(key)["verdict"].unique().map(list).to_dict()
    assert verdicts == {a[key]: ["compresses"], b[key]: ["no compression"]}


def test_failed_run_left_out():
    df = table(rise_fall(drop=1.0), n_seeds=5, noise=0.02)
    failed = table(np.full(30, 10.0), n_seeds=1, first_seed=99)
    failed = failed[failed["epoch"] <= 12].assign(status="failed")
    out = compression(pd.concat([df, failed], ignore_index=True))
    assert out["n_seeds"].tolist() == [5]
    pd.testing.assert_frame_equal(out, compression(df))


def test_only_common_epochs_used():
    df = table(rise_fall(drop=1.0), n_seeds=5, noise=0.02)
    short = df[~((df["seed"] == 0) & (df["epoch"] > 20))]
    row = compression(short).iloc[0]
    assert row["n_seeds"] == 5
    full = df[df["epoch"] <= 20]
    pd.testing.assert_frame_equal(compression(short), compression(full))


def test_row_order_changes_nothing():
    df = pd.concat(
        [
            table(rise_fall(), n_seeds=4, noise=0.05, layers=3),
            table(rise_fall(), n_seeds=4, noise=0.05, layers=3, rng_seed=1, estimator="kde"),
        ],
        ignore_index=True,
    )
    expected = compression(df)
    for perm_seed in range(3):
        shuffled = df.sample(frac=1, random_state=perm_seed).reset_index(drop=True)
        pd.testing.assert_frame_equal(compression(shuffled), expected)


def test_bootstrap_is_vectorised():
    df = table(rise_fall(200), n_seeds=50, noise=0.05, layers=6)
    compression(df.head(100))  # warm up the imports
    start = time.perf_counter()
    out = compression(df)
    elapsed = time.perf_counter() - start
    assert len(out) == 6 and (out["n_seeds"] == 50).all()
    assert elapsed < 1.0, elapsed


def test_exported():
    assert "compression" in infoflow.__all__
    assert infoflow.compression is compression


def test_without_seed_column_runs_are_seeds():
    df = table(rise_fall(drop=1.0), n_seeds=4, noise=0.02).drop(columns=["seed", "status"])
    row = compression(df).iloc[0]
    assert row["n_seeds"] == 4 and row["verdict"] == "compresses"
