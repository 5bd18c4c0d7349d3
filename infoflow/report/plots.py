"""Figures of a result table: the information plane and I(X;T), I(T;Y), accuracy per epoch.

The information plane follows Shwartz-Ziv & Tishby (2017, Fig. 2) and Saxe et al. (2018):
I(X;T) on x, I(T;Y) on y (bits), one trajectory per layer, colour = epoch. Several seeds are
averaged point by point (mean over runs at the same model, layer and epoch); the curves against
epoch show that mean with a Student-t 95% interval of the mean as a band.

Every function takes a table from :func:`infoflow.load` already restricted to one value of the
sweep's other keys (the report does the faceting) and returns a :class:`matplotlib.figure.Figure`
built without pyplot, so it renders headless (Agg) and leaves the caller's backend alone. Artists
carry a ``gid`` (``"plane|<model>|<layer>"``, ``"peak|<model>|<layer>"`` for the mark at a
layer's peak I(X;T), ``"curve|<model>|<layer>|<column>"``,
``"acc|<model>|<column>"``, ``"ceiling|<model>"`` for the "at the ceiling" label) so tests and
users can read the plotted numbers back.

What the axes show:

- No axis magnifies a small change: an MI axis spans at least :func:`min_span` bits (0.5 bit,
  or a tenth of the I(X;T) ceiling when that is larger), so a saturated layer's 0.006-bit
  wobble stays a flat line instead of filling the panel.
- The ceiling of I(X;T), ``H_max`` = log2(n_samples) (dotted), and H(Y) for I(T;Y) are drawn
  when they fall in the plotted range; a layer whose seed-mean I(X;T) stays within
  :data:`AT_CEILING_BITS` of its ceiling at every evaluation is named in its panel as
  "at the ceiling" (there I(X;T) measures the sample count, not the layer).
- Epochs (the colour scale, the curves' x axis) are logarithmic exactly when the rows were
  evaluated on a ``trainer.eval=log:N`` schedule (:func:`log_schedule`), linear otherwise.

Speed: figures are laid out with fixed margins in inches rather than a layout engine (whose
solver draws every figure twice more), and ``reuse=`` takes a figure an earlier call returned:
when its grid of panels fits, its axes (and their ticks) are kept and only the data is redrawn,
which is most of what a report of many facets would otherwise spend on building figures.
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize, SymLogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator

from infoflow.report.load import t_quantile

LAYER_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LAYER_COLORS = colormaps["tab10"].colors
MI_LABELS = {"I_XT": "I(X;T) [bits]", "I_TY": "I(T;Y) [bits]"}

#: the smallest span of an MI axis, in bits ...
MIN_SPAN_BITS = 0.5
#: ... or this fraction of the I(X;T) ceiling (log2 N) when that is larger
MIN_SPAN_FRACTION = 0.1
#: a layer within this many bits of its ceiling at every evaluation is "at the ceiling"
AT_CEILING_BITS = 0.05
#: titles are cut to this many lines (a long facet value is named in full on the page)
MAX_TITLE_LINES = 4

# Fixed information-plane axes for data sets whose ceilings are known: the Tishby task has
# H(X) = 12 bits (4,096 equiprobable patterns) and H(Y) = 0.999 bits, the papers' 0-12 x 0-1.
PLANE_LIMITS = {"tishby": ((0.0, 12.0), (0.0, 1.0))}

# Layout, in inches. Text sizes: 10 pt ticks and labels, 11 pt title, 8.5 pt legend.
_TITLE_LINE = 0.2
_LEGEND_ROW = 0.19
_X_LABELS = 0.55  # tick labels and axis label below a panel
_Y_LABELS = 0.8  # tick labels and axis label left of a panel
_PANEL_TITLE = 0.3
_X_LABEL_GAP = 0.3  # axis to the top of its x label: ticks, 10 pt tick labels, label pad
#: behind the "at the ceiling" label: legible over grid lines and curves
_LABEL_BOX = {"boxstyle": "round,pad=0.25", "facecolor": "white", "edgecolor": "none", "alpha": 0.8}


# ----------------------------------------------------------------------------------------------
# the numbers behind the figures


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


def log_schedule(df: pd.DataFrame) -> bool:
    """True when the rows were evaluated on a ``trainer.eval=log:N`` schedule.

    Read from the config column ``trainer.eval`` (every infoflow table has it): epochs are then
    drawn on a log scale (symlog from the untrained net at 0). Any other schedule (``epoch``,
    ``every:K``, ``K``), or a table without the column, gets linear epochs, however the
    evaluations happen to be spread.
    """
    if "trainer.eval" not in df.columns:
        return False
    values = df["trainer.eval"].dropna().astype(str).str.strip()
    return bool(values.str.startswith("log:").any())


def xt_ceiling(df: pd.DataFrame) -> pd.Series:
    """The ceiling of each row's I(X;T), in bits: ``H_max`` where the estimator wrote it, else
    log2(``n_samples``) (a deterministic net's binned I(X;T) cannot exceed it); NaN without
    either column."""
    out = pd.Series(np.nan, index=df.index, dtype=float)
    if "H_max" in df.columns:
        out = pd.to_numeric(df["H_max"], errors="coerce").astype(float)
    if "n_samples" in df.columns:
        n = pd.to_numeric(df["n_samples"], errors="coerce").astype(float)
        out = out.fillna(np.log2(n.where(n > 0)))
    return out


def min_span(ceiling: float | None = None) -> float:
    """The smallest span of an MI axis, in bits: :data:`MIN_SPAN_BITS`, or
    :data:`MIN_SPAN_FRACTION` of the I(X;T) ``ceiling`` when that is larger."""
    if ceiling is None or not np.isfinite(ceiling) or ceiling <= 0:
        return MIN_SPAN_BITS
    return max(MIN_SPAN_BITS, MIN_SPAN_FRACTION * float(ceiling))


def mi_limits(
    values: np.ndarray | Sequence[float],
    ceiling: float | None = None,
    span: float | None = None,
    pad: float = 0.06,
) -> tuple[float, float]:
    """Axis limits for MI values in bits that never turn a small change into a big one.

    Parameters
    ----------
    values
        The plotted values (NaN ignored).
    ceiling
        The quantity's ceiling (log2 N for I(X;T), H(Y) for I(T;Y)) or None.
    span
        The smallest span; default :func:`min_span` of ``ceiling``.
    pad
        Margin on each side, as a fraction of the span.

    Returns
    -------
    tuple of float
        ``(lo, hi)``: the values' range, widened to ``span`` when narrower, around the values
        but not above the ceiling (values at it stay at the top) nor below 0; then padded.
    """
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    has_ceiling = ceiling is not None and np.isfinite(ceiling)
    span = min_span(ceiling) if span is None else float(span)
    if v.size == 0:
        lo, hi = 0.0, float(ceiling) if has_ceiling and ceiling > 0 else 1.0
    else:
        lo, hi = float(v.min()), float(v.max())
    if hi - lo < span:
        mid = (lo + hi) / 2
        lo, hi = mid - span / 2, mid + span / 2
        top = max(float(ceiling), float(v.max())) if has_ceiling and v.size else None
        if top is not None and hi > top:
            lo, hi = lo - (hi - top), top
        if lo < 0:
            lo, hi = 0.0, hi - lo
    width = hi - lo
    return lo - pad * width, hi + pad * width


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
    n = g["run_id"].nunique()
    if (n >= 2).any():
        std = g[list(values)].std(ddof=1)
        half = std.mul(np.nan_to_num(t_quantile(n.to_numpy(), level), nan=0.0) / np.sqrt(n), axis=0)
        half = half.fillna(0.0)
    else:  # one run per point: no interval (and no need for the t quantile)
        half = pd.DataFrame(0.0, index=out.index, columns=out.columns)
    for v in values:
        out[f"{v}_lo"] = out[v] - half[v]
        out[f"{v}_hi"] = out[v] + half[v]
    out["n"] = n
    out["epoch"] = g["epoch"].max()
    return out.reset_index()


def at_ceiling(df: pd.DataFrame) -> dict[str, list[str]]:
    """Per model, the layers whose seed-mean I(X;T) stays within :data:`AT_CEILING_BITS` of its
    ceiling (:func:`xt_ceiling`) at every evaluation, by name (``layer_name``, else the index)."""
    df = df if "x" in df.columns else with_x(df)
    gap = (xt_ceiling(df) - df["I_XT"]).rename("gap")
    model = df["model"] if "model" in df.columns else pd.Series("all", index=df.index)
    name = df["layer_name"] if "layer_name" in df.columns else df["layer"]
    keys = [model.rename("model"), df["layer"].rename("layer"), name.rename("name")]
    worst = gap.groupby([*keys, df["x"]], dropna=False).mean().groupby(level=[0, 1, 2]).max()
    out: dict[str, list[str]] = {}
    for (m, _, label), g in worst.sort_index().items():
        if np.isfinite(g) and g <= AT_CEILING_BITS:
            out.setdefault(str(m), []).append(str(label))
    return out


def _plane_limits(df: pd.DataFrame, stats: pd.DataFrame, ceil: float | None, h_y: float | None):
    """The plane's x and y limits: the data set's fixed axes (``PLANE_LIMITS``) when every
    row is of that data set and every point lies inside them, else :func:`mi_limits`."""
    names = df["data"].dropna().unique() if "data" in df.columns else []
    xs, ys = stats["I_XT"].to_numpy(), stats["I_TY"].to_numpy()
    if len(names) == 1 and str(names[0]) in PLANE_LIMITS:
        (x0, x1), (y0, y1) = PLANE_LIMITS[str(names[0])]
        if (xs >= x0 - 1e-9).all() and (xs <= x1 + 1e-6).all() and (ys <= y1 + 1e-6).all():
            return (x0 - 0.02 * x1, x1 * 1.02), (y0 - 0.02 * y1, y1 * 1.03)
    # the y axis gets the same minimum span as x: both are bits of the same plane
    return mi_limits(xs, ceil), mi_limits(ys, h_y, span=min_span(ceil))


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


def _unique_float(values: pd.Series) -> float | None:
    """The one finite value of a column, or None when it has none or several."""
    v = pd.to_numeric(pd.Series(values), errors="coerce").dropna().unique()
    return float(v[0]) if len(v) == 1 else None


def _ceiling_text(names: list[str], n_layers: int) -> str:
    which = "every layer" if len(names) == n_layers and n_layers > 1 else ", ".join(names)
    return f"at the ceiling log2 N\n(within {AT_CEILING_BITS:g} bit): {which}"


# ----------------------------------------------------------------------------------------------
# figures that can be redrawn


@dataclass
class _Frame:
    """A figure's fixed parts (axes, colour bar) and what a redraw replaces (``drawn``)."""

    key: tuple
    fig: Figure
    axes: np.ndarray
    cbar: object = None
    drawn: list = field(default_factory=list)

    def keep(self, artist):
        self.drawn.append(artist)
        return artist


def _reused(reuse: Figure | None, key: tuple) -> _Frame | None:
    """The frame of ``reuse`` emptied of its data when its grid is ``key``, else None."""
    frame = getattr(reuse, "_infoflow_frame", None)
    if frame is None or frame.key != key:
        return None
    for artist in frame.drawn:
        artist.remove()
    frame.drawn.clear()
    for legend in list(frame.fig.legends):
        legend.remove()
    return frame


def _new_frame(key: tuple, nrows: int, ncols: int, **share) -> _Frame:
    fig = Figure()
    FigureCanvasAgg(fig)  # rendering always goes through Agg: no backend switch per save
    axes = fig.subplots(nrows, ncols, squeeze=False, **share)
    frame = _Frame(key, fig, axes)
    fig._infoflow_frame = frame
    return frame


def _title_lines(title: str | None, width_in: float) -> list[str]:
    """The title wrapped to the figure's width (about 11 characters per inch), breaking between
    " · " parts when possible, at most :data:`MAX_TITLE_LINES` lines."""
    if not title:
        return []
    width = max(30, int(width_in * 11))
    lines: list[str] = []
    for line in title.splitlines():
        current = ""
        for part in line.split(" · "):
            joined = f"{current} · {part}" if current else part
            if current and len(joined) > width:
                lines.append(current)
                current = part
            else:
                current = joined
        lines.extend(textwrap.wrap(current, width) or [""])
    if len(lines) > MAX_TITLE_LINES:
        lines = lines[:MAX_TITLE_LINES]
        lines[-1] = lines[-1][: width - 1] + "…"
    return lines


def _layout(
    frame: _Frame,
    *,
    panel: tuple[float, float],
    left: float,
    right: float,
    wspace: float,
    hspace: float,
    title: str | None,
    handles: list,
) -> tuple[float, float]:
    """Size the figure and place its panels, title and legend; fixed margins in inches.

    Returns the figure's (width, height) in inches.
    """
    fig, axes = frame.fig, frame.axes
    nrows, ncols = axes.shape
    pw, ph = panel
    width = left + ncols * pw + (ncols - 1) * wspace + right
    legend_cols = min(len(handles), 4, max(1, int(width / 2.2)))
    legend_rows = math.ceil(len(handles) / legend_cols) if handles else 0
    lines = _title_lines(title, width)
    top = 0.12 + _TITLE_LINE * len(lines) + _PANEL_TITLE
    bottom = _X_LABELS + 0.1 + _LEGEND_ROW * legend_rows + 0.1
    height = top + nrows * ph + (nrows - 1) * hspace + bottom
    fig.set_size_inches(width, height)
    for (r, c), ax in np.ndenumerate(axes):
        x0 = left + c * (pw + wspace)
        y0 = height - top - (r + 1) * ph - r * hspace
        ax.set_position([x0 / width, y0 / height, pw / width, ph / height])
        # x labels at a fixed distance below the axis (tick labels are one line high): else
        # every draw measures the tick labels of every panel sharing the axis to place them
        ax.xaxis.set_label_coords(0.5, -_X_LABEL_GAP / ph)
    # always set: a redrawn figure must lose its previous title when this one has none
    fig.suptitle("\n".join(lines), fontsize=11, y=1 - 0.1 / height, va="top")
    if handles:
        fig.legend(
            handles=handles, loc="lower center", bbox_to_anchor=(0.5, 0.08 / height),
            ncols=legend_cols, fontsize=8.5, frameon=False,
        )  # fmt: skip
    return width, height


# ----------------------------------------------------------------------------------------------
# the figures


def information_plane(
    df: pd.DataFrame,
    *,
    title: str | None = None,
    cmap: str = "viridis",
    ncols: int = 4,
    panel_size: float = 2.8,
    reuse: Figure | None = None,
) -> Figure:
    """The information plane, one panel per model, shared axes.

    Parameters
    ----------
    df
        Rows of one facet (one value of every varied key other than ``model``), any number of
        seeds; needs ``run_id, epoch, layer, I_XT, I_TY`` (bits).
    title
        The figure's title (the report names the varying keys there).
    cmap, ncols, panel_size
        Colour map of the epochs, panels per row, panel size in inches.
    reuse
        A figure this function returned before: when it has the same grid of panels it is
        redrawn with ``df`` and returned (its axes are kept), else a new figure is built.

    Returns
    -------
    matplotlib.figure.Figure
        In each panel, per layer: a grey line through the seed-mean points in epoch order, the
        points coloured by epoch (one colour bar, log scale for ``trainer.eval=log:N``), the
        layer's marker shape, an open black marker at epoch 0, a short black vertical bar at
        the layer's peak I(X;T) (the seed-mean point furthest right, the earliest of equal
        maxima: the ``peak_epoch`` of :func:`infoflow.compression` when every seed has every
        evaluation; gid ``peak|<model>|<layer>``). Dotted lines mark log2(n_samples)
        on x (the ceiling of a binned I(X;T) of a deterministic net) and H(Y) on y (the ceiling
        of I(T;Y)) when they fall in the plotted range; layers at the I(X;T) ceiling are named
        in the panel. The scatter of each layer has gid ``plane|<model>|<layer>``.
    """
    df = with_style(with_x(df))
    if "model" not in df.columns:
        df["model"] = "all"
    models = models_of(df)
    stats = seed_stats(df, ["model", "layer", "style"], ["I_XT", "I_TY"])
    ncols = max(1, min(ncols, len(models)))
    nrows = math.ceil(len(models) / ncols)
    log = log_schedule(df)
    key = ("plane", nrows, ncols, len(models), panel_size, cmap, log)
    frame = _reused(reuse, key) or _build_plane(key, nrows, ncols, len(models), cmap, log)
    axes, keep = frame.axes, frame.keep

    norm = _epoch_norm(stats["x"], log)
    colormap = colormaps[cmap]
    h_max = _unique_float(xt_ceiling(df))
    h_y = _unique_float(df["H_Y"]) if "H_Y" in df else None
    xlim, ylim = _plane_limits(df, stats, h_max, h_y)
    show_x = h_max is not None and xlim[0] <= h_max <= xlim[1]
    show_y = h_y is not None and ylim[0] <= h_y <= ylim[1]
    full = at_ceiling(df)
    for ax, model in zip(axes.flat, models):
        sub = stats[stats["model"] == model]
        n_runs = df.loc[df["model"] == model, "run_id"].nunique()
        for (layer, style), pts in sub.groupby(["layer", "style"], sort=True):
            pts = pts.sort_values("x")
            marker = _style_marker(int(style))
            keep(ax.plot(pts["I_XT"], pts["I_TY"], color="0.65", lw=1.0, zorder=1)[0])
            sc = keep(ax.scatter(
                pts["I_XT"], pts["I_TY"], c=pts["x"], cmap=colormap, norm=norm,
                marker=marker, s=60 if marker == "*" else 30, edgecolors="none", zorder=2,
            ))  # fmt: skip
            sc.set_gid(f"plane|{model}|{int(layer)}")
            first = pts.iloc[0]
            keep(ax.scatter(
                [first["I_XT"]], [first["I_TY"]], marker=marker, s=150 if marker == "*" else 95,
                facecolors="none", edgecolors="black", linewidths=1.1, zorder=3,
            ))  # fmt: skip
            xt = pts["I_XT"].to_numpy(float)
            if np.isfinite(xt).any():
                peak = pts.iloc[int(np.nanargmax(xt))]  # the first of equal maxima
                mark = keep(ax.plot(
                    [peak["I_XT"]], [peak["I_TY"]], ls="", marker="|", ms=13, mew=1.6,
                    color="black", zorder=4,
                )[0])  # fmt: skip
                mark.set_gid(f"peak|{model}|{int(layer)}")
        ax.set_title(f"{model}  ({n_runs} run{'s' if n_runs != 1 else ''})", fontsize=10, y=1)
        if show_x:
            keep(ax.axvline(h_max, ls=":", lw=0.9, color="0.35", zorder=0))
        if show_y:
            keep(ax.axhline(h_y, ls=":", lw=0.9, color="0.35", zorder=0))
        if model in full:
            text = _ceiling_text(full[model], sub["layer"].nunique())
            # lower left: the corner a trajectory reaches last (low I(X;T) and low I(T;Y))
            label = keep(ax.text(
                0.03, 0.03, text, transform=ax.transAxes, ha="left", va="bottom", fontsize=7.5,
                color="0.25", zorder=4, bbox=_LABEL_BOX,
            ))  # fmt: skip
            label.set_gid(f"ceiling|{model}")
    axes[0, 0].set_xlim(*xlim)
    axes[0, 0].set_ylim(*ylim)

    cbar = frame.cbar
    cbar.update_normal(ScalarMappable(norm=norm, cmap=colormap))
    cbar.set_label("epoch (0 = untrained" + (", log scale)" if log else ")"))
    if log:
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
    handles.append(
        Line2D([], [], ls="", marker="|", ms=11, mew=1.6, color="black", label="peak of I(X;T)")
    )
    refs = []
    if show_x:
        refs.append(f"x = log2 N = {h_max:.2f}")
    if show_y:
        refs.append(f"y = H(Y) = {h_y:.2f}")
    if refs:
        handles.append(Line2D([], [], ls=":", color="0.35", label="dotted: " + ", ".join(refs)))
    # the panels above empty slots carry x labels: room for them between the rows
    hspace = 0.4 if len(models) % ncols == 0 else 0.4 + _X_LABELS
    width, _ = _layout(
        frame, panel=(panel_size, panel_size), left=_Y_LABELS, right=1.0, wspace=0.2,
        hspace=hspace, title=title, handles=handles,
    )  # fmt: skip
    # the colour bar spans the panels' height, right of the last column
    first, last = axes[0, -1].get_position(), axes[-1, -1].get_position()
    cbar.ax.set_position([last.x1 + 0.15 / width, last.y0, 0.14 / width, first.y1 - last.y0])
    return frame.fig


def _build_plane(key: tuple, nrows: int, ncols: int, n: int, cmap: str, log: bool) -> _Frame:
    frame = _new_frame(key, nrows, ncols, sharex=True, sharey=True)
    fig, axes = frame.fig, frame.axes
    for ax in axes.flat:
        ax.grid(alpha=0.25, lw=0.5)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
        ax.yaxis.set_major_locator(MaxNLocator(nbins=5))
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    for ax in axes[-1, :]:
        ax.set_xlabel(MI_LABELS["I_XT"])
    for ax in axes[:, 0]:
        ax.set_ylabel(MI_LABELS["I_TY"])
    if n % ncols and nrows > 1:  # x labels on the panels above the empty slots
        for ax in axes[-2, n % ncols :]:
            ax.xaxis.set_tick_params(labelbottom=True)
            ax.set_xlabel(MI_LABELS["I_XT"])
    cax = fig.add_axes([0.9, 0.1, 0.02, 0.8])
    norm = _epoch_norm(pd.Series([0.0, 1.0]), log)
    frame.cbar = fig.colorbar(ScalarMappable(norm=norm, cmap=colormaps[cmap]), cax=cax)
    return frame


def curves_vs_epoch(
    df: pd.DataFrame, *, title: str | None = None, reuse: Figure | None = None
) -> Figure:
    """I(X;T), I(T;Y) (bits) and accuracy against epoch: one row per model, one line per layer.

    Lines are the mean over runs (seeds); the band is the Student-t 95% interval of that mean,
    drawn where two or more runs reached the point. Columns share their y axis across models;
    an MI axis spans at least :func:`min_span` bits and shows the ceilings (dotted) when they
    fall in its range; layers at the I(X;T) ceiling are named in their panel (gid
    ``ceiling|<model>``). The epoch axis is logarithmic for ``trainer.eval=log:N``. Artists'
    gids: ``curve|<model>|<layer>|I_XT`` (and ``I_TY``), ``acc|<model>|eval_acc`` (and
    ``train_acc``). ``reuse``: as for :func:`information_plane`.
    """
    df = with_style(with_x(df))
    if "model" not in df.columns:
        df["model"] = "all"
    models = models_of(df)
    stats = seed_stats(df, ["model", "layer", "style"], ["I_XT", "I_TY"])
    # the band is clipped to where the quantity can lie: 0 <= I(X;T) <= log2 N, I(T;Y) <= H(Y)
    ceiling = {
        "I_XT": _unique_float(xt_ceiling(df)),
        "I_TY": _unique_float(df["H_Y"]) if "H_Y" in df else None,
    }
    acc_cols = [c for c in ("eval_acc", "train_acc") if c in df.columns]
    first_layer = df[df["layer"] == df.groupby("run_id")["layer"].transform("min")]
    acc = seed_stats(first_layer, ["model"], acc_cols) if acc_cols else None
    ncols = 3 if acc_cols else 2
    log = log_schedule(df)
    key = ("curves", len(models), ncols, log)
    frame = _reused(reuse, key) or _build_curves(key, len(models), ncols)
    axes, keep = frame.axes, frame.keep
    multi_seed = bool((stats["n"] > 1).any())
    full = at_ceiling(df)

    limits = {}
    for value in ("I_XT", "I_TY"):
        top = ceiling[value]
        lo = stats[f"{value}_lo"].clip(lower=0.0)
        hi = stats[f"{value}_hi"].clip(upper=top) if top is not None else stats[f"{value}_hi"]
        shown = [stats[value], *((lo, hi) if multi_seed else ())]
        # I(T;Y) gets the I(X;T) axis' minimum span: the same bits, the same magnification
        span = min_span(ceiling["I_XT"])
        limits[value] = mi_limits(np.concatenate([s.to_numpy() for s in shown]), top, span)

    for row, model in enumerate(models):
        sub = stats[stats["model"] == model]
        for col, value in enumerate(("I_XT", "I_TY")):
            ax = axes[row, col]
            for (layer, style), pts in sub.groupby(["layer", "style"], sort=True):
                pts = pts.sort_values("x")
                color = _style_color(int(style))
                # earlier layers drawn wider: a layer hidden under a deeper one shows at its edge
                width = 1.4 + 0.6 * max(0, 4 - int(style)) if style else 1.4
                line = keep(ax.plot(pts["x"], pts[value], color=color, lw=width, marker=".",
                                    ms=4)[0])  # fmt: skip
                line.set_gid(f"curve|{model}|{int(layer)}|{value}")
                if multi_seed:
                    lo = pts[f"{value}_lo"].clip(lower=0.0)
                    hi = pts[f"{value}_hi"].clip(upper=ceiling[value])
                    keep(ax.fill_between(pts["x"], lo, hi, color=color, alpha=0.2, lw=0))
            top = ceiling[value]
            if top is not None and limits[value][0] <= top <= limits[value][1]:
                keep(ax.axhline(top, ls=":", lw=0.9, color="0.35", zorder=0))
        if model in full:
            label = keep(axes[row, 0].text(
                0.03, 0.05, _ceiling_text(full[model], sub["layer"].nunique()),
                transform=axes[row, 0].transAxes, ha="left", va="bottom", fontsize=7.5,
                color="0.25", zorder=4, bbox=_LABEL_BOX,
            ))  # fmt: skip
            label.set_gid(f"ceiling|{model}")
        if acc is not None:
            ax = axes[row, 2]
            pts = acc[acc["model"] == model].sort_values("x")
            for value, style, color in (("eval_acc", "-", "black"), ("train_acc", "--", "0.5")):
                if value not in acc_cols:
                    continue
                ok = pts[value].notna()
                line = keep(ax.plot(pts.loc[ok, "x"], pts.loc[ok, value], ls=style,
                                    color=color)[0])  # fmt: skip
                line.set_gid(f"acc|{model}|{value}")
                if multi_seed:
                    keep(ax.fill_between(
                        pts.loc[ok, "x"], pts.loc[ok, f"{value}_lo"].clip(lower=0.0),
                        pts.loc[ok, f"{value}_hi"].clip(upper=1.0), color=color, alpha=0.15, lw=0,
                    ))  # fmt: skip
        n_runs = df.loc[df["model"] == model, "run_id"].nunique()
        axes[row, 0].set_title(
            f"{model}  ({n_runs} run{'s' if n_runs != 1 else ''})", loc="left", fontsize=10, y=1
        )
    for col, value in enumerate(("I_XT", "I_TY")):
        axes[0, col].set_ylim(*limits[value])
    if log:
        _log_epoch_axis(axes[-1, 0], stats["x"])
    else:
        x0, x1 = float(stats["x"].min()), float(stats["x"].max())
        pad = 0.03 * max(x1 - x0, 1.0)
        axes[-1, 0].set_xlim(x0 - pad, x1 + pad)

    handles = [
        Line2D([], [], color=_style_color(i), lw=2, label=_style_label(df, i)) for i in _styles(df)
    ]
    if acc_cols:
        handles += [
            Line2D([], [], color="black", label="eval accuracy"),
            Line2D([], [], color="0.5", ls="--", label="train accuracy"),
        ]
    refs = [
        f"{name} = {ceiling[v]:.2f}"
        for v, name in (("I_XT", "log2 N"), ("I_TY", "H(Y)"))
        if ceiling[v] is not None and limits[v][0] <= ceiling[v] <= limits[v][1]
    ]
    if refs:
        handles.append(Line2D([], [], ls=":", color="0.35", label="dotted: " + ", ".join(refs)))
    if multi_seed:
        handles.append(
            Line2D(
                [], [], color="0.6", lw=6, alpha=0.4, label="band: 95% t-interval of the seed mean"
            )
        )
    _layout(
        frame, panel=(2.9, 1.85), left=_Y_LABELS, right=0.2, wspace=0.8, hspace=0.38,
        title=title, handles=handles,
    )  # fmt: skip
    return frame.fig


def _build_curves(key: tuple, nrows: int, ncols: int) -> _Frame:
    log = key[-1]
    frame = _new_frame(key, nrows, ncols, sharex=True, sharey="col")
    axes = frame.axes
    for ax in axes.flat:
        ax.grid(alpha=0.25, lw=0.5)
        ax.yaxis.set_major_locator(MaxNLocator(nbins=5))
    for row in range(nrows):
        axes[row, 0].set_ylabel(MI_LABELS["I_XT"])
        axes[row, 1].set_ylabel(MI_LABELS["I_TY"])
        if ncols == 3:
            axes[row, 2].set_ylabel("accuracy")
    if ncols == 3:
        axes[0, 2].set_ylim(0, 1.02)
    for ax in axes[-1]:
        ax.set_xlabel("epoch (log scale past the first step)" if log else "epoch")
    if not log:
        axes[-1, 0].xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
    return frame


def _log_epoch_axis(ax, x: pd.Series) -> None:
    """Symlog x axis from 0 (untrained) through the log-spaced evaluations, plain tick labels."""
    positive = x[x > 0]
    top = float(x.max()) if len(positive) else 1.0
    lin = float(positive.min()) if len(positive) else 1.0
    ax.set_xscale("symlog", linthresh=lin, linscale=0.4)
    ax.set_xlim(0, top * 1.05)
    ticks = [0.0] + [
        10.0**k for k in range(math.floor(math.log10(lin)) + 1, math.floor(math.log10(top)) + 1)
    ]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(NullLocator())


def _epoch_norm(x: pd.Series, log: bool) -> Normalize:
    """Colour scale of epochs: symlog for a ``log:N`` schedule (``log``), else linear."""
    top = max(1.0, float(x.max()))
    if log and (x > 0).any():
        return SymLogNorm(linthresh=float(x[x > 0].min()), linscale=0.4, vmin=0, vmax=top)
    return Normalize(vmin=0, vmax=top)


def pixel_size(fig: Figure, dpi: float) -> tuple[int, int]:
    """The PNG's (width, height) in pixels at ``dpi``."""
    w, h = fig.get_size_inches()
    return round(w * dpi), round(h * dpi)


def render(fig: Figure, dpi: float) -> np.ndarray:
    """Draw ``fig`` with Agg at ``dpi``: its pixels, (height, width, 3) uint8 RGB, a copy (the
    figure may be redrawn while they are written)."""
    fig.set_dpi(dpi)
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    # the figure is opaque: no alpha channel, a quarter less to compress
    return np.ascontiguousarray(np.asarray(canvas.buffer_rgba())[..., :3])


def write_png(rgb: np.ndarray, path: str | os.PathLike, dpi: float) -> None:
    """Write pixels from :func:`render` as a PNG. zlib at level 3: a tenth larger files than
    level 6 in half the time. Pillow releases the GIL while it compresses, so this may run in
    a thread while the next figure is drawn."""
    from PIL import Image  # matplotlib's own dependency, imported by it already

    Image.fromarray(rgb).save(path, format="png", compress_level=3, dpi=(dpi, dpi))


def save_png(fig: Figure, path: str | os.PathLike, dpi: float) -> None:
    """Render ``fig`` with Agg at ``dpi`` and write it to ``path`` as an RGB PNG: what
    ``fig.savefig`` does, less its costs a report does not need (:func:`render`,
    :func:`write_png`)."""
    write_png(render(fig, dpi), path, dpi)
