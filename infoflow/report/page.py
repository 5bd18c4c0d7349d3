"""``python -m infoflow.report PATH [PATH ...] [--out DIR] [--dpi N]``: figures and tables.

Writes into ``DIR`` (default: ``PATH/report`` for one directory, beside the data otherwise):

- ``plane__<facet>.png``: the information plane, one panel per model, one figure per value of
  every other key the sweep varied (``estimator.bins``, ``model.activation``, ...);
- ``curves__<facet>.png``: I(X;T), I(T;Y) (bits) and accuracy against epoch per model and
  layer, mean over seeds with a 95% interval band;
- ``summary.csv``: the last epoch per model and layer (and varied key): mean, std, 95% interval
  half-width and number of seeds of I_XT, I_TY, eval_acc;
- ``runs.csv``: one line per run: its varied keys, seed, last epoch, final accuracy (status);
- ``verdicts.csv``: the compression verdict per configuration, layer and estimator setting
  (:func:`infoflow.compression` with a ``setting`` column, :func:`verdict_section`);
- ``index.html``: all of the above on one page (PNG files referenced by relative path), the
  verdicts as a table with the estimator settings side by side and a sentence per layer.

Figure file names (:func:`figure_name`), one rule for every report: ``<kind>__<facet>.png``,
``<kind>`` being ``plane`` or ``curves``. ``<facet>`` is ``all`` when the sweep varied nothing
but ``model`` and ``seed``, else ``<key>=<value>`` for each facet key, joined by ``__``, in the
order of the page's "What the sweep varied" table: ``plane__all.png``,
``curves__estimator.bins=30.png``, ``plane__data=mnist__model.activation=tanh.png``. Values are
written as on the page (``30``, ``0.001``, ``none`` for a missing value). When a key or value
holds a character other than ``A-Z a-z 0-9 _ . + -``, or the facet part would be longer than
100 characters, each such character becomes ``_``, the part is cut to 80 characters and
``~`` and the first 8 hex digits of the SHA-1 of the exact ``key=value__...`` text follow
(``data.root=/data/fashion`` gives ``plane__data.root=_data_fashion~f77b4ea8.png``): names
stay short and safe in a URL, and two facets never share a file. ``plane__*.png`` therefore
lists every plane of any report.

The varied keys are found from the table (:func:`infoflow.report.load.varying_keys`); seeds are
never a facet, they are averaged. Rendering is headless (Agg, no pyplot). Errors a user can
cause (a path without tables, a sweep whose every job failed, ``--out`` naming a file, a
``--dpi`` outside 20-600, a figure too large to draw) end the command with one line,
``infoflow.report: error: ...``, and exit status 2.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import html
import importlib.util
import os
import re
import sys
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from infoflow.report.load import (
    GROUPS,
    LoadError,
    Source,
    _find_tables,
    final_summary,
    load,
    varying_keys,
)
from infoflow.report.verdicts import (
    MIN_SEEDS,
    PEAK_FOLDS,
    compression,
    side_by_side,
    verdict_sentences,
)

DPI = 130
#: the --dpi a report accepts: below, text is unreadable; above, a figure takes gigabytes
DPI_RANGE = (20, 600)
#: the largest PNG drawn, in pixels (Agg needs 4 bytes each: about 400 MB)
MAX_PIXELS = 10**8
FIGURE_KINDS = ("plane", "curves")
#: longest facet part of a figure name before it is cut and given a hash
MAX_FACET_CHARS = 100
_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]")


class ReportError(ValueError):
    """A report that cannot be written as asked; the message says why and what to do."""


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


def figure_name(kind: str, facet: dict) -> str:
    """The file name of a figure: ``<kind>__<facet>.png`` (the rule is in the module's doc).

    >>> figure_name("plane", {})
    'plane__all.png'
    >>> figure_name("curves", {"estimator.bins": 30, "model.activation": "tanh"})
    'curves__estimator.bins=30__model.activation=tanh.png'
    """
    if not facet:
        return f"{kind}__all.png"
    exact = "__".join(f"{k}={_fmt(v)}" for k, v in facet.items())
    safe = "__".join(
        f"{_UNSAFE.sub('_', str(k))}={_UNSAFE.sub('_', _fmt(v))}" for k, v in facet.items()
    )
    if safe != exact or len(safe) > MAX_FACET_CHARS:
        digest = hashlib.sha1(exact.encode("utf-8")).hexdigest()[:8]
        safe = f"{safe[:80]}~{digest}"
    return f"{kind}__{safe}.png"


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


def _saturation_warning():
    """:func:`infoflow.estimators.saturation.saturation_warning`, without importing torch.

    That module needs only pandas, but importing it through its package runs
    ``infoflow/estimators/__init__.py``, which imports every estimator and with them torch:
    1-2 s, more than the rest of a small report. So unless the package is loaded already, the
    one file is loaded on its own (under a private name); the text is the same function's.
    """
    module = sys.modules.get("infoflow.estimators.saturation")
    if module is None:
        path = Path(__file__).resolve().parents[1] / "estimators" / "saturation.py"
        spec = importlib.util.spec_from_file_location("infoflow.report._saturation", path)
        if spec is None or spec.loader is None:  # not a plain file (a zip): the normal way
            from infoflow.estimators.saturation import saturation_warning

            return saturation_warning
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module.saturation_warning


def saturation_note(df: pd.DataFrame) -> str | None:
    """A sentence when I(X;T) sits at its ceiling for a quarter of the rows or more.

    The text is :func:`infoflow.estimators.saturation_warning`'s (the one jobs and sweeps
    log), at the report's lower threshold. Rows that probe the whole input space (the Tishby
    task with ``probe.samples=all``) are left out: there the ceiling is H(X) itself.
    """
    df = df[~whole_input_space(df)]
    if df.empty:
        return None
    return _saturation_warning()(df, min_fraction=0.25 - 1e-12)


# ----------------------------------------------------------------------------------------------
# jobs that left no rows


def _expand(source: Source) -> list[Path]:
    """The existing paths ``source`` names (globs expanded), as :func:`load` reads them."""
    items = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    paths = []
    for item in items:
        text = os.path.expanduser(os.fspath(item))
        matches = sorted(glob.glob(text, recursive=True)) if glob.has_magic(text) else [text]
        paths += [Path(m) for m in matches if os.path.exists(m)]
    return paths


def job_outcomes(source: Source) -> pd.DataFrame:
    """Every launched job under ``source`` with its ``status`` and ``error``, and ``where``.

    From the sweeps' ``jobs.parquet`` (which lists jobs that left no directory too); where a
    sweep has none (it was killed before merging), from the jobs' ``status.json``. Empty when
    ``source`` names files or holds neither.
    """
    from infoflow.io import JOB_TABLE, JOBS_TABLE, STATUS_FILE, read_status

    tables, status_dirs = [], []
    for path in _expand(source):
        if not path.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            if JOBS_TABLE in filenames:
                tables.append(Path(dirpath, JOBS_TABLE))
                dirnames[:] = []  # its jobs are in the table
            elif STATUS_FILE in filenames:
                status_dirs.append(Path(dirpath))
    frames = []
    for table in tables:
        try:
            jobs = pd.read_parquet(table)
        except Exception:  # a torn or foreign file says nothing about the jobs; the rest do
            continue
        if "status" in jobs.columns:
            frames.append(jobs.assign(where=str(table)))
    for job_dir in status_dirs:
        status, _ = read_status(job_dir)
        if status:
            row = {k: status.get(k) for k in ("run_id", "status", "error")}
            rows = 1 if (job_dir / JOB_TABLE).is_file() else 0  # some rows, or none
            frames.append(pd.DataFrame([{**row, "job": job_dir.name, "rows": rows,
                                         "where": str(job_dir / STATUS_FILE)}]))  # fmt: skip
    columns = ["job", "run_id", "overrides", "status", "error", "rows", "where"]
    if not frames:
        return pd.DataFrame(columns=columns)
    out = pd.concat(frames, ignore_index=True)
    for col in columns:
        if col not in out.columns:
            out[col] = None
    return out


def no_rows(jobs: pd.DataFrame, df: pd.DataFrame) -> pd.Series:
    """True for the jobs of :func:`job_outcomes` that have no row in ``df``: their ``rows``
    count is 0, or, where it is unknown, their ``run_id`` is not in the table."""
    rows = pd.to_numeric(jobs["rows"], errors="coerce")
    unknown = ~jobs["run_id"].astype(str).isin(set(df["run_id"].astype(str)))
    return (rows == 0) | (rows.isna() & jobs["run_id"].notna() & unknown)


def _job_text(job: pd.Series, width: int = 300) -> str:
    """``job 3 (model=mlp1 seed=2): <error, one line>``."""

    def text(key: str) -> str:  # "" for a missing value (None, NaN)
        value = job.get(key)
        return "" if value is None or (np.ndim(value) == 0 and pd.isna(value)) else str(value)

    name = f"job {text('job')}" if text("job") else "a job that did not start"
    if text("overrides"):
        name += f" ({text('overrides')})"
    error = " ".join((text("error") or f"{text('status')}, no error recorded").split())
    return f"{name}: {error[:width] + ('...' if len(error) > width else '')}"


def _holds_tables(source: Source) -> bool:
    """True when ``source`` names or holds an ``mi.parquet`` or ``results.parquet``."""
    try:
        _find_tables(source)
    except LoadError:
        return False
    return True


def no_rows_reason(source: Source) -> str | None:
    """Why ``source`` holds no table although it holds jobs, in one line; None otherwise."""
    jobs = job_outcomes(source)
    if jobs.empty:
        return None
    places = list(dict.fromkeys(jobs["where"]))
    where = (
        ", ".join(places)
        if len(places) <= 2
        else f"{len(places)} files under {os.path.commonpath(places)}"
    )
    status = jobs["status"].fillna("unknown").astype(str)
    failed = jobs[status == "failed"]
    if len(failed) == len(jobs):
        return (
            f"every job failed ({len(jobs)} of {len(jobs)} in {where}), so there is nothing to "
            f"report; {_job_text(failed.iloc[0])} (each job's status.json and log say why)"
        )
    counts = ", ".join(f"{n} {s}" for s, n in status.value_counts().items())
    first = _job_text(failed.iloc[0]) if len(failed) else "none failed"
    return f"no job under {where} wrote a row ({counts}); {first}"


# ----------------------------------------------------------------------------------------------
# the report


def default_out(source: Source) -> Path:
    """``<dir>/report`` for one directory; otherwise beside the common parent of the tables."""
    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        return Path(source) / "report"
    jobs, sweeps = _find_tables(source)
    common = Path(os.path.commonpath([str(p.parent) for p in [*jobs, *sweeps]]))
    return common / "report"


def check_dpi(dpi: object) -> int:
    """``dpi`` as an int when it is one in :data:`DPI_RANGE`; else :class:`ReportError`."""
    lo, hi = DPI_RANGE
    if isinstance(dpi, bool) or not isinstance(dpi, (int, np.integer)) or not lo <= dpi <= hi:
        raise ReportError(
            f"--dpi must be an integer from {lo} to {hi} (screen 100-150, print 300), got {dpi!r}"
        )
    return int(dpi)


def _out_dir(out: Path) -> Path:
    """Create the output folder; :class:`ReportError` when it is a file or cannot be made."""
    if out.exists() and not out.is_dir():
        raise ReportError(
            f"--out {out} is a file, not a folder: give a folder to write the report into "
            "(it is created when missing)"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ReportError(f"cannot create the folder --out {out}: {err.strerror or err}") from err
    return out


def make_report(
    source: Source | pd.DataFrame, out: str | os.PathLike | None = None, dpi: int = DPI
) -> Path:
    """Write the report of ``source`` (paths as for :func:`infoflow.load`, or a loaded table)
    into ``out``; return the path of ``index.html``.

    Raises
    ------
    LoadError
        ``source`` holds no readable table (:func:`no_rows_reason` says why, for a sweep).
    ReportError
        ``dpi`` outside :data:`DPI_RANGE`, ``out`` is a file or cannot be created, a figure
        would exceed :data:`MAX_PIXELS`.
    """
    dpi = check_dpi(dpi)
    if isinstance(source, pd.DataFrame):
        df, origin = source, "a DataFrame"
        if out is None:
            raise ValueError("make_report: out is required when source is a DataFrame")
        jobs = None
    else:
        try:
            df = load(source)
        except LoadError as err:
            # no table at all (not a damaged one, whose error names it): say what the jobs did
            reason = None if _holds_tables(source) else no_rows_reason(source)
            if reason is None:
                raise
            raise LoadError(reason) from err
        origin = (
            os.fspath(source)
            if isinstance(source, (str, os.PathLike))
            else ", ".join(map(os.fspath, source))
        )
        jobs = job_outcomes(source)
    out = _out_dir(Path(out) if out is not None else default_out(source))
    varied = varying_keys(df)
    split = facet_keys(df, varied)

    from infoflow.report.plots import write_png  # matplotlib: only once the input is good

    sections: list = []
    # PNG compression (zlib, which lets go of the GIL) runs in a thread, beside the drawing of
    # the next figure and the tables
    with ThreadPoolExecutor(max_workers=1) as writer:
        written = [
            writer.submit(write_png, rgb, path, dpi)
            for rgb, path in _draw_facets(df, split, varied, out, dpi, sections)
        ]
        # both warn of a seed loaded twice, in the same words: said once, and on the page
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            summary = final_summary(df)
            verdicts = verdict_section(df)
        for message in dict.fromkeys(str(w.message) for w in caught):
            warnings.warn(message, UserWarning, stacklevel=2)
        runs = runs_table(df, varied)
        page = _html(df, origin, varied, sections, summary, runs, jobs, verdicts)
        for done in written:
            done.result()  # an error writing a figure (a full disk) is raised here
    summary.to_csv(out / "summary.csv", index=False)
    runs.to_csv(out / "runs.csv", index=False)
    verdicts.table.to_csv(out / "verdicts.csv", index=False)
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def _draw_facets(
    df: pd.DataFrame,
    split: Sequence[str],
    varied: Sequence[str],
    out: Path,
    dpi: int,
    sections: list,
):
    """Draw the figures of every facet; yield each one's ``(pixels, path)`` to be written and
    append ``(label, context, [(file, alt, width, height)])`` per facet to ``sections``."""
    from infoflow.report.plots import curves_vs_epoch, information_plane, pixel_size, render

    figures = {}  # kind -> the last figure drawn: the next facet redraws it (same grid)
    for facet, rows in facets(df, split):
        label = facet_label(facet)
        context = context_line(rows, varied)
        by = "by model" if rows.get("model", pd.Series(dtype=str)).nunique() > 1 else ""
        files = []
        for kind, fn, name in (
            ("plane", information_plane, f"Information plane {by}"),
            ("curves", curves_vs_epoch, f"I(X;T), I(T;Y) and accuracy per epoch {by}"),
        ):
            title = name.strip() + (f"  |  {label}" if label else "") + f"\n{context}"
            fig = figures[kind] = fn(rows, title=title, reuse=figures.get(kind))
            width, height = pixel_size(fig, dpi)
            if width * height > MAX_PIXELS:
                raise ReportError(
                    f"{figure_name(kind, facet)} would be {width} x {height} pixels at --dpi "
                    f"{dpi}, more than {MAX_PIXELS:,}: use a lower --dpi"
                )
            path = out / figure_name(kind, facet)
            yield render(fig, dpi), path
            files.append((path.name, f"{name.strip()}: {label or 'all runs'}", width, height))
        sections.append((label, context, files))


@dataclass
class VerdictSection:
    """The report's compression verdicts: ``table`` (:func:`infoflow.compression`'s rows with
    their estimator ``setting``, as written to ``verdicts.csv``), ``rows`` (the keys of a row
    besides the layer), ``settings`` (the columns, in order), ``sentences`` (one per layer),
    ``notes`` (the warnings compression() gave: seeds loaded twice) and ``html``."""

    table: pd.DataFrame
    rows: list[str]
    settings: list[str]
    sentences: list[str]
    notes: list[str]
    html: str


def verdict_section(df: pd.DataFrame, min_drop: float = 0.1) -> VerdictSection:
    """Compression verdicts of every configuration and layer of ``df``, the estimator settings
    side by side (:func:`infoflow.report.verdicts.side_by_side`), as the page shows them."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        verdicts = compression(df, min_drop=min_drop)
    notes = list(dict.fromkeys(str(w.message) for w in caught))
    for message in notes:  # still a warning to whoever called
        warnings.warn(message, UserWarning, stacklevel=2)
    table, rows, settings = side_by_side(verdicts)
    sentences = verdict_sentences(table, rows)
    html_text = _verdict_html(table, rows, settings, sentences, notes, min_drop)
    return VerdictSection(table, rows, settings, sentences, notes, html_text)


