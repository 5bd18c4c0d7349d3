"""infoflow.load: job dirs, sweep dirs, several sweeps, globs, corrupt and foreign files."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

import infoflow
from infoflow.report.load import (
    LoadError,
    config_columns,
    final_summary,
    load,
    t_quantile,
    varying_keys,
)

HIDDEN = {"mlp1": "[128]", "mlp3": "[256, 128, 64]", "cnn": None}
LAYERS = {"mlp1": ["fc1"], "mlp3": ["fc1", "fc2", "fc3"], "cnn": ["conv1", "conv2"]}


def job_frame(model: str, seed: int, epochs: int = 2, bins: int = 30, run_id: str | None = None):
    """A table shaped like a job's mi.parquet, with numbers that identify their row."""
    rows = []
    for epoch in range(epochs + 1):
        for layer, name in enumerate(LAYERS[model], start=1):
            rows.append(
                {
                    "run_id": run_id or f"{model}-s{seed}-b{bins}",
                    "model": model, "data": "digits", "optimizer": "adam",
                    "estimator": "binning", "seed": seed, "device": "auto",
                    "trainer.epochs": epochs, "model.hidden": HIDDEN[model],
                    "model.channels": 16 if model == "cnn" else np.nan,
                    "model.activation": "relu", "estimator.bins": bins,
                    "epoch": epoch, "layer": layer, "layer_name": name, "units": 10 * layer,
                    "I_XT": 1.0 + epoch + 0.1 * layer + 0.01 * seed + 0.001 * bins,
                    "I_TY": 0.5 + 0.1 * epoch + 0.01 * seed,
                    "H_Y": 3.32, "n_samples": 360, "units_used": 10,
                    "train_acc": np.nan if epoch == 0 else 0.5 + 0.1 * epoch + 0.01 * seed,
                    "eval_acc": 0.4 + 0.1 * epoch + 0.02 * seed,
                }
            )  # fmt: skip
    return pd.DataFrame(rows).drop(columns=[] if model == "cnn" else ["model.channels"])


def make_sweep(root, jobs, merged: bool = True):
    """A sweep dir: job dirs 0/ 1/ ... with mi.parquet and .hydra/, and results.parquet."""
    root.mkdir(parents=True, exist_ok=True)
    frames = []
    for i, frame in enumerate(jobs):
        (root / str(i) / ".hydra").mkdir(parents=True)
        (root / str(i) / ".hydra" / "config.yaml").write_text("seed: 0\n")
        (root / str(i) / "status.json").write_text('{"status": "completed"}')
        frame.to_parquet(root / str(i) / "mi.parquet", index=False)
        frames.append(frame)
    if merged:
        pd.concat(frames, ignore_index=True).to_parquet(root / "results.parquet", index=False)
    return root


@pytest.fixture
def sweep(tmp_path):
    jobs = [job_frame(m, s) for m in ("mlp1", "mlp3") for s in (0, 1)]
    return make_sweep(tmp_path / "sweep", jobs), jobs


def test_job_dir(sweep):
    root, jobs = sweep
    df = load(root / "2")  # mlp3 seed 0
    assert len(df) == len(jobs[2]) == 3 * 3
    assert set(df.columns) == {*jobs[2].columns, "status"}
    assert set(df["status"]) == {"completed"}  # from the status.json beside the table
    assert df["run_id"].unique().tolist() == ["mlp3-s0-b30"]
    assert df[["epoch", "layer"]].apply(tuple, axis=1).is_monotonic_increasing
    pd.testing.assert_series_equal(
        df["I_XT"], jobs[2].sort_values(["epoch", "layer"])["I_XT"].reset_index(drop=True)
    )


def test_sweep_dir_counts_every_row_once(sweep):
    root, jobs = sweep
    df = load(root)
    assert len(df) == sum(len(j) for j in jobs)  # not doubled by results.parquet
    assert df.groupby(["run_id", "epoch", "layer"]).size().max() == 1
    assert sorted(df["run_id"].unique()) == sorted(j["run_id"].iloc[0] for j in jobs)


