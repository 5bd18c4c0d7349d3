"""infoflow.score on planted tables: errors, rank correlations and verdict agreement against
the reference; failed_to_train marks (never drops) the runs Lorenzen et al. leave out."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import infoflow
from infoflow.report.score import failed_to_train

EPOCHS = np.arange(31)
RISE_FALL = np.where(EPOCHS <= 10, 2 + 0.2 * EPOCHS, 4 - 1.5 * (EPOCHS - 10) / 20)  # drop 1.5
RISING = 2 + 0.05 * EPOCHS


def runs(estimator: str, curve, seeds=range(4), noise=0.0, activation="tanh", **keys):
    """One row per (seed, epoch, layer) of ``estimator`` whose I(X;T) is ``curve`` (+ noise)."""
    rng = np.random.default_rng(hash((estimator, activation)) % 2**32)
    frames = []
    for s in seeds:
        for layer in (1, 2):
            xt = np.asarray(curve, float) + noise * rng.standard_normal(len(EPOCHS))
            frames.append(
                pd.DataFrame(
                    {
                        "run_id": f"{estimator}-{activation}-{s}-{keys}",
                        "seed": s,
                        "model": "ib_net",
                        "model.activation": activation,
                        "data": "tishby",
                        "estimator": estimator,
                        **keys,
                        "epoch": EPOCHS,
                        "layer": layer,
                        "layer_name": f"fc{layer}",
                        "I_XT": xt + layer,  # layers differ by an offset
                        "I_TY": 0.5 + 0.01 * EPOCHS,
                        "train_acc": 0.9,
                        "status": "completed",
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


@pytest.fixture
def planted():
    return pd.concat(
        [
            runs("exact", RISE_FALL, **{"estimator.bits": 8}),
            runs("binning", RISE_FALL + 0.5, **{"estimator.bins": 30}),  # offset: same shape
            runs("binning", RISE_FALL - 0.25, **{"estimator.bins": 100}),
            runs("renyi", RISING),  # another shape: no compression
        ],
        ignore_index=True,
    )


def test_errors_are_the_planted_offsets_per_evaluation(planted):
    s = infoflow.score(planted)
    e = s.errors
    assert len(e) == 3 * 4 * 2 * len(EPOCHS)  # settings x seeds x layers x evaluations
    b30 = e[(e["estimator"] == "binning") & (e["estimator.bins"] == 30)]
    assert np.allclose(b30["I_XT_err"], 0.5) and np.allclose(b30["I_TY_err"], 0.0)
    assert np.allclose(b30["I_XT_ref"], b30["I_XT"] - 0.5)


def test_layer_summaries_mae_bias_rank_correlation_and_verdicts(planted):
    layers = infoflow.score(planted).layers.set_index(["estimator", "estimator.bins", "layer"])
    b30 = layers.loc[("binning", 30.0, 1)]
    assert b30["I_XT_mae"] == pytest.approx(0.5) and b30["I_XT_bias"] == pytest.approx(0.5)
    assert b30["I_XT_spearman"] == pytest.approx(1.0)  # same shape, any offset
    assert b30["verdict"] == b30["verdict_ref"] == "compresses" and b30["verdict_agrees"]
    b100 = layers.loc[("binning", 100.0, 2)]
    assert b100["I_XT_bias"] == pytest.approx(-0.25) and b100["I_XT_mae"] == pytest.approx(0.25)
    renyi = layers.xs("renyi", level=0).iloc[0]  # layer 1 (its estimator.bins is NaN)
    assert renyi["verdict"] == "no compression" and not renyi["verdict_agrees"]
    assert renyi["I_XT_spearman"] < 0.5  # rising vs rise-and-fall
    assert renyi["I_TY_spearman"] == pytest.approx(1.0)  # I(T;Y) planted equal
    assert (layers["n_runs"] == 4).all() and (layers["n_evals"] == 4 * len(EPOCHS)).all()


def test_summary_pools_layers_per_setting(planted):
    summary = infoflow.score(planted).summary
    assert list(summary["estimator"]) == ["binning", "binning", "renyi"]
    assert list(summary["verdicts_agree"]) == [2, 2, 0]
    assert (summary["n_layers"] == 2).all()
    assert summary.loc[0, "I_XT_mae"] == pytest.approx(0.5)


def test_configurations_are_scored_against_their_own_reference():
    """tanh and relu runs share seeds: each setting row is matched with its own activation."""
    df = pd.concat(
        [
            runs("exact", RISE_FALL, activation="tanh"),
            runs("exact", RISING, activation="relu"),
            runs("binning", RISE_FALL, activation="tanh"),
            runs("binning", RISING + 1.0, activation="relu"),
        ],
        ignore_index=True,
    )
    layers = infoflow.score(df).layers.set_index(["model.activation", "layer"])
    assert layers.loc[("tanh", 1), "I_XT_mae"] == pytest.approx(0.0)
    assert layers.loc[("relu", 1), "I_XT_mae"] == pytest.approx(1.0)
    assert layers.loc[("tanh", 1), "verdict_ref"] == "compresses"
    assert layers.loc[("relu", 1), "verdict_ref"] == "no compression"
    assert layers["verdict_agrees"].all()


def test_noise_lowers_the_rank_correlation_not_below_a_clear_shape():
    df = pd.concat(
        [runs("exact", RISE_FALL), runs("kde", RISE_FALL, noise=0.05)], ignore_index=True
    )
    layers = infoflow.score(df).layers
    assert (layers["I_XT_spearman"] < 1).all() and (layers["I_XT_spearman"] > 0.8).all()
    assert layers["I_XT_mae"].between(0.02, 0.06).all()  # E|N(0, 0.05)| = 0.04


def test_rows_without_a_reference_are_left_out_with_a_warning():
    df = pd.concat(
        [runs("exact", RISE_FALL, seeds=range(3)), runs("binning", RISE_FALL, seeds=range(4))],
        ignore_index=True,
    )
    with pytest.warns(UserWarning, match=r"62 of 248 rows have no exact row"):
        s = infoflow.score(df)
    assert set(s.errors["seed"]) == {0, 1, 2}


def test_a_table_without_the_reference_or_without_others_is_refused():
    with pytest.raises(ValueError, match=r"reference estimator=exact.*holds binning"):
        infoflow.score(runs("binning", RISE_FALL))
    with pytest.raises(ValueError, match="holds exact"):
        infoflow.score(runs("exact", RISE_FALL))
    with pytest.raises(ValueError, match="lacks estimator"):
        infoflow.score(runs("exact", RISE_FALL).drop(columns="estimator"))


def test_failed_runs_are_marked_and_get_verdict_rows_of_their_own():
    df = pd.concat([runs("exact", RISE_FALL, seeds=range(6))], ignore_index=True)
    df["epoch"] *= 50  # 0..1500
    bad = df["seed"].isin([4, 5])
    df.loc[bad & (df["epoch"] >= 1000), "train_acc"] = 0.52
    marked = failed_to_train(df)
    assert len(marked) == len(df)  # nothing dropped
    per_run = marked.groupby("seed")["failed_to_train"].agg(["min", "max"])
    assert list(per_run["max"]) == [False] * 4 + [True] * 2
    assert (per_run["min"] == per_run["max"]).all()  # constant within a run
    verdicts = infoflow.compression(marked)
    assert set(verdicts["failed_to_train"]) == {False, True}
    assert verdicts.groupby("failed_to_train")["n_seeds"].first().to_dict() == {False: 4, True: 2}


def test_a_run_that_ends_before_the_rule_epoch_is_not_marked():
    df = runs("exact", RISE_FALL)  # epochs 0..30
    df["train_acc"] = 0.1
    assert not failed_to_train(df)["failed_to_train"].any()


def test_an_estimators_own_constant_extra_is_not_a_run_key():
    """kde writes a string column ``precision``, constant within a run: config_columns counts it
    as config; score must still match kde's rows with exact's."""
    kde = runs("kde_nn", RISE_FALL + 0.1)
    kde["precision"] = "float32"
    df = pd.concat([runs("exact", RISE_FALL), kde], ignore_index=True)
    s = infoflow.score(df)
    assert len(s.errors) == len(kde) and np.allclose(s.errors["I_XT_err"], 0.1)
    assert s.layers["verdict_agrees"].all()
