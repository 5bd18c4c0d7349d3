"""Figures of a result table: the information plane and I(X;T), I(T;Y), accuracy per epoch.

The information plane follows Shwartz-Ziv & Tishby (2017, Fig. 2) and Saxe et al. (2018):
I(X;T) on x, I(T;Y) on y (bits), one trajectory per layer, colour = epoch. Several seeds are
averaged point by point (mean over runs at the same model, layer and epoch); the curves against
epoch show that mean with a Student-t 95% interval of the mean as a band.

Every function takes a table from :func:`infoflow.load` already restricted to one value of the
sweep's other keys (the report does the faceting) and returns a :class:`matplotlib.figure.Figure`
built without pyplot, so it renders headless (Agg) and leaves the caller's backend alone. Artists
carry a ``gid`` (``"plane|<model>|<layer>"``, ``"curve|<model>|<layer>|<column>"``,
``"acc|<model>|<column>"``) so tests and users can read the plotted numbers back.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize, SymLogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator

from infoflow.loading import t_quantile

LAYER_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LAYER_COLORS = colormaps["tab10"].colors
MI_LABELS = {"I_XT": "I(X;T) [bits]", "I_TY": "I(T;Y) [bits]"}


def models_of(df: pd.DataFrame) -> list[str]:
    """Model names in a readable order: MLPs by depth, then the rest alphabetically."""
    if "model" not in df.columns:
        return ["all"]
    names = [str(m) for m in df["model"].dropna().unique()]
    return sorted(names, key=lambda m: (not m.startswith("mlp"), len(m), m))


def with_x(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``x``, the training time of each evaluation in epochs (float).

    That is the table's ``epoch``: an integer for epoch-aligned schedules, a fraction
    (``step / steps_per_epoch``) for ``trainer.eval=log:N``; 0 is the untrained net.
    """
    df = df.copy()
    df["x"] = df["epoch"].astype(float)
    return df


def _fractional(x: pd.Series) -> bool:
    """True when evaluations fall inside epochs (``trainer.eval=log:N``)."""
    x = x.to_numpy(dtype=float)
    return bool(np.any(np.abs(x - np.round(x)) > 1e-9))


def _log_spaced(x: pd.Series) -> bool:
    """True when the evaluations are log-spaced (``trainer.eval=log:N``): fractions of an
    epoch, or whole epochs (full batch: one step per epoch) spanning two decades or more with
    most of them early (median below a tenth of the last), which a linear axis would crush."""
    if _fractional(x):
        return True
    pos = x.to_numpy(dtype=float)
    pos = pos[pos > 0]
    if pos.size < 3:
        return False
    return bool(pos.max() >= 100 * pos.min() and np.median(np.unique(pos)) < 0.1 * pos.max())


# Fixed information-plane axes for data sets whose ceilings are known: the Tishby task has
# H(X) = 12 bits (4,096 equiprobable patterns) and H(Y) = 0.999 bits, the papers' 0-12 x 0-1.
PLANE_LIMITS = {"tishby": ((0.0, 12.0), (0.0, 1.0))}


def _plane_limits(df: pd.DataFrame, stats: pd.DataFrame) -> tuple[tuple, tuple]:
    """The plane's x and y limits: the data set's fixed axes (``PLANE_LIMITS``) when every
    row is of that data set and every point lies inside them, else the points' range."""
    names = df["data"].dropna().unique() if "data" in df.columns else []
    if len(names) == 1 and str(names[0]) in PLANE_LIMITS:
        (x0, x1), (y0, y1) = PLANE_LIMITS[str(names[0])]
        xs, ys = stats["I_XT"].to_numpy(), stats["I_TY"].to_numpy()
        if (xs >= x0 - 1e-9).all() and (xs <= x1 + 1e-6).all() and (ys <= y1 + 1e-6).all():
            return (x0 - 0.02 * x1, x1 * 1.02), (y0 - 0.02 * y1, y1 * 1.03)
    return _limits(stats["I_XT"].to_numpy()), _limits(stats["I_TY"].to_numpy())


