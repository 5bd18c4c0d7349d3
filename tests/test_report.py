"""The report: figures hold the table's numbers, every file is written, the CLI works headless."""

from __future__ import annotations

import json
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

from infoflow.report.load import final_summary, load, varying_keys
from infoflow.report.page import make_report
from infoflow.report.plots import curves_vs_epoch, information_plane

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
        + ["index.html", "runs.csv", "summary.csv", "verdicts.csv"]
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
    from infoflow.report.page import context_line, facet_label

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
    for name in ("plane__all.png", "curves__all.png", "summary.csv", "runs.csv", "index.html"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    html = (out / "index.html").read_text()
    assert "plane__all.png" in html and "curves__all.png" in html and "<table" in html

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
    from infoflow.report.page import facet_keys

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


# ----------------------------------------------------------------------------------------------
# axes that do not magnify noise; the evaluation schedule from the config


def ceiling_frame(wobble: float = 0.006, schedule: str = "epoch", n: int = 360) -> pd.DataFrame:
    """mlp3 on its I(X;T) ceiling log2 n (fc3 dips by ``wobble`` bits every other epoch) and
    mlp1 well below it."""
    ceiling = np.log2(n)
    rows = []
    for epoch in range(6):
        for model, layers in (("mlp3", 3), ("mlp1", 1)):
            for layer in range(1, layers + 1):
                xt = ceiling - (wobble if layer == 3 and epoch % 2 else 0.0)
                if model == "mlp1":
                    xt = ceiling - 0.3 - 0.1 * epoch
                rows.append({
                    "run_id": f"{model}-0", "model": model, "seed": 0, "trainer.eval": schedule,
                    "epoch": epoch, "layer": layer, "layer_name": f"fc{layer}", "I_XT": xt,
                    "I_TY": 3.3 - 0.001 * layer, "n_samples": n, "H_max": ceiling, "H_Y": 3.32,
                    "eval_acc": 0.5 + 0.05 * epoch,
                })  # fmt: skip
    return pd.DataFrame(rows)


def test_mi_limits_widen_a_narrow_range_below_the_ceiling():
    from infoflow.report.plots import MIN_SPAN_BITS, mi_limits, min_span

    ceiling = np.log2(360)
    assert min_span() == MIN_SPAN_BITS == 0.5
    assert min_span(ceiling) == pytest.approx(0.1 * ceiling)  # a tenth of 8.49 bits > 0.5
    lo, hi = mi_limits([ceiling - 0.006, ceiling], ceiling)
    assert hi - lo >= min_span(ceiling)
    assert ceiling < hi < ceiling + 0.1 * min_span(ceiling)  # the ceiling at the top, in view
    lo, hi = mi_limits([0.0, 0.01])  # near 0: widened upwards, not below 0 but for the margin
    assert hi - lo >= 0.5 and lo >= -0.06 * 0.5 - 1e-12
    assert mi_limits([1.0, 5.0], ceiling) == pytest.approx((1.0 - 0.24, 5.0 + 0.24))  # untouched


def test_a_wobble_at_the_ceiling_is_not_magnified():
    from infoflow.report.plots import AT_CEILING_BITS, min_span

    df = ceiling_frame()
    ceiling = np.log2(360)
    on_it = df[df.model == "mlp3"]
    fig = curves_vs_epoch(on_it)
    line = by_gid(fig, "curve|mlp3|3|I_XT")["curve|mlp3|3|I_XT"]
    assert np.ptp(line.get_ydata()) == pytest.approx(0.006)  # the numbers stay the table's
    lo, hi = line.axes.get_ylim()
    assert hi - lo >= min_span(ceiling) >= 0.5  # a 0.006-bit dip is under 1% of the axis
    assert lo < ceiling - 0.006 and ceiling < hi
    dotted = [ln for ln in line.axes.lines if ln.get_linestyle() == ":"]
    assert [ln.get_ydata()[0] for ln in dotted] == [pytest.approx(ceiling)]  # the ceiling line
    (label,) = [t for t in line.axes.texts if t.get_gid() == "ceiling|mlp3"]
    assert "at the ceiling" in label.get_text() and "every layer" in label.get_text()
    assert f"{AT_CEILING_BITS:g} bit" in label.get_text()

    plane = information_plane(on_it)
    (points,) = by_gid(plane, "plane|mlp3|3").values()
    x0, x1 = points.axes.get_xlim()
    y0, y1 = points.axes.get_ylim()
    assert x1 - x0 >= min_span(ceiling) and y1 - y0 >= min_span(ceiling)
    assert [t.get_gid() for t in points.axes.texts] == ["ceiling|mlp3"]

    both = curves_vs_epoch(df)  # mlp1 is 0.3 bit and more below its ceiling: not named
    labels = [t.get_gid() for ax in both.axes for t in ax.texts if t.get_gid()]
    assert labels == ["ceiling|mlp3"]


@pytest.mark.parametrize(
    "schedule, log",
    [("log:12", True), ("epoch", False), ("every:2", False), ("3", False), (None, False)],
)
def test_epoch_scale_follows_trainer_eval(schedule, log):
    from matplotlib.colors import SymLogNorm

    from infoflow.report.plots import log_schedule

    # whole epochs spread over three decades, most of them early: what a full-batch log:N
    # schedule gives, and what a guess from the spread took for one whatever the config said
    epochs = [0, 1, 2, 3, 5, 8, 13, 22, 36, 60, 100, 170, 280, 460, 1000]
    df = pd.concat(
        [ceiling_frame().assign(epoch=e) for e in epochs], ignore_index=True
    ).drop_duplicates(["run_id", "epoch", "layer"])
    df = (
        df.drop(columns="trainer.eval")
        if schedule is None
        else df.assign(**{"trainer.eval": schedule})
    )
    assert log_schedule(df) is log
    plane = information_plane(df)
    (points,) = by_gid(plane, "plane|mlp1|1").values()
    assert isinstance(points.norm, SymLogNorm) is log
    label = [ax.get_ylabel() for ax in plane.axes if ax.get_ylabel().startswith("epoch")]
    assert label == ["epoch (0 = untrained" + (", log scale)" if log else ")")]
    curves = curves_vs_epoch(df)
    scales = {ax.get_xscale() for ax in curves.axes}
    assert scales == {"symlog" if log else "linear"}


def test_log_schedule_reads_fractional_epochs_on_a_log_axis():
    from matplotlib.colors import SymLogNorm

    df = ceiling_frame(schedule="log:20")
    df["epoch"] = df["epoch"].map({0: 0.0, 1: 0.01, 2: 0.05, 3: 0.3, 4: 1.0, 5: 5.0})
    (points,) = by_gid(information_plane(df), "plane|mlp1|1").values()
    assert isinstance(points.norm, SymLogNorm)
    line = by_gid(curves_vs_epoch(df), "curve|mlp1|1|I_XT")["curve|mlp1|1|I_XT"]
    assert line.axes.get_xscale() == "symlog"
    np.testing.assert_allclose(line.get_xdata(), [0, 0.01, 0.05, 0.3, 1, 5])


def test_a_reused_figure_draws_what_a_new_one_does(tmp_path):
    from infoflow.report.plots import save_png

    jobs = [job_frame(m, s, bins=b) for m in ("mlp1", "mlp3") for s in (0, 1) for b in (4, 30)]
    df = load(make_sweep(tmp_path / "sweep", jobs))
    a, b = df[df["estimator.bins"] == 4], df[df["estimator.bins"] == 30]
    for fn in (information_plane, curves_vs_epoch):
        fresh = fn(b, title="t")
        save_png(fresh, tmp_path / "fresh.png", 50)
        first = fn(a, title="t")
        again = fn(b, title="t", reuse=first)
        assert again is first  # the same grid: redrawn in place
        save_png(again, tmp_path / "again.png", 50)
        np.testing.assert_array_equal(
            matplotlib.image.imread(tmp_path / "again.png"),
            matplotlib.image.imread(tmp_path / "fresh.png"),
        )
        if fn is information_plane:
            check_plane(again, b)
        else:
            check_curves(again, b)
        other = fn(b[b.model == "mlp1"], reuse=again)  # one panel row fewer: a new figure
        assert other is not again


# ----------------------------------------------------------------------------------------------
# file names, errors of the command line


def test_figure_names_follow_one_rule(tmp_path):
    from infoflow.report.page import figure_name

    assert figure_name("plane", {}) == "plane__all.png"
    assert figure_name("curves", {"estimator.bins": 30.0}) == "curves__estimator.bins=30.png"
    two = {"data": "mnist", "model.activation": "tanh"}
    assert figure_name("plane", two) == "plane__data=mnist__model.activation=tanh.png"
    assert figure_name("plane", {"optimizer.lr": float("nan")}) == "plane__optimizer.lr=none.png"
    long = "/datasets/" + "a-very-long-folder-name/" * 20
    a, b = (figure_name("plane", {"data.root": long + end}) for end in ("a", "b"))
    assert a != b and len(a) <= 120 and len(b) <= 120  # cut, and told apart by the hash
    for name in (a, b, figure_name("plane", {"data.root": "/a b"})):
        assert re.fullmatch(r"plane__[A-Za-z0-9_.=+-]+~[0-9a-f]{8}\.png", name), name
    assert figure_name("plane", {"k": "a b"}) != figure_name("plane", {"k": "a_b"})

    df = load(make_sweep(tmp_path / "sweep", [job_frame("mlp1", s) for s in (0, 1)]))
    index = make_report(df, tmp_path / "out", dpi=40)  # nothing varied but the seed
    assert sorted(p.name for p in index.parent.glob("*.png")) == [
        "curves__all.png",
        "plane__all.png",
    ]
    html = index.read_text()
    assert sorted(re.findall(r"<img src='([^']+)'", html)) == ["curves__all.png", "plane__all.png"]


def report_cli(capsys, *args) -> tuple[int, str]:
    """``python -m infoflow.report ARGS`` in this process: (exit status, stderr). An exception
    that the command does not turn into its one-line error fails the test here."""
    from infoflow.report.page import main

    try:
        code = main([str(a) for a in args])
    except SystemExit as done:
        code = done.code
    return code, capsys.readouterr().err


def one_line_error(err: str) -> str:
    assert err.startswith("infoflow.report: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("dpi", ["0", "100000", "-5", "19", "601", "abc", "1.5"])
def test_a_dpi_out_of_range_is_one_line(tmp_path, capsys, dpi):
    sweep = make_sweep(tmp_path / "sweep", [job_frame("mlp1", 0)])
    code, err = report_cli(capsys, sweep, "--dpi", dpi)
    assert code == 2 and dpi in one_line_error(err)
    if dpi.lstrip("-").isdigit():
        assert "--dpi must be an integer from 20 to 600" in err
    else:  # argparse's own message, on one line as well
        assert "argument --dpi: invalid int value" in err
    assert not (sweep / "report").exists()  # nothing drawn, nothing written


def test_out_naming_a_file_is_one_line(tmp_path, capsys):
    sweep = make_sweep(tmp_path / "sweep", [job_frame("mlp1", 0)])
    taken = tmp_path / "taken.html"
    taken.write_text("mine")
    code, err = report_cli(capsys, sweep, "--out", taken)
    assert code == 2 and "is a file, not a folder" in one_line_error(err)
    assert taken.read_text() == "mine"
    code, err = report_cli(capsys, sweep, "--out", taken / "report")  # below a file
    assert code == 2 and "cannot create the folder" in one_line_error(err)


def test_a_very_long_facet_value_makes_a_report(tmp_path, capsys):
    long = "/datasets/" + "a-very-long-folder-name/" * 25  # 610 characters
    jobs = [
        job_frame("mlp1", 0, run_id=f"r{i}").assign(**{"data.root": f"{long}{i}"}) for i in (1, 2)
    ]
    sweep = make_sweep(tmp_path / "sweep", jobs)
    code, err = report_cli(capsys, sweep)
    assert code == 0, err
    pngs = sorted(p.name for p in (sweep / "report").glob("*.png"))
    assert len(pngs) == 4 and all(len(name) <= 120 for name in pngs)
    html = (sweep / "report" / "index.html").read_text()
    assert f"<h2>data.root={long}1</h2>" in html  # the page names the value in full
    assert sorted(re.findall(r"<img src='([^']+)'", html)) == pngs


def failed_sweep(root: Path, merged: bool) -> Path:
    """Two jobs that failed before their first row, as a sweep leaves them."""
    error = "data.root: no mnist IDX files in /nowhere and data.download=false"
    records = []
    for i, model in enumerate(("mlp1", "mlp3")):
        (root / str(i) / ".hydra").mkdir(parents=True)
        status = {"status": "failed", "error": error, "evals_done": 0, "run_id": f"r{i}"}
        (root / str(i) / "status.json").write_text(json.dumps(status))
        records.append({"job": str(i), "overrides": f"model={model}", **status, "rows": 0})
    if merged:
        pd.DataFrame(records).to_parquet(root / "jobs.parquet", index=False)
    return root


@pytest.mark.parametrize("merged", [True, False], ids=["jobs.parquet", "status.json"])
def test_a_sweep_whose_every_job_failed_says_so(tmp_path, capsys, merged):
    sweep = failed_sweep(tmp_path / "sweep", merged)
    code, err = report_cli(capsys, sweep)
    assert code == 2
    assert "every job failed (2 of 2" in one_line_error(err)
    assert "no mnist IDX files in /nowhere" in err and "give a job directory" not in err
    assert not (sweep / "report").exists()


def test_jobs_that_wrote_no_rows_are_named_on_the_page(tmp_path):
    sweep = make_sweep(tmp_path / "sweep", [job_frame("mlp1", s) for s in (0, 1)])
    jobs = [{"job": str(i), "run_id": f"mlp1-s{i}-b30", "status": "completed"} for i in (0, 1)]
    jobs.append({"job": "2", "run_id": "r2", "status": "failed", "error": "CUDA out of memory"})
    pd.DataFrame(jobs).to_parquet(sweep / "jobs.parquet", index=False)
    html = make_report(sweep, tmp_path / "out", dpi=40).read_text()
    assert "1 of 3 jobs wrote no rows" in html and "job 2: CUDA out of memory" in html


def test_the_report_does_not_import_torch(tmp_path):
    """The saturation note is read without its package, whose estimators import torch."""
    jobs = [job_frame("mlp1", 0).assign(I_XT=np.log2(360), saturated=True)]
    sweep = make_sweep(tmp_path / "sweep", jobs)
    code = (
        "import sys; from infoflow.report.page import main; main([sys.argv[1]]);"
        "html = open(sys.argv[1] + '/report/index.html').read();"
        "assert 'within 1% of its ceiling' in html, html;"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(sweep)], capture_output=True, text=True, timeout=300,
        env={k: v for k, v in ENV.items() if v},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_bench_report_prints_the_time_of_a_report(tmp_path):
    sweep = make_sweep(tmp_path / "sweep", [job_frame("mlp1", s) for s in (0, 1)])
    bench = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_report.py"
    proc = subprocess.run(
        [sys.executable, str(bench), str(sweep), "--reps", "1"], capture_output=True, text=True,
        timeout=300, env={k: v for k, v in ENV.items() if v},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    match = re.search(
        r"this checkout\s+([0-9.]+) s\s+\(median [0-9.]+ s, CPU [0-9.]+ s, (\d+) figures\)",
        proc.stdout,
    )
    assert match and float(match[1]) > 0 and match[2] == "2", proc.stdout


def test_a_damaged_table_is_named_even_when_jobs_failed(tmp_path, capsys):
    sweep = failed_sweep(tmp_path / "sweep", merged=True)
    (sweep / "0" / "mi.parquet").write_bytes(b"torn")  # one table, unreadable
    code, err = report_cli(capsys, sweep)
    assert code == 2 and "mi.parquet: not a readable Parquet file" in one_line_error(err)


# ----------------------------------------------------------------------------------------------
# compression verdicts: the table, the sentences, verdicts.csv, the peak on the plane


def verdict_jobs(seeds=(0, 1, 2), settings=("exact", "binning_30", "renyi"), run_prefix=""):
    """mlp3 jobs over 7 evaluations: I(X;T) of every layer peaks at epoch 3 and falls by a bit
    under exact and binning_30, and stays flat under renyi (bits, a little seed noise)."""
    jobs = []
    for setting in settings:
        for s in seeds:
            frame = job_frame("mlp3", s, epochs=6, run_id=f"{run_prefix}{setting}-{s}")
            e = frame["epoch"].to_numpy(float)
            rng = np.random.default_rng(s)
            if setting == "renyi":
                xt = np.full(len(e), 3.0)
            else:
                xt = np.where(e <= 3, 2.0 + e / 3, 3.0 - (e - 3) / 3)
            frame["I_XT"] = xt + 0.01 * frame["layer"] + 0.005 * rng.standard_normal(len(e))
            frame["estimator"] = setting
            frame["estimator.bins"] = 30 if setting == "binning_30" else np.nan
            jobs.append(frame)
    return jobs


def test_the_report_gives_the_verdicts_side_by_side(tmp_path):
    from infoflow import compression
    from infoflow.report.verdicts import side_by_side

    df = load(make_sweep(tmp_path / "sweep", verdict_jobs()))
    index = make_report(df, tmp_path / "out", dpi=40)
    html = index.read_text()
    assert "<h2>Compression verdicts</h2>" in html and "3 seeds" in html
    for layer in ("fc1", "fc2", "fc3"):
        sentence = f"<li>{layer}: compresses under exact and binning_30; no compression under renyi"
        assert sentence in html
    header = "<tr><th>model</th><th>layer</th><th>exact</th><th>binning_30</th><th>renyi</th></tr>"
    assert header in html
    assert html.count("class='v-compresses'") == 6 and html.count("class='v-no-compression'") == 3
    assert html.index("Compression verdicts") < html.index("<img")  # the answer comes first

    csv = pd.read_csv(index.parent / "verdicts.csv")
    expected, _, _ = side_by_side(compression(df))
    assert len(csv) == 9 and list(csv.columns) == list(expected.columns)
    assert csv["setting"].tolist() == expected["setting"].tolist()
    assert csv["verdict"].tolist() == expected["verdict"].tolist()
    np.testing.assert_allclose(csv["I_XT_drop"], expected["I_XT_drop"])
    assert (csv.loc[csv.setting != "renyi", "peak_epoch"] == 3).all()


def test_the_plane_marks_each_layer_peak(tmp_path):
    from infoflow import compression

    df = load(make_sweep(tmp_path / "sweep", verdict_jobs(settings=("exact",))))
    fig = information_plane(df)
    marks = by_gid(fig, "peak|")
    assert sorted(marks) == ["peak|mlp3|1", "peak|mlp3|2", "peak|mlp3|3"]
    mean = seed_mean(df, ["I_XT", "I_TY"])
    peaks = compression(df).set_index("layer")["peak_epoch"]
    for layer in (1, 2, 3):
        rows = mean[mean.layer == layer]
        top = rows.loc[rows["I_XT"].idxmax()]
        assert top["epoch"] == peaks[layer] == 3  # the seed-mean peak is compression()'s
        (x,), (y,) = marks[f"peak|mlp3|{layer}"].get_data()
        assert (x, y) == pytest.approx((top["I_XT"], top["I_TY"]))
    legend = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert "peak of I(X;T)" in legend


def test_a_seed_in_two_globbed_sweeps_is_counted_once_on_the_page(tmp_path):
    make_sweep(tmp_path / "runs" / "a", verdict_jobs((0, 1), ("exact",), run_prefix="a-"))
    make_sweep(tmp_path / "runs" / "b", verdict_jobs((0, 2), ("exact",), run_prefix="b-"))
    with pytest.warns(UserWarning) as caught:
        index = make_report(str(tmp_path / "runs" / "*"), tmp_path / "out", dpi=40)
    messages = [str(w.message) for w in caught if "counted once" in str(w.message)]
    assert messages == ["seed 0 of model=mlp3 is in 2 runs (a-exact-0, b-exact-0): each seed is "
                        "counted once, its runs averaged epoch by epoch (two sweeps loaded "
                        "together? load one sweep, or drop the repeats)"]  # fmt: skip
    summary = pd.read_csv(index.parent / "summary.csv")
    verdicts = pd.read_csv(index.parent / "verdicts.csv")
    assert (summary["n_seeds"] == 3).all()
    assert (verdicts["n_seeds"] == 3).all() and (verdicts["n_runs"] == 4).all()
    html = index.read_text()
    assert "seed 0 of model=mlp3 is in 2 runs (a-exact-0, b-exact-0)" in html
    assert "3 seeds" in html


def test_one_seed_says_every_verdict_is_undetermined(tmp_path):
    df = load(make_sweep(tmp_path / "sweep", verdict_jobs((0,), ("exact",))))
    html = make_report(df, tmp_path / "out", dpi=40).read_text()
    assert "1 seed: every verdict is undetermined" in html
    assert "<li>fc1: undetermined under exact</li>" in html


def test_bench_report_times_the_verdicts(capsys):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_report.py"
    spec = importlib.util.spec_from_file_location("bench_report", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    df = bench.synthetic_sweep(n_seeds=4, layers=2, epochs=10)
    assert df.groupby(["estimator", "seed"])["run_id"].nunique().eq(1).all()
    assert len(df) == 3 * 4 * 2 * 11
    bench.time_verdicts(4, reps=1)
    out = capsys.readouterr().out
    assert "verdicts of 4 seeds x 5 layers x 101 evaluations x 3 estimator settings" in out
    match = re.search(r"best of 1\s+([0-9.]+) s .*CPU ([0-9.]+) s, 15 verdicts", out)
    assert match and float(match[1]) > 0, out