def _verdict_cell(row: pd.Series | None, show_n: bool) -> str:
    """``compresses`` over ``1.23 [0.95, 1.50] · peak 30``; a dash where the setting has no
    such layer."""
    if row is None:
        return "<td>–</td>"
    e = html.escape

    def bits(v: float) -> str:
        return "–" if pd.isna(v) else f"{v:.2f}"

    detail = (
        f"{bits(row['I_XT_drop'])} [{bits(row['I_XT_drop_lo'])}, {bits(row['I_XT_drop_hi'])}]"
        f" · peak {_fmt(row['peak_epoch'])}"
    )
    if show_n:
        detail += f" · {row['n_seeds']} seed{'s' if row['n_seeds'] != 1 else ''}"
    verdict = str(row["verdict"])
    css = "v-" + verdict.replace(" ", "-")
    return f"<td class='{css}'><b>{e(verdict)}</b><br><small>{e(detail)}</small></td>"


def _verdict_html(
    table: pd.DataFrame,
    rows: list[str],
    settings: list[str],
    sentences: list[str],
    notes: list[str],
    min_drop: float,
) -> str:
    e = html.escape
    if table.empty:
        return "<h2>Compression verdicts</h2><p>No rows to judge.</p>"
    layer = [c for c in ("layer", "layer_name") if c in table.columns]
    seeds = sorted(table["n_seeds"].unique())
    n_text = (
        f"{seeds[0]} seed{'s' if seeds[0] != 1 else ''}"
        if len(seeds) == 1
        else f"{seeds[0]} to {seeds[-1]} seeds (given in each cell)"
    )
    parts = [
        "<h2>Compression verdicts</h2>",
        "<p>Does I(X;T) fall after its peak? Per configuration, layer and estimator setting: "
        "the drop of I(X;T) from its peak to the last epoch in bits, its 95% bootstrap "
        f"interval over {e(n_text)}, and the epoch at which the seed mean peaks (marked on "
        f"the planes). <b>compresses</b>: the interval lies above {min_drop:g} bit; "
        f"<b>no compression</b>: below it; <b>undetermined</b>: across it, or fewer than "
        f"{MIN_SEEDS} seeds. Each seed's peak is chosen on the other seeds "
        f"({PEAK_FOLDS}-fold cross-fitting), so seed noise cannot make a flat trajectory "
        "compress. Every number is in <a href='verdicts.csv'>verdicts.csv</a>.</p>",
    ]
    if max(seeds) < MIN_SEEDS:
        parts.append(
            f"<p class='note'>{max(seeds)} seed{'s' if max(seeds) != 1 else ''}: every verdict "
            f"is undetermined. Run {MIN_SEEDS} seeds or more (<code>-m "
            f"'seed=range({max(5, MIN_SEEDS)})'</code>) for a verdict.</p>"
        )
    parts += [f"<p class='note'>{e(note)}</p>" for note in notes]
    parts.append("<ul class='verdicts'>" + "".join(f"<li>{e(s)}</li>" for s in sentences) + "</ul>")
    show_n = len(seeds) > 1
    head = [*rows, "layer", *settings]
    out = ["<table class='t v'><tr>" + "".join(f"<th>{e(str(h))}</th>" for h in head) + "</tr>"]
    for _, g in table.groupby([*rows, *layer], dropna=False, sort=False):
        first = g.iloc[0]
        name = first["layer_name"] if "layer_name" in g else f"layer {first['layer']}"
        cells = [f"<th>{e(_fmt(first[k]))}</th>" for k in rows] + [f"<th>{e(_fmt(name))}</th>"]
        by_setting = {r["setting"]: r for _, r in g.iterrows()}
        cells += [_verdict_cell(by_setting.get(s), show_n) for s in settings]
        out.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("".join(out) + "</table>")
    return "\n".join(parts)


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


