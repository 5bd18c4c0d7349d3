"""Draw docs/first_sweep.png: the README's first sweep under binning beside it under renyi.

The two sweeps it reads (run them first, from any directory; S is any folder)::

    python -m infoflow -m model=mlp1,mlp3,mlp5,cnn estimator.bins=10,30 hydra.sweep.dir=S/binning
    python -m infoflow -m model=mlp1,mlp3,mlp5,cnn estimator=renyi hydra.sweep.dir=S/renyi

then ``python benchmarks/first_sweep_figure.py S/binning S/renyi --out docs/first_sweep.png``.

docs/first_sweep.png was drawn on 2026-12-05 from the two sweeps run with
``runtime.threads=1`` on a CPU (the last digits of a CPU run depend on the thread count).
The figure is drawn with matplotlib alone, not with infoflow's report, so that it stays the same
while the report's plots change. Seeds, if a sweep has several, are averaged per epoch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed on a server or in CI
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import to_rgb
from matplotlib.lines import Line2D

import infoflow

NETS = ["mlp1", "mlp3", "mlp5", "cnn"]
COLOURS = {"mlp1": "#1b9e77", "mlp3": "#d95f02", "mlp5": "#7570b3", "cnn": "#e7298a"}
MARKERS = ["o", "s", "^", "D", "v", "P"]  # layer 1, 2, ... of a net


def shade(colour: str, t: float) -> tuple[float, float, float]:
    """The net's colour mixed with white: t=0 (epoch 0) nearly white, t=1 (last epoch) full."""
    rgb = np.array(to_rgb(colour))
    return tuple(1 - (0.15 + 0.85 * t) * (1 - rgb))


def trajectories(df):
    """Mean over seeds per (net, layer, epoch): one trajectory per layer of each net."""
    keys = ["model", "layer", "layer_name", "epoch"]
    return df.groupby(keys, as_index=False)[["I_XT", "I_TY", "H_max", "H_Y"]].mean()


def draw_planes(ax, traj) -> None:
    """Each layer's path in epoch order; markers fill from white (epoch 0) to the net's colour."""
    last = traj.epoch.max()
    for net in (n for n in NETS if n in set(traj.model)):
        colour = COLOURS[net]
        for layer, path in traj[traj.model == net].groupby("layer"):
            path = path.sort_values("epoch")
            ax.plot(path.I_XT, path.I_TY, "-", color=colour, lw=1.1, alpha=0.7, zorder=2)
            ax.scatter(
                path.I_XT,
                path.I_TY,
                s=42,
                marker=MARKERS[(layer - 1) % len(MARKERS)],
                c=[shade(colour, e / last) for e in path.epoch],
                edgecolors=colour,
                linewidths=1.2,
                zorder=3,
            )