def seed_stats(
    df: pd.DataFrame, by: Sequence[str], values: Sequence[str], level: float = 0.95
) -> pd.DataFrame:
    """Mean over runs (seeds) of ``values`` at each ``by`` + ``x`` point, with the interval.

    Returns one row per group with ``<v>`` (mean), ``<v>_lo``, ``<v>_hi`` (the Student-t
    ``level`` interval of the mean; equal to the mean for one run), ``n`` (runs) and ``epoch``.
    """
    df = df if "x" in df.columns else with_x(df)
    keys = [*by, "x"]
    g = df.groupby(keys, dropna=False, sort=True)
    out = g[list(values)].mean()
    std = g[list(values)].std(ddof=1)
    n = g["run_id"].nunique()
    half = std.mul(np.nan_to_num(t_quantile(n.to_numpy()), nan=0.0) / np.sqrt(n), axis=0)
    half = half.fillna(0.0)
    for v in values:
        out[f"{v}_lo"] = out[v] - half[v]
        out[f"{v}_hi"] = out[v] + half[v]
    out["n"] = n
    out["epoch"] = g["epoch"].max()
    return out.reset_index()


def _limits(values: np.ndarray, pad: float = 0.06, min_span: float = 0.2) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = float(values.min()), float(values.max())
    span = max(hi - lo, min_span)
    mid = (lo + hi) / 2 if hi - lo < min_span else None
    if mid is not None:
        lo, hi = mid - span / 2, mid + span / 2
    return lo - pad * span, hi + pad * span