def test_job_dir_plus_its_sweep_is_not_double_counted(sweep):
    root, jobs = sweep
    df = load([root / "0", root, root / "results.parquet"])
    assert len(df) == sum(len(j) for j in jobs)


def test_results_parquet_alone_when_job_dirs_are_gone(sweep):
    root, jobs = sweep
    for i in (0, 1):
        (root / str(i) / "mi.parquet").unlink()
    df = load(root)
    assert len(df) == sum(len(j) for j in jobs)  # the merged table supplies jobs 0 and 1


def test_job_table_wins_over_a_stale_merged_table(tmp_path):
    """A resumed job rewrites its mi.parquet; the sweep's merged table is older."""
    old = job_frame("mlp1", 0, epochs=1)
    root = make_sweep(tmp_path / "s", [old])
    new = job_frame("mlp1", 0, epochs=3)
    new["I_XT"] += 100.0
    new.to_parquet(root / "0" / "mi.parquet", index=False)
    df = load(root)
    assert len(df) == len(new)
    assert (df["I_XT"] > 100).all()


def test_several_sweeps_list_glob_and_parent_agree(tmp_path):
    a = make_sweep(tmp_path / "multirun" / "a", [job_frame("mlp1", s) for s in (0, 1)])
    make_sweep(tmp_path / "multirun" / "b", [job_frame("cnn", s) for s in (0, 1)])
    n = 2 * 3 * 1 + 2 * 3 * 2
    by_list = load([a, tmp_path / "multirun" / "b"])
    by_glob = load(str(tmp_path / "multirun" / "*"))
    by_parent = load(tmp_path / "multirun")
    by_files = load(str(tmp_path / "multirun" / "**" / "mi.parquet"))
    for df in (by_list, by_glob, by_parent, by_files):
        assert len(df) == n
        assert set(df["model"]) == {"mlp1", "cnn"}
    # columns only the CNN has are NaN for the MLP rows, and kept for the CNN
    assert by_list.loc[by_list.model == "mlp1", "model.channels"].isna().all()
    assert (by_list.loc[by_list.model == "cnn", "model.channels"] == 16).all()
    pd.testing.assert_frame_equal(by_list, by_glob)


def test_step_is_part_of_the_row_key(tmp_path):
    df = job_frame("mlp1", 0, epochs=1)
    extra = df[df.epoch == 1].assign(step=7, epoch=0.5)  # an evaluation inside epoch 1
    table = pd.concat([df.assign(step=df.epoch * 14), extra], ignore_index=True)
    (tmp_path / "j").mkdir()
    table.to_parquet(tmp_path / "j" / "mi.parquet", index=False)
    out = load(tmp_path / "j")
    assert len(out) == len(table)
    assert out["epoch"].tolist() == [0.0, 0.5, 1.0]  # sorted by time


def test_corrupt_file_names_the_file(sweep):
    root, jobs = sweep
    bad = root / "1" / "mi.parquet"
    bad.write_bytes(b"PAR1 this is not parquet at all")
    with pytest.raises(LoadError) as info:
        load(root)
    msg = str(info.value)
    assert str(bad) in msg and "not a readable Parquet file" in msg
    with pytest.warns(UserWarning, match="skipping"):
        df = load(root, on_error="warn")
    # job 1's rows still come from results.parquet; nothing is lost
    assert len(df) == sum(len(j) for j in jobs)


def test_truncated_file_and_foreign_parquet(tmp_path):
    good = tmp_path / "j" / "mi.parquet"
    good.parent.mkdir()
    job_frame("mlp1", 0).to_parquet(good, index=False)
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2])  # a torn write
    with pytest.raises(LoadError, match=r"mi\.parquet: not a readable Parquet file"):
        load(good.parent)
    foreign = tmp_path / "f" / "results.parquet"
    foreign.parent.mkdir()
    pd.DataFrame({"a": [1, 2]}).to_parquet(foreign)
    with pytest.raises(LoadError, match=r"not an infoflow table \(no column run_id"):
        load(foreign.parent)