def draw_rings(ax, traj) -> None:
    """One ring per net, nested by size: points that coincide still show every net."""
    for k, net in enumerate(n for n in NETS if n in set(traj.model)):
        rows = traj[traj.model == net]
        ax.scatter(
            rows.I_XT,
            rows.I_TY,
            s=(24 - 5 * k) ** 2,
            marker="o",
            facecolors="none",
            edgecolors=COLOURS[net],
            linewidths=2.2,
            zorder=3 + k,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "binning", help="sweep dir of model=mlp1,mlp3,mlp5,cnn estimator.bins=10,30"
    )
    parser.add_argument("renyi", help="sweep dir of model=mlp1,mlp3,mlp5,cnn estimator=renyi")
    parser.add_argument("--bins", type=int, default=30, help="the binning panel's bin count (30)")
    parser.add_argument("--out", default="docs/first_sweep.png", help="PNG to write")
    parser.add_argument(
        "--dpi", type=int, default=100, help="14 x 6 inches at 100 dpi = 1400 x 600 px"
    )
    args = parser.parse_args()

    every_bin_count = infoflow.load(args.binning)
    binned = every_bin_count[every_bin_count["estimator.bins"] == args.bins]
    other = every_bin_count[every_bin_count["estimator.bins"] != args.bins]
    if binned.empty:
        parser.error(f"{args.binning} has no rows with estimator.bins={args.bins}")
    renyi = infoflow.load(args.renyi)
    left, right = trajectories(binned), trajectories(renyi)
    epochs = int(max(left.epoch.max(), right.epoch.max()))
    data = binned["data"].iloc[0]
    n_samples = int(binned["n_samples"].iloc[0])
    n_seeds = binned["seed"].nunique()
    seeds = f"seed {binned['seed'].iloc[0]}" if n_seeds == 1 else f"mean of {n_seeds} seeds"

    fig, (ax_b, ax_r) = plt.subplots(1, 2, figsize=(14, 6), constrained_layout=True)

    # Left: binning. Every layer of every net tells all evaluation samples apart at every epoch,
    # so every point sits on the ceilings log2(N) and H(Y): the estimate cannot move.
    h_max, h_y = float(left.H_max.iloc[0]), float(left.H_Y.iloc[0])
    draw_rings(ax_b, left)
    ax_b.axvline(h_max, ls="--", color="0.35", lw=1.2, zorder=1)
    ax_b.axhline(h_y, ls=":", color="0.35", lw=1.2, zorder=1)
    ax_b.text(
        h_max - 0.12,
        0.25,
        f"ceiling log2(N) = log2({n_samples}) = {h_max:.2f} bits",
        rotation=90,
        ha="right",
        va="bottom",
        color="0.25",
        fontsize=10,
    )
    ax_b.text(
        0.25, h_y - 0.08, f"H(Y) = {h_y:.2f} bits", ha="left", va="top", color="0.25", fontsize=10
    )
    spread = float((other.I_XT - other.H_max).abs().max()) if len(other) else 0.0
    counts = ",".join(str(int(b)) for b in sorted(other["estimator.bins"].unique()))
    note = f"\nestimator.bins={counts}: within {spread:.2f} bits of it" if len(other) else ""
    ax_b.annotate(
        f"all {len(left)} points ({left.model.nunique()} nets, every layer,\nepochs 0-{epochs}) "
        f"at ({h_max:.2f}, {h_y:.2f}){note}",
        xy=(h_max, h_y),
        xytext=(0.5, 1.55),
        fontsize=10,
        arrowprops=dict(arrowstyle="->", color="0.3", lw=1),
    )
    ax_b.set_xlim(0, h_max + 0.6)
    ax_b.set_ylim(0, h_y + 0.35)
    ax_b.set_title(f"estimator.bins={args.bins} (binning, the default): every layer at the ceiling")

    # Right: the same four trainings seen through renyi, whose batches of 256 and kernel width
    # leave room below the ceiling, so the layers' paths over the epochs show.
    draw_planes(ax_r, right)
    ax_r.set_title("estimator=renyi: the same nets' planes move (axes zoomed)")
    ax_r.margins(0.08)

    for ax in (ax_b, ax_r):
        ax.set_xlabel("I(X;T) [bits]")
        ax.set_ylabel("I(T;Y) [bits]")
        ax.grid(alpha=0.25)

    nets = [Line2D([], [], color=COLOURS[n], marker="o", lw=1.1, label=n) for n in NETS]
    layers = [
        Line2D([], [], color="0.3", marker=MARKERS[i], ls="", mfc="none", label=f"layer {i + 1}")
        for i in range(4)
    ]
    epoch_key = [
        Line2D([], [], color="0.3", marker="o", ls="", mfc=shade("#404040", 0), label="epoch 0"),
        Line2D(
            [], [], color="0.3", marker="o", ls="", mfc=shade("#404040", 1), label=f"epoch {epochs}"
        ),
    ]
    ax_r.legend(
        handles=nets + layers + epoch_key,
        loc="center left",
        bbox_to_anchor=(1.01, 0.5),
        frameon=False,
        title=f"{data}, {seeds}",
    )
    fig.suptitle(
        f"The first sweep on {data} (N = {n_samples} evaluation samples): I(X;T) and I(T;Y) "
        f"of every hidden layer, epochs 0-{epochs}",
        fontsize=13,
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=args.dpi)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