def with_style(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``style``: the layer's depth from the input (1, 2, ...), or 0 for the softmax output
    (``probe.output=true``), so that ``fc1`` and ``conv1`` share a marker/colour across models
    and the output layer has its own whatever the depth of the net."""
    df = df.copy()
    df["style"] = df["layer"].astype(int)
    if "layer_name" in df.columns:
        df.loc[df["layer_name"] == "output", "style"] = 0
    return df


def _style_marker(style: int) -> str:
    return "*" if style == 0 else LAYER_MARKERS[(style - 1) % len(LAYER_MARKERS)]


def _style_color(style: int) -> tuple:
    return LAYER_COLORS[9] if style == 0 else LAYER_COLORS[(style - 1) % 7]


def _style_label(df: pd.DataFrame, style: int) -> str:
    if style == 0:
        return "output (softmax)"
    if "layer_name" not in df.columns:
        return f"layer {style}"
    names = df.loc[df["style"] == style, "layer_name"].dropna().unique()
    return f"layer {style}: {', '.join(map(str, names))}" if len(names) else f"layer {style}"


def _styles(df: pd.DataFrame) -> list[int]:
    """Styles present, the output layer last."""
    return sorted({int(v) for v in df["style"].unique()}, key=lambda v: (v == 0, v))


def information_plane(
    df: pd.DataFrame,
    *,
    title: str | None = None,
    cmap: str = "viridis",
    ncols: int = 4,
    panel_size: float = 3.3,
) -> Figure:
    """The information plane, one panel per model, shared axes.

    Parameters
    ----------
    df
        Rows of one facet (one value of every varied key other than ``model``), any number of
        seeds; needs ``run_id, epoch, layer, I_XT, I_TY`` (bits).
    title
        The figure's title (the report names the varying keys there).

    Returns
    -------
    matplotlib.figure.Figure
        In each panel, per layer: a grey line through the seed-mean points in epoch order, the
        points coloured by epoch (one colour bar), the layer's marker shape, an open black
        marker at epoch 0. Dotted lines mark log2(n_samples) on x (the ceiling of a binned
        I(X;T) of a deterministic net) and H(Y) on y (the ceiling of I(T;Y)) when they fall in
        the plotted range. The scatter of each layer has gid ``plane|<model>|<layer>``.
    """
    df = with_style(with_x(df))
    if "model" not in df.columns:
        df["model"] = "all"
    models = models_of(df)
    stats = seed_stats(df, ["model", "layer", "style"], ["I_XT", "I_TY"])
    ncols = max(1, min(ncols, len(models)))
    nrows = math.ceil(len(models) / ncols)
    fig = Figure(
        figsize=(panel_size * ncols + 1.3, panel_size * nrows + 1.2), layout="constrained", dpi=100
    )
    axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False)
    norm = _epoch_norm(stats["x"])
    colormap = colormaps[cmap]
    xlim, ylim = _plane_limits(df, stats)
    h_max = _unique_float(np.log2(df["n_samples"])) if "n_samples" in df else None
    h_y = _unique_float(df["H_Y"]) if "H_Y" in df else None
    for ax, model in zip(axes.flat, models):
        sub = stats[stats["model"] == model]
        n_runs = df.loc[df["model"] == model, "run_id"].nunique()
        for (layer, style), pts in sub.groupby(["layer", "style"], sort=True):
            pts = pts.sort_values("x")
            marker = _style_marker(int(style))
            ax.plot(pts["I_XT"], pts["I_TY"], color="0.65", lw=1.0, zorder=1)
            sc = ax.scatter(
                pts["I_XT"], pts["I_TY"], c=pts["x"], cmap=colormap, norm=norm,
                marker=marker, s=60 if marker == "*" else 30, edgecolors="none", zorder=2,
            )  # fmt: skip
            sc.set_gid(f"plane|{model}|{int(layer)}")
            first = pts.iloc[0]
            ax.scatter(
                [first["I_XT"]], [first["I_TY"]], marker=marker, s=150 if marker == "*" else 95,
                facecolors="none",
                edgecolors="black", linewidths=1.1, zorder=3,
            )  # fmt: skip
        ax.set_title(f"{model}  ({n_runs} run{'s' if n_runs != 1 else ''})", fontsize=10)
        if h_max is not None and xlim[0] <= h_max <= xlim[1] + 1e-9:
            ax.axvline(h_max, ls=":", lw=0.9, color="0.35", zorder=0)
        if h_y is not None and ylim[0] <= h_y <= ylim[1] + 1e-9:
            ax.axhline(h_y, ls=":", lw=0.9, color="0.35", zorder=0)
        ax.grid(alpha=0.25, lw=0.5)
    for ax in axes.flat[len(models) :]:
        ax.set_visible(False)
    axes[0, 0].set_xlim(*xlim)
    axes[0, 0].set_ylim(*ylim)
    for ax in axes[-1, :]:
        ax.set_xlabel(MI_LABELS["I_XT"])
    for ax in axes[:, 0]:
        ax.set_ylabel(MI_LABELS["I_TY"])
    if len(models) % ncols and nrows > 1:  # x labels on the panels above the empty slots
        for ax in axes[-2, len(models) % ncols :]:
            ax.xaxis.set_tick_params(labelbottom=True)
            ax.set_xlabel(MI_LABELS["I_XT"])

    cbar = fig.colorbar(ScalarMappable(norm=norm, cmap=colormap), ax=axes, pad=0.01, aspect=30)
    log_scale = _log_spaced(stats["x"])
    cbar.set_label("epoch (0 = untrained" + (", log scale)" if log_scale else ")"))
    if log_scale:
        cbar.set_ticks(
            [0, *(t for t in 10.0 ** np.arange(-4, 8) if norm.linthresh <= t <= norm.vmax)]
        )
        cbar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        cbar.ax.yaxis.set_minor_locator(NullLocator())
    else:
        cbar.locator = MaxNLocator(integer=True)
        cbar.update_ticks()

    handles = [
        Line2D([], [], ls="", marker=_style_marker(i), color="0.45", label=_style_label(df, i))
        for i in _styles(df)
    ]
    handles.append(
        Line2D([], [], ls="", marker="o", mfc="none", mec="black", ms=9, label="epoch 0 (start)")
    )
    refs = []
    if h_max is not None and xlim[0] <= h_max <= xlim[1] + 1e-9:
        refs.append(f"x = log2 N = {h_max:.2f}")
    if h_y is not None and ylim[0] <= h_y <= ylim[1] + 1e-9:
        refs.append(f"y = H(Y) = {h_y:.2f}")
    if refs:
        handles.append(Line2D([], [], ls=":", color="0.35", label="dotted: " + ", ".join(refs)))
    return _finish(fig, handles, title)


def curves_vs_epoch(df: pd.DataFrame, *, title: str | None = None) -> Figure:
    """I(X;T), I(T;Y) (bits) and accuracy against epoch: one row per model, one line per layer.

    Lines are the mean over runs (seeds); the band is the Student-t 95% interval of that mean,
    drawn where two or more runs reached the point. Columns share their y axis across models.
    Artists' gids: ``curve|<model>|<layer>|I_XT`` (and ``I_TY``), ``acc|<model>|eval_acc``
    (and ``train_acc``).
    """
    df = with_style(with_x(df))
    if "model" not in df.columns:
        df["model"] = "all"
    models = models_of(df)
    stats = seed_stats(df, ["model", "layer", "style"], ["I_XT", "I_TY"])
    # the band is clipped to where the quantity can lie: 0 <= I(X;T) <= log2 N, I(T;Y) <= H(Y)
    ceiling = {
        "I_XT": _unique_float(np.log2(df["n_samples"])) if "n_samples" in df else None,
        "I_TY": _unique_float(df["H_Y"]) if "H_Y" in df else None,
    }
    acc_cols = [c for c in ("eval_acc", "train_acc") if c in df.columns]
    first_layer = df[df["layer"] == df.groupby("run_id")["layer"].transform("min")]
    acc = seed_stats(first_layer, ["model"], acc_cols) if acc_cols else None
    ncols = 3 if acc_cols else 2
    fig = Figure(figsize=(3.5 * ncols + 0.6, 2.35 * len(models) + 1.3), layout="constrained")
    axes = fig.subplots(len(models), ncols, sharex=True, sharey="col", squeeze=False)
    multi_seed = bool((stats["n"] > 1).any())

    for row, model in enumerate(models):
        sub = stats[stats["model"] == model]
        for col, value in enumerate(("I_XT", "I_TY")):
            ax = axes[row, col]
            for (layer, style), pts in sub.groupby(["layer", "style"], sort=True):
                pts = pts.sort_values("x")
                color = _style_color(int(style))
                # earlier layers drawn wider: a layer hidden under a deeper one shows at its edge
                width = 1.4 + 0.6 * max(0, 4 - int(style)) if style else 1.4
                (line,) = ax.plot(pts["x"], pts[value], color=color, lw=width, marker=".", ms=4)
                line.set_gid(f"curve|{model}|{int(layer)}|{value}")
                if multi_seed:
                    lo = pts[f"{value}_lo"].clip(lower=0.0)
                    hi = pts[f"{value}_hi"].clip(upper=ceiling[value])
                    ax.fill_between(pts["x"], lo, hi, color=color, alpha=0.2, lw=0)
            ax.set_ylabel(MI_LABELS[value])
        if acc is not None:
            ax = axes[row, 2]
            pts = acc[acc["model"] == model].sort_values("x")
            for value, style, color in (("eval_acc", "-", "black"), ("train_acc", "--", "0.5")):
                if value not in acc_cols:
                    continue
                ok = pts[value].notna()
                (line,) = ax.plot(pts.loc[ok, "x"], pts.loc[ok, value], ls=style, color=color)
                line.set_gid(f"acc|{model}|{value}")
                if multi_seed:
                    ax.fill_between(
                        pts.loc[ok, "x"], pts.loc[ok, f"{value}_lo"].clip(lower=0.0),
                        pts.loc[ok, f"{value}_hi"].clip(upper=1.0), color=color, alpha=0.15, lw=0,
                    )  # fmt: skip
            ax.set_ylabel("accuracy")
            ax.set_ylim(0, 1.02)
        n_runs = df.loc[df["model"] == model, "run_id"].nunique()
        axes[row, 0].set_title(
            f"{model}  ({n_runs} run{'s' if n_runs != 1 else ''})", loc="left", fontsize=10
        )
        for ax in axes[row]:
            ax.grid(alpha=0.25, lw=0.5)
    log_scale = _log_spaced(stats["x"])
    for ax in axes[-1]:
        if log_scale:  # log-spaced evaluations: a log axis past the first evaluation
            _log_epoch_axis(ax, stats["x"])
            ax.set_xlabel("epoch (log scale past the first step)")
        else:
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))

    handles = [
        Line2D([], [], color=_style_color(i), lw=2, label=_style_label(df, i)) for i in _styles(df)
    ]
    if acc_cols:
        handles += [
            Line2D([], [], color="black", label="eval accuracy"),
            Line2D([], [], color="0.5", ls="--", label="train accuracy"),
        ]
    if multi_seed:
        handles.append(
            Line2D(
                [], [], color="0.6", lw=6, alpha=0.4, label="band: 95% t-interval of the seed mean"
            )
        )
    return _finish(fig, handles, title)


def _finish(fig: Figure, handles: list, title: str | None) -> Figure:
    """The shared legend below the panels, then the title. At most one legend column per
    2.2 inches of figure: a wider legend is cut at the figure's edges (a one-panel plane)."""
    ncols = min(len(handles), 4, max(1, int(fig.get_figwidth() / 2.2)))
    fig.legend(
        handles=handles, loc="outside lower center", ncols=ncols, fontsize=8.5, frameon=False
    )
    _set_title(fig, title)
    return fig


def _log_epoch_axis(ax, x: pd.Series) -> None:
    """Symlog x axis from 0 (untrained) through the log-spaced evaluations, plain tick labels."""
    positive = x[x > 0]
    lin = float(positive.min())
    ax.set_xscale("symlog", linthresh=lin, linscale=0.4)
    ax.set_xlim(0, float(x.max()) * 1.05)
    ticks = [0.0] + [
        10.0**k for k in range(math.floor(math.log10(lin)) + 1, math.floor(math.log10(x.max())) + 1)
    ]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(NullLocator())


def _epoch_norm(x: pd.Series) -> Normalize:
    """Colour scale of epochs: linear, or symlog when evaluations are log-spaced."""
    top = max(1.0, float(x.max()))
    if _log_spaced(x) and (x > 0).any():
        return SymLogNorm(linthresh=float(x[x > 0].min()), linscale=0.4, vmin=0, vmax=top)
    return Normalize(vmin=0, vmax=top)


def _set_title(fig: Figure, title: str | None) -> None:
    """A suptitle whose lines are wrapped to the figure's width (about 11 characters/inch)."""
    if not title:
        return
    width = max(30, int(fig.get_figwidth() * 11))
    lines = []
    for line in title.splitlines():  # break between " · " parts when possible
        current = ""
        for part in line.split(" · "):
            joined = f"{current} · {part}" if current else part
            if current and len(joined) > width:
                lines.append(current)
                current = part
            else:
                current = joined
        lines.extend(textwrap.wrap(current, width) or [""])
    fig.suptitle("\n".join(lines), fontsize=11)


def _unique_float(values: pd.Series) -> float | None:
    """The one finite value of a column, or None when it has none or several."""
    v = pd.to_numeric(pd.Series(values), errors="coerce").dropna().unique()
    return float(v[0]) if len(v) == 1 else None