# Runs when the page has loaded: marks <body data-images="loaded"> when every figure decoded,
# else "missing" with a note naming them (index.html moved without its PNG files). Headless
# browsers in the tests read the mark.
_IMAGE_CHECK = """<script>
addEventListener("load", function () {
  var missing = [].filter.call(document.images, function (img) {
    return !(img.complete && img.naturalWidth > 0);
  });
  document.body.setAttribute("data-images", missing.length ? "missing" : "loaded");
  if (missing.length) {
    var note = document.createElement("p");
    note.className = "note";
    note.textContent = "Figures that did not load (keep index.html beside its PNG files): " +
      missing.map(function (img) { return img.getAttribute("src"); }).join(", ");
    document.body.insertBefore(note, document.body.firstChild);
  }
});
</script>"""


def _html(
    df: pd.DataFrame,
    origin: str,
    varied: Sequence[str],
    sections: list[tuple[str, str, list[tuple[str, str, int, int]]]],
    summary: pd.DataFrame,
    runs: pd.DataFrame,
    jobs: pd.DataFrame | None = None,
    verdicts: VerdictSection | None = None,
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
        "colour = epoch (0 = untrained, open marker), points are the mean over seeds, a black "
        "bar marks each layer's peak I(X;T) (the rightmost point of its seed mean). Curves: the "
        "mean over seeds with the Student-t 95% interval of the mean as a band (wide for 2 "
        "seeds: t = 12.7). An axis spans at least half a bit (or a tenth of log2 N), so a "
        "change smaller than that stays small; dotted lines are the ceilings log2 N and H(Y), "
        "and a panel names the layers whose I(X;T) stays at its ceiling.</p>",
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
    if jobs is not None and len(jobs):
        absent = jobs[no_rows(jobs, df)]
        if len(absent):
            listed = "; ".join(_job_text(job, 200) for _, job in absent.head(10).iterrows())
            more = f"; and {len(absent) - 10} more" if len(absent) > 10 else ""
            body.append(
                f"<p class='note'>{len(absent)} of {len(jobs)} jobs wrote no rows and are not "
                f"in this report: {e(listed + more)}.</p>"
            )
    if verdicts is not None:
        body.append(verdicts.html)
    for label, context, files in sections:
        body.append(f"<h2>{e(label) if label else 'All runs'}</h2><p>{e(context)}</p>")
        body.extend(
            f"<img src='{e(name)}' alt='{e(alt)}' width='{w}' height='{h}'>"
            for name, alt, w, h in files
        )
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
        _IMAGE_CHECK,
    ]  # fmt: skip
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}"
        "img{max-width:100%;height:auto;display:block;margin:1em 0;border:1px solid #ddd}"
        "table.t{border-collapse:collapse;font-size:13px}"
        "table.t td,table.t th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right;"
        "overflow-wrap:anywhere}"
        "h2{overflow-wrap:anywhere}"
        ".note{background:#fff4d6;padding:.6em 1em;border-left:4px solid #e0a800;"
        "overflow-wrap:anywhere}"
        "code{background:#f3f3f3;padding:0 3px}"
        "table.v td{text-align:left;vertical-align:top}"
        "table.v small{color:#555}"
        ".v-compresses{background:#e3f1e6}"
        ".v-no-compression{background:#f1f1f1}"
        ".v-undetermined{background:#fff8e1}"
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>infoflow report</title>"
        f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (errors: one line on stderr, status 2)."""
    parser = argparse.ArgumentParser(
        prog="python -m infoflow.report",
        description="Information-plane figures, seed statistics and an index.html from infoflow "
        "result tables (job dirs, sweep dirs, .parquet files or quoted globs).",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="job/sweep dir, file or glob")
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: PATH/report)"
    )
    lo, hi = DPI_RANGE
    parser.add_argument(
        "--dpi", type=int, default=DPI, help=f"PNG resolution, {lo} to {hi} (default {DPI})"
    )

    def one_line(message: str):  # argparse's usage + error, as the other errors: one line
        parser.exit(2, f"infoflow.report: error: {message} (see --help)\n")

    parser.error = one_line
    args = parser.parse_args(argv)
    source = args.paths[0] if len(args.paths) == 1 else args.paths
    try:
        index = make_report(source, args.out, dpi=args.dpi)
    except (LoadError, ReportError) as err:
        parser.exit(2, f"infoflow.report: error: {err}\n")
    except OSError as err:  # writing the report: permissions, a full disk
        where = f" {err.filename}" if err.filename else ""
        parser.exit(2, f"infoflow.report: error: cannot write{where}: {err.strerror or err}\n")
    print(f"wrote {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
