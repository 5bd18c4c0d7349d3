"""``python -m infoflow.report PATH [PATH ...] [--out DIR]``: figures and tables of a sweep.

Writes into ``DIR`` (default: ``PATH/report`` for one directory, beside the data otherwise):

- ``plane[__<key>=<value>...].png``: the information plane, one panel per model, one figure
  per value of every other key the sweep varied (``estimator.bins``, ``model.activation``, ...);
- ``curves[__...].png``: I(X;T), I(T;Y) (bits) and accuracy against epoch per model and layer,
  mean over seeds with a 95% interval band;
- ``summary.csv``: the last epoch per model and layer (and varied key): mean, std, 95% interval
  half-width and number of seeds of I_XT, I_TY, eval_acc;
- ``runs.csv``: one line per run: its varied keys, seed, last epoch, final accuracy (status);
- ``index.html``: all of the above on one page (PNG files referenced by relative path).

The varied keys are found from the table (:func:`infoflow.loading.varying_keys`); seeds are
never a facet, they are averaged. Rendering is headless (Agg, no pyplot).
"""

from __future__ import annotations

import argparse
import html
import os
import re
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from infoflow.loading import (
    GROUPS,
    LoadError,
    Source,
    _find_tables,
    final_summary,
    load,
    varying_keys,
)
from infoflow.plots import curves_vs_epoch, information_plane

DPI = 130


def facets(df: pd.DataFrame, keys: Sequence[str]) -> list[tuple[dict, pd.DataFrame]]:
    """Split ``df`` by every combination of ``keys`` that occurs: ``[({key: value}, rows)]``."""
    if not keys:
        return [({}, df)]
    out = []
    for values, rows in df.groupby(list(keys), dropna=False, sort=True):
        values = values if isinstance(values, tuple) else (values,)
        out.append((dict(zip(keys, values)), rows))
    return out


def _fmt(value: object) -> str:
    if isinstance(value, float):
        if np.isnan(value):
            return "none"
        return f"{value:g}"
    return str(value)


def facet_keys(df: pd.DataFrame, varied: Sequence[str]) -> list[str]:
    """The varied keys that split figures: all but ``model`` (the panels), and but a key that
    follows another facet choice (``trainer.batch_size`` set by ``data=digits``'s defaults
    when the sweep varies ``data``), which would add no split, only a longer title."""
    keys = [k for k in varied if k != "model"]
    choices = [k for k in keys if k in GROUPS]
    return [
        k
        for k in keys
        if k in GROUPS
        or not any(
            (df.groupby(g, dropna=False)[k].nunique(dropna=False) <= 1).all() for g in choices
        )
    ]


def _sorted(values: Sequence) -> list:
    """Numbers numerically (4 before 10), everything else as text."""
    try:
        return sorted(values, key=float)
    except (TypeError, ValueError):
        return sorted(values, key=str)


def facet_label(facet: dict) -> str:
    """``estimator.bins=4, model.activation=tanh``."""
    return ", ".join(f"{k}={_fmt(v)}" for k, v in facet.items())


def facet_slug(facet: dict) -> str:
    """File-name part for a facet: ``__estimator.bins=4__model.activation=tanh``."""
    return "".join(
        "__" + re.sub(r"[^A-Za-z0-9_.=+-]", "_", f"{k}={_fmt(v)}") for k, v in facet.items()
    )


def context_line(rows: pd.DataFrame, varied: Sequence[str]) -> str:
    """What a figure holds besides its facet: the fixed choices and the seeds averaged."""
    parts = []
    keys = ("estimator.bins", "estimator.bin_width", "optimizer.lr")
    for key in (*[g for g in GROUPS if g != "model"], *keys):
        if key in rows.columns and key not in varied:
            values = rows[key].dropna().unique()
            if len(values) == 1:
                parts.append(f"{key}={_fmt(values[0])}")
    if "seed" in rows.columns:
        seeds = sorted(rows["seed"].dropna().unique())
        shown = ", ".join(_fmt(s) for s in seeds[:6]) + (", ..." if len(seeds) > 6 else "")
        parts.append(f"mean over {len(seeds)} seed{'s' if len(seeds) != 1 else ''} ({shown})")
    return " · ".join(parts)


