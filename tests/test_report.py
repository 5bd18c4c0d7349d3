"""The report: figures hold the table's numbers, every file is written, the CLI works headless."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection, PolyCollection
from test_loading import job_frame, make_sweep

from infoflow.loading import final_summary, load, varying_keys
from infoflow.plots import curves_vs_epoch, information_plane
from infoflow.report import make_report

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "", "HYDRA_FULL_ERROR": "0"}


def run(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True,
        timeout=timeout, env={k: v for k, v in ENV.items() if v},
    )  # fmt: skip


def by_gid(fig, prefix: str) -> dict[str, object]:
    """Artists of a figure whose gid starts with ``prefix``, keyed by gid."""
    return {
        a.get_gid(): a
        for ax in fig.axes
        for a in [*ax.lines, *ax.collections]
        if (a.get_gid() or "").startswith(prefix)
    }


def seed_mean(df: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """Independent reference: mean over runs per model, layer, epoch."""
    return df.groupby(["model", "layer", "epoch"])[cols].mean().reset_index()


def check_plane(fig, df: pd.DataFrame) -> int:
    """Every plotted point of the plane equals the seed mean of the table; returns #checked."""
    ref = seed_mean(df, ["I_XT", "I_TY"])
    scatters = by_gid(fig, "plane|")
    assert len(scatters) == len(ref.groupby(["model", "layer"]))
    for (model, layer), exp in ref.groupby(["model", "layer"]):
        sc = scatters[f"plane|{model}|{layer}"]
        assert isinstance(sc, PathCollection)
        np.testing.assert_allclose(sc.get_offsets(), exp[["I_XT", "I_TY"]].to_numpy())
        np.testing.assert_allclose(sc.get_array(), exp["epoch"].to_numpy())  # colour = epoch
    return len(scatters)


def check_curves(fig, df: pd.DataFrame) -> None:
    """Every curve equals the seed mean of the table, accuracy too."""
    ref = seed_mean(df, ["I_XT", "I_TY"])
    lines = by_gid(fig, "curve|")
    for (model, layer), exp in ref.groupby(["model", "layer"]):
        for col in ("I_XT", "I_TY"):
            line = lines[f"curve|{model}|{layer}|{col}"]
            np.testing.assert_allclose(line.get_xdata(), exp["epoch"].to_numpy())
            np.testing.assert_allclose(line.get_ydata(), exp[col].to_numpy())
    acc = df[df.layer == 1].groupby(["model", "epoch"])["eval_acc"].mean()
    for model in df.model.unique():
        line = by_gid(fig, f"acc|{model}|eval_acc")[f"acc|{model}|eval_acc"]
        np.testing.assert_allclose(line.get_ydata(), acc[model].to_numpy())


@pytest.fixture
def table(tmp_path):
    jobs = [job_frame(m, s) for m in ("mlp1", "mlp3") for s in (0, 1, 2)]
    return load(make_sweep(tmp_path / "sweep", jobs))


def test_plane_plots_the_seed_means(table):
    fig = information_plane(table, title="t")
    assert check_plane(fig, table) == 1 + 3
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["mlp1  (3 runs)", "mlp3  (3 runs)"]
    assert panels[0].get_shared_x_axes().joined(panels[0], panels[1])  # shared axes
    assert panels[0].get_shared_y_axes().joined(panels[0], panels[1])
    assert "bits" in panels[0].get_xlabel() and "bits" in panels[0].get_ylabel()
    assert any(ax.get_ylabel().startswith("epoch") for ax in fig.axes)  # the colour bar
    # the start marker: an open marker at each layer's epoch-0 point
    starts = [
        c.get_offsets()[0]
        for ax in panels
        for c in ax.collections
        if not c.get_gid() and len(c.get_offsets()) == 1
    ]
    first = table[table.epoch == 0].groupby(["model", "layer"])[["I_XT", "I_TY"]].mean()
    np.testing.assert_allclose(sorted(map(tuple, starts)), sorted(map(tuple, first.to_numpy())))