def test_nothing_to_load(tmp_path):
    with pytest.raises(LoadError, match="no such file"):
        load(tmp_path / "absent")
    with pytest.raises(LoadError, match="matches no file"):
        load(str(tmp_path / "nope*"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(LoadError, match=r"no mi\.parquet or results\.parquet under"):
        load(tmp_path / "empty")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (tmp_path / "bad").mkdir()
        (tmp_path / "bad" / "mi.parquet").write_text("x")
        with pytest.raises(LoadError, match="no readable infoflow table"):
            load(tmp_path / "bad", on_error="warn")


def test_varying_keys_and_config_columns(tmp_path):
    jobs = [job_frame(m, s, bins=b) for m in ("mlp1", "cnn") for s in (0, 1) for b in (4, 30)]
    df = load(make_sweep(tmp_path / "s", jobs))
    assert varying_keys(df) == ["model", "estimator.bins"]  # not seed, model.hidden, channels
    cols = config_columns(df)
    assert {"model", "seed", "device", "estimator.bins", "model.hidden"} <= set(cols)
    assert not {"n_samples", "units_used", "H_Y", "I_XT", "epoch", "units"} & set(cols)
    # a dotted key swept on its own is a varying key
    one = df[df.model == "mlp1"].copy()
    one.loc[one.seed == 1, "model.activation"] = "tanh"
    assert varying_keys(one) == ["model.activation", "estimator.bins"]  # column order


def test_final_summary_over_seeds(tmp_path):
    jobs = [job_frame("mlp3", s, epochs=3) for s in (0, 1, 2)]
    stopped = job_frame("mlp3", 3, epochs=3)
    jobs.append(stopped[stopped.epoch <= 1])  # killed in epoch 2: not in the last epoch's n
    df = load(make_sweep(tmp_path / "s", jobs))
    summary = final_summary(df)
    assert summary.columns[:4].tolist() == ["model", "layer", "layer_name", "epoch"]
    row = summary[(summary.model == "mlp3") & (summary.layer == 2)].iloc[0]
    assert row["epoch"] == 3 and row["n_seeds"] == 3
    expect = [1.0 + 3 + 0.2 + 0.01 * s + 0.03 for s in (0, 1, 2)]
    assert row["I_XT_mean"] == pytest.approx(np.mean(expect))
    assert row["I_XT_std"] == pytest.approx(np.std(expect, ddof=1))
    assert row["I_XT_ci95"] == pytest.approx(4.302653 * np.std(expect, ddof=1) / np.sqrt(3))
    assert row["eval_acc_mean"] == pytest.approx(np.mean([0.7 + 0.02 * s for s in (0, 1, 2)]))


def test_final_summary_leaves_out_runs_that_did_not_complete(tmp_path):
    """A run that diverged after epoch 0 must not make epoch 0 its group's last epoch."""
    jobs = [job_frame("mlp3", 0, epochs=3), job_frame("mlp1", 0, epochs=3)]
    jobs[1] = jobs[1][jobs[1].epoch == 0]
    root = make_sweep(tmp_path / "s", jobs, merged=False)
    (root / "1" / "status.json").write_text('{"status": "failed", "error": "diverged"}')
    df = load(root)
    assert set(df[df.model == "mlp1"].status) == {"failed"}
    summary = final_summary(df)
    assert summary.model.unique().tolist() == ["mlp3"] and (summary.epoch == 3).all()


def test_package_exports_load_without_matplotlib(tmp_path):
    assert infoflow.load is load
    code = "import sys, infoflow; infoflow.load; print('matplotlib' in sys.modules)"
    out = subprocess.run(  # from another directory: the installed package, not the checkout
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------------
# a sweep directory means one sweep: what its sweep.json says it launched


def launched_sweep(root, seeds, epochs, stale_merge=None):
    """A sweep dir as the CLI leaves it: sweep.json, job dirs with .hydra/overrides.yaml."""
    jobs = [job_frame("mlp1", s, epochs=epochs, run_id=f"e{epochs}-s{s}") for s in seeds]
    root.mkdir(parents=True, exist_ok=True)
    listed = []
    for i, (seed, frame) in enumerate(zip(seeds, jobs)):
        overrides = [f"seed={seed}", f"trainer.epochs={epochs}"]
        listed.append({"num": i, "overrides": overrides})
        (root / str(i) / ".hydra").mkdir(parents=True, exist_ok=True)
        (root / str(i) / ".hydra" / "overrides.yaml").write_text(
            "".join(f"- {o}\n" for o in overrides)
        )
        (root / str(i) / "status.json").write_text('{"status": "completed"}')
        frame.to_parquet(root / str(i) / "mi.parquet", index=False)
    (root / "sweep.json").write_text(json.dumps({"jobs": listed}))
    merged = pd.concat([*jobs, *(stale_merge or [])], ignore_index=True)
    merged.to_parquet(root / "results.parquet", index=False)
    pd.DataFrame({"job": ["0"]}).to_parquet(root / "jobs.parquet", index=False)
    (root / "__main__.log").write_text("a log\n")
    return jobs


def test_a_dir_reused_by_a_later_sweep_holds_only_that_sweeps_jobs(tmp_path):
    root = tmp_path / "sw"
    launched_sweep(root, seeds=(0, 1, 2), epochs=2)
    later = launched_sweep(root, seeds=(0, 1), epochs=1)  # dir 2 is the first sweep's
    expected = sorted(j.run_id.iloc[0] for j in later)
    for source in (root, str(root / "*"), str(root / "**"), tmp_path):
        df = load(source)
        assert sorted(df.run_id.unique()) == expected, source
        assert len(df) == sum(len(j) for j in later), source


def test_a_stale_merged_table_never_adds_rows_to_a_sweeps_job_tables(tmp_path):
    root = tmp_path / "sw"
    stale = job_frame("mlp1", 0, epochs=2, run_id="an-earlier-run-of-job-0")
    jobs = launched_sweep(root, seeds=(0, 1, 2), epochs=2, stale_merge=[stale])
    df = load(root)
    assert "an-earlier-run-of-job-0" not in set(df.run_id)
    assert len(df) == sum(len(j) for j in jobs)
    assert final_summary(df)["n_seeds"].max() == 3
    for i in range(3):  # a copy of the merged table alone is still read
        (root / str(i) / "mi.parquet").unlink()
    assert "an-earlier-run-of-job-0" in set(load(root).run_id)


def test_a_seed_in_two_runs_is_counted_once():
    runs = [job_frame("mlp1", 0, run_id="a"), job_frame("mlp1", 0, run_id="b")]
    runs[1]["I_XT"] += 1.0  # the same seed measured again, elsewhere
    df = pd.concat([*runs, job_frame("mlp1", 1)], ignore_index=True)
    with pytest.warns(UserWarning, match="each seed is counted once"):
        summary = final_summary(df)
    assert summary["n_seeds"].tolist() == [2]
    seed0 = runs[0]["I_XT"].iloc[-1] + 0.5  # the two runs of seed 0, averaged
    expected = (seed0 + job_frame("mlp1", 1)["I_XT"].iloc[-1]) / 2
    assert summary["I_XT_mean"].iloc[0] == pytest.approx(expected)


def test_t_quantile_is_students():
    from scipy import stats

    n = np.arange(0, 60)
    expected = stats.t.ppf(0.975, np.where(n >= 2, n - 1, np.nan))
    np.testing.assert_array_equal(t_quantile(n), expected)  # NaN below 2 seeds, as expected