def runs_table(df: pd.DataFrame, varied: Sequence[str]) -> pd.DataFrame:
    """One row per run: its varied keys, seed, last epoch, final accuracies, status."""
    keys = [k for k in ("model", *varied, "seed") if k in df.columns]
    keys = list(dict.fromkeys(keys))
    last = df.sort_values(["run_id", "epoch"]).groupby("run_id", sort=False).tail(1)
    cols = ["run_id", *keys, "epoch"] + [
        c for c in ("train_acc", "eval_acc", "status") if c in df.columns
    ]
    out = last[cols].rename(columns={"epoch": "last_epoch"})
    if "trainer.epochs" in df.columns:
        out.insert(out.columns.get_loc("last_epoch") + 1, "epochs", last["trainer.epochs"])
    return out.sort_values([*keys, "run_id"]).reset_index(drop=True)


# Data sets whose inputs are a finite set of equiprobable patterns: with every one of them
# probed (``probe.samples=all``), log2(n_samples) = H(X) and I(X;T) at that ceiling means the
# layer keeps all the input's information, a finding rather than an artifact of the count.
INPUT_PATTERNS = {"tishby": 4096}


def whole_input_space(df: pd.DataFrame) -> pd.Series:
    """True for rows estimated on every input pattern of their data set (``INPUT_PATTERNS``)."""
    if "data" not in df.columns:
        return pd.Series(False, index=df.index)
    patterns = df["data"].map(INPUT_PATTERNS)
    return patterns.notna() & (df["n_samples"] == patterns)


def saturation_note(df: pd.DataFrame) -> str | None:
    """A sentence when I(X;T) sits at its ceiling for a quarter of the rows or more.

    The text is :func:`infoflow.estimators.saturation_warning`'s (the one jobs and sweeps
    log), at the report's lower threshold. Rows that probe the whole input space (the Tishby
    task with ``probe.samples=all``) are left out: there the ceiling is H(X) itself.
    """
    from infoflow.estimators import saturation_warning  # imports torch: only when needed

    df = df[~whole_input_space(df)]
    if df.empty:
        return None
    return saturation_warning(df, min_fraction=0.25 - 1e-12)


def default_out(source: Source) -> Path:
    """``<dir>/report`` for one directory; otherwise beside the common parent of the tables."""
    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        return Path(source) / "report"
    jobs, sweeps = _find_tables(source)
    common = Path(os.path.commonpath([str(p.parent) for p in [*jobs, *sweeps]]))
    return common / "report"


def make_report(
    source: Source | pd.DataFrame, out: str | os.PathLike | None = None, dpi: int = DPI
) -> Path:
    """Write the report of ``source`` (paths as for :func:`infoflow.load`, or a loaded table)
    into ``out``; return the path of ``index.html``."""
    if isinstance(source, pd.DataFrame):
        df, origin = source, "a DataFrame"
        if out is None:
            raise ValueError("make_report: out is required when source is a DataFrame")
    else:
        df = load(source)
        origin = (
            os.fspath(source)
            if isinstance(source, (str, os.PathLike))
            else ", ".join(map(os.fspath, source))
        )
    out = Path(out) if out is not None else default_out(source)
    out.mkdir(parents=True, exist_ok=True)
    varied = varying_keys(df)
    split = facet_keys(df, varied)

    sections = []
    for facet, rows in facets(df, split):
        label = facet_label(facet)
        context = context_line(rows, varied)
        slug = facet_slug(facet)
        by = "by model" if rows.get("model", pd.Series(dtype=str)).nunique() > 1 else ""
        head = " · ".join(p for p in (label,) if p)
        files = []
        for kind, fn, name in (
            ("plane", information_plane, f"Information plane {by}"),
            ("curves", curves_vs_epoch, f"I(X;T), I(T;Y) and accuracy per epoch {by}"),
        ):
            title = f"{name.strip()}" + (f"  |  {head}" if head else "") + f"\n{context}"
            fig = fn(rows, title=title)
            path = out / f"{kind}{slug}.png"
            fig.savefig(path, dpi=dpi)
            files.append(path.name)
        sections.append((label, context, files))

    summary = final_summary(df)
    summary.to_csv(out / "summary.csv", index=False)
    runs = runs_table(df, varied)
    runs.to_csv(out / "runs.csv", index=False)
    index = out / "index.html"
    index.write_text(_html(df, origin, varied, sections, summary, runs), encoding="utf-8")
    return index