def test_curves_plot_the_seed_means_with_a_band(table):
    fig = curves_vs_epoch(table, title="t")
    check_curves(fig, table)
    bands = [c for ax in fig.axes for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2 * (1 + 3) + 2 * 2  # MI per layer, eval and train accuracy
    single = curves_vs_epoch(table[table.seed == 0])  # one seed: no band, still the numbers
    assert not [c for ax in single.axes for c in ax.collections if isinstance(c, PolyCollection)]
    check_curves(single, table[table.seed == 0])


def test_report_facets_a_varied_key(tmp_path):
    jobs = [job_frame(m, s, bins=b) for m in ("mlp1", "cnn") for s in (0, 1) for b in (4, 30)]
    df = load(make_sweep(tmp_path / "sweep", jobs))
    index = make_report(df, tmp_path / "out", dpi=60)
    names = sorted(p.name for p in index.parent.iterdir())
    assert names == sorted(
        [f"{k}__estimator.bins={b}.png" for k in ("plane", "curves") for b in (4, 30)]
        + ["index.html", "runs.csv", "summary.csv"]
    )
    html = index.read_text()
    assert sorted(re.findall(r"<img src='([^']+)'", html)) == sorted(
        n for n in names if n.endswith(".png")
    )
    assert "<th>estimator.bins</th><td>4, 30</td>" in html  # what the sweep varied
    summary = pd.read_csv(index.parent / "summary.csv")
    assert len(summary) == 2 * (1 + 2)  # bins x layers of mlp1 and cnn
    pd.testing.assert_frame_equal(
        summary, final_summary(df).astype(summary.dtypes.to_dict()), check_exact=False
    )
    runs = pd.read_csv(index.parent / "runs.csv")
    assert len(runs) == 8 and (runs.last_epoch == 2).all()


def test_figure_titles_name_the_facet(tmp_path):
    jobs = [job_frame("mlp1", s, bins=b) for s in (0, 1) for b in (4, 30)]
    df = load(make_sweep(tmp_path / "sweep", jobs))
    make_report(df, tmp_path / "out", dpi=40)
    img = matplotlib.image.imread(tmp_path / "out" / "plane__estimator.bins=4.png")
    assert img.ndim == 3 and img.shape[0] > 100 and img.std() > 0.01  # a real picture
    # the title is inside the PNG; check the function that makes it
    from infoflow.report import context_line, facet_label

    assert facet_label({"estimator.bins": 4}) == "estimator.bins=4"
    assert "mean over 2 seeds (0, 1)" in context_line(df, ["estimator.bins"])


def test_cli_error_is_one_clear_line(tmp_path):
    proc = run("infoflow.report", str(tmp_path / "absent"), cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "infoflow.report: error:" in proc.stderr and "absent" in proc.stderr
    assert "Traceback" not in proc.stderr
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "mi.parquet").write_bytes(b"garbage")
    proc = run("infoflow.report", str(tmp_path / "bad"), cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "mi.parquet: not a readable Parquet file" in proc.stderr


@pytest.mark.slow
def test_report_on_a_real_sweep(tmp_path):
    """A real tiny sweep through the CLI, then the report CLI: every file, the table's numbers."""
    sweep = tmp_path / "sweep"
    proc = run(
        "infoflow", "-m", "model=mlp1,mlp3", "seed=0,1", "trainer.epochs=2",
        "estimator.bins=4", "runtime.device=cpu", f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run("infoflow.report", str(sweep), cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = sweep / "report"  # default: next to the data
    for name in ("plane.png", "curves.png", "summary.csv", "runs.csv", "index.html"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    html = (out / "index.html").read_text()
    assert "plane.png" in html and "curves.png" in html and "<table" in html

    df = load(sweep)
    merged = pd.read_parquet(sweep / "results.parquet")
    assert len(df) == len(merged) == 2 * 3 * (1 + 3)  # seeds x evaluations x layers
    assert check_plane(information_plane(df), merged) == 1 + 3
    check_curves(curves_vs_epoch(df), merged)

    summary = pd.read_csv(out / "summary.csv")
    last = merged[merged.epoch == merged.epoch.max()]
    ref = last.groupby(["model", "layer"]).agg(
        I_XT_mean=("I_XT", "mean"), I_TY_std=("I_TY", "std"), n=("run_id", "nunique")
    )
    got = summary.set_index(["model", "layer"]).loc[ref.index]
    np.testing.assert_allclose(got["I_XT_mean"], ref["I_XT_mean"])
    np.testing.assert_allclose(got["I_TY_std"], ref["I_TY_std"], atol=1e-12)
    assert (got["n_seeds"] == ref["n"]).all()


def test_a_key_that_follows_a_choice_is_not_a_facet(tmp_path):
    from infoflow.report import facet_keys

    jobs = []
    for data, batch in (("digits", 32), ("fashion_mnist", 256)):
        for s in (0, 1):
            frame = job_frame("mlp1", s, run_id=f"{data}-{s}")
            jobs.append(frame.assign(**{"data": data, "trainer.batch_size": batch}))
    df = load(make_sweep(tmp_path / "sweep", jobs))
    varied = varying_keys(df)
    assert varied == ["data", "trainer.batch_size"]
    assert facet_keys(df, varied) == ["data"]  # batch size follows data: no extra split
    crossed = df.copy()
    crossed.loc[crossed.seed == 1, "trainer.batch_size"] = 64  # now swept on its own
    assert facet_keys(crossed, varying_keys(crossed)) == ["data", "trainer.batch_size"]