def _summary_html(summary: pd.DataFrame) -> str:
    names = {"I_XT": "I(X;T) [bits]", "I_TY": "I(T;Y) [bits]", "eval_acc": "eval accuracy"}
    shown = summary.copy()
    for v, name in names.items():
        if f"{v}_mean" in shown:
            shown[f"{name} mean"] = shown.pop(f"{v}_mean")
            shown[f"{name} std"] = shown.pop(f"{v}_std")
            shown.pop(f"{v}_ci95")
    return shown.to_html(
        index=False, float_format=lambda v: f"{v:.3f}", na_rep="–", classes="t", border=0
    )


def _html(
    df: pd.DataFrame,
    origin: str,
    varied: Sequence[str],
    sections: list[tuple[str, str, list[str]]],
    summary: pd.DataFrame,
    runs: pd.DataFrame,
) -> str:
    e = html.escape
    keys = "".join(
        f"<tr><th>{e(k)}</th><td>{e(', '.join(_fmt(v) for v in _sorted(df[k].unique())))}</td></tr>"
        for k in varied
    )
    n_seeds = df["seed"].nunique() if "seed" in df.columns else 1
    note = saturation_note(df)
    body = [
        "<h1>infoflow report</h1>",
        f"<p>Source: <code>{e(origin)}</code> · {df['run_id'].nunique()} runs · {len(df)} rows ·"
        f" {n_seeds} seed{'s' if n_seeds != 1 else ''} · written "
        f"{datetime.now():%Y-%m-%d %H:%M}</p>",
        "<h2>What the sweep varied</h2>",
        f"<table class='t'>{keys}</table>" if keys else "<p>Nothing but the seed.</p>",
        "<p>Information plane: I(X;T) on x, I(T;Y) on y, in bits; one trajectory per layer, "
        "colour = epoch (0 = untrained, open marker), points are the mean over seeds. Curves: the "
        "mean over seeds with the Student-t 95% interval of the mean as a band (wide for 2 "
        "seeds: t = 12.7).</p>",
    ]
    if note:
        body.append(f"<p class='note'>{e(note)}</p>")
    if "status" in runs.columns:
        bad = runs[runs["status"].notna() & (runs["status"] != "completed")]
        if len(bad):
            listed = ", ".join(
                f"{r.run_id} ({r.status}, last epoch {_fmt(r.last_epoch)})"
                for r in bad.itertuples(index=False)
            )
            body.append(
                f"<p class='note'>{len(bad)} run{'s' if len(bad) != 1 else ''} did not complete "
                f"and {'are' if len(bad) != 1 else 'is'} left out of the last-epoch summary "
                f"(their curves stop where they stopped): {e(listed)}. "
                "<code>jobs.parquet</code> in the sweep folder says why.</p>"
            )
    for label, context, files in sections:
        body.append(f"<h2>{e(label) if label else 'All runs'}</h2><p>{e(context)}</p>")
        body.extend(f"<img src='{e(f)}' alt='{e(f)}'>" for f in files)
    body += [
        "<h2>Last epoch over seeds</h2>",
        "<p>Per model and layer at the last epoch: mean, std (ddof=1) and number of seeds "
        "(<a href='summary.csv'>summary.csv</a> also has the 95% interval half-widths).</p>",
        _summary_html(summary),
        f"<h2>Runs</h2><p><a href='runs.csv'>runs.csv</a></p><details><summary>{len(runs)} "
        "runs</summary>",
        runs.to_html(index=False, float_format=lambda v: f"{v:.3f}", na_rep="–", classes="t",
                     border=0),
        "</details>",
    ]  # fmt: skip
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}"
        "img{max-width:100%;display:block;margin:1em 0;border:1px solid #ddd}"
        "table.t{border-collapse:collapse;font-size:13px}"
        "table.t td,table.t th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}"
        ".note{background:#fff4d6;padding:.6em 1em;border-left:4px solid #e0a800}"
        "code{background:#f3f3f3;padding:0 3px}"
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>infoflow report</title>"
        f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infoflow.report",
        description="Information-plane figures, seed statistics and an index.html from infoflow "
        "result tables (job dirs, sweep dirs, .parquet files or quoted globs).",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="job/sweep dir, file or glob")
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: PATH/report)"
    )
    parser.add_argument("--dpi", type=int, default=DPI, help=f"PNG resolution (default {DPI})")
    args = parser.parse_args(argv)
    source = args.paths[0] if len(args.paths) == 1 else args.paths
    try:
        index = make_report(source, args.out, dpi=args.dpi)
    except LoadError as err:
        parser.exit(2, f"infoflow.report: error: {err}\n")
    print(f"wrote {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
