"""The estimator study of docs/estimators.md: checks and its figure from sweep folders.

The sweep (mlp1, mlp3, mlp5 and cnn on Fashion-MNIST, 5 epochs, seeds 0-2, four estimators; each
net is trained once, its seeds as one stack, and every estimator reads the same evaluation
pass)::

    python -m infoflow -m model=mlp1,mlp3,mlp5,cnn seed=0,1,2 \\
        estimator=binning,kde_nn,renyi,sliced data=fashion_mnist trainer.epochs=5 \\
        hydra.sweep.dir=study/sweep

Then::

    python benchmarks/estimator_study.py study/sweep                    # the tables
    python benchmarks/estimator_study.py study/sweep --figure docs/estimators.png

Checks, per estimator (the ceiling of a row is ``I_XT_max`` where the estimator reports one:
renyi's H(X), sliced's log2(bins); else ``H_max`` = log2 n_samples):

* ``below 90%``: the share of rows with I(X;T) below 90% of its ceiling;
* ``moves``: the share of (net, layer) trajectories whose seed-mean I(X;T) (and I(T;Y)) spans
  more over the epochs (max - min) than the seed standard deviation (mean over epochs), and
  the least ratio of the two;
* ``DPI at epoch 0``: whether the seed-mean I(X;T) of the untrained nets falls with depth (no
  rise from a layer to the next; else the largest rise, in bits).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import infoflow

MODELS = ["mlp1", "mlp3", "mlp5", "cnn"]
ORDER = ["binning", "kde", "renyi", "sliced"]


def base_estimator(choice: str) -> str:
    """``kde_nn`` -> ``kde``: the estimator a preset belongs to."""
    return next((e for e in ORDER if str(choice).startswith(e)), str(choice))


def load(paths: list[str]) -> pd.DataFrame:
    df = infoflow.load(paths)
    last = df.groupby("run_id").epoch.transform("max")
    df = df[last >= df["trainer.epochs"]].copy()  # finished runs only (a stopped sweep's rest)
    df["est"] = df["estimator"].map(base_estimator)
    if "I_XT_mc" in df.columns:  # kde: plot and check the Monte Carlo point estimate
        mc = df["est"].eq("kde") & df["I_XT_mc"].notna()
        df.loc[mc, "I_XT"] = df.loc[mc, "I_XT_mc"]
        df.loc[mc, "I_TY"] = df.loc[mc, "I_TY_mc"]
    ceiling = df["H_max"].astype(float)
    if "I_XT_max" in df.columns:
        ceiling = df["I_XT_max"].astype(float).fillna(ceiling)
    df["ceiling"] = ceiling
    return df


def check_table(df: pd.DataFrame) -> pd.DataFrame:
    """One line per estimator: the three checks."""
    lines = []
    for est, rows in df.groupby("est", sort=False):
        traj = rows.groupby(["model", "layer", "epoch"])[["I_XT", "I_TY"]]
        mean, std = traj.mean(), traj.std()
        span = mean.groupby(["model", "layer"]).agg(lambda s: s.max() - s.min())
        noise = std.groupby(["model", "layer"]).mean()
        seeds = rows.groupby("model").seed.nunique()
        known = noise.I_XT.notna()  # trajectories with two seeds or more

        def moves(col: str, span=span, noise=noise, known=known) -> str:
            if not known.any():
                return "n/a"
            s, n = span.loc[known, col], noise.loc[known, col]
            ok = s > n + 1e-9
            least = (s / n.where(n > 0)).min()  # the weakest trajectory: span over seed std
            ratio = f"; least span/std {least:.1f}" if np.isfinite(least) else ""
            return f"{int(ok.sum())} of {int(known.sum())}{ratio}"

        e0 = mean.xs(0, level="epoch")["I_XT"]
        dpi = []
        for model in MODELS:
            if model in e0.index.get_level_values(0):
                seq = e0.loc[model].sort_index().to_numpy()
                rise = float(np.diff(seq).max()) if len(seq) > 1 else 0.0
                verdict = "yes" if rise <= 1e-9 else f"no (+{rise:.3f})"  # the largest rise
                dpi.append(f"{model} {verdict}")
        lines.append(
            {
                "estimator": est,
                "rows": len(rows),
                "seeds": ", ".join(f"{m} {seeds[m]}" for m in MODELS if m in seeds),
                "I_XT below 90% of ceiling": f"{(rows.I_XT < 0.9 * rows.ceiling).mean():.1%}",
                "saturated": f"{rows.saturated.astype(bool).mean():.1%}",
                "I_XT moves > seed std": moves("I_XT"),
                "I_TY moves > seed std": moves("I_TY"),
                "I_XT(epoch 0) falls with depth": ", ".join(dpi),
            }
        )
    return pd.DataFrame(lines)


def trajectory_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per estimator, net and layer: I(X;T) at epochs 0, 1 and last (seed mean), span, seed std."""
    out = []
    for (est, model, _layer), rows in df.groupby(["est", "model", "layer"], sort=False):
        by = rows.groupby("epoch")
        m, s = by.I_XT.mean(), by.I_XT.std()
        t = by.I_TY.mean()
        out.append(
            {
                "estimator": est,
                "model": model,
                "layer": rows.layer_name.iloc[0],
                "I_XT e0": round(m.iloc[0], 3),
                "I_XT e1": round(m.iloc[1], 3),
                "I_XT last": round(m.iloc[-1], 3),
                "I_XT span": round(m.max() - m.min(), 3),
                "I_XT seed std": round(float(s.mean()), 3) if s.notna().any() else np.nan,
                "I_TY e0": round(t.iloc[0], 3),
                "I_TY last": round(t.iloc[-1], 3),
                "ceiling": round(float(rows.ceiling.mean()), 2),
            }
        )
    out = pd.DataFrame(out)
    out["model"] = pd.Categorical(out["model"], MODELS)
    return out.sort_values(["estimator", "model"], kind="stable")


def figure(df: pd.DataFrame, path: Path) -> None:
    """Information planes: estimators in rows, the four nets in columns, seed means."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ests = [e for e in ORDER if e in set(df.est)]
    fig, axes = plt.subplots(
        len(ests), len(MODELS), figsize=(11, 2.5 * len(ests)), dpi=80, sharex="row", sharey="row"
    )
    axes = np.atleast_2d(axes)
    cmap = plt.get_cmap("viridis")
    markers = "osD^v"
    epochs = sorted(df.epoch.unique())
    for i, est in enumerate(ests):
        rows = df[df.est == est]
        for j, model in enumerate(MODELS):
            ax = axes[i, j]
            sub = rows[rows.model == model]
            if sub.empty:
                ax.text(
                    0.5,
                    0.5,
                    "not in this sweep\n(see docs/estimators.md)",
                    ha="center",
                    va="center",
                    transform=ax.transAxes,
                    fontsize=8,
                    color="0.4",
                )
            for k, (_layer, lrows) in enumerate(sub.groupby("layer")):
                tr = lrows.groupby("epoch")[["I_XT", "I_TY"]].mean()
                ax.plot(tr.I_XT, tr.I_TY, "-", color="0.6", lw=0.8, zorder=1)
                ax.scatter(
                    tr.I_XT,
                    tr.I_TY,
                    c=cmap(tr.index / max(epochs)),
                    s=22,
                    marker=markers[k % 5],
                    edgecolors="k",
                    linewidths=0.3,
                    zorder=2,
                    label=lrows.layer_name.iloc[0],
                )
            if not sub.empty:
                ax.legend(fontsize=6, loc="best", frameon=False, handletextpad=0.2)
            ax.ticklabel_format(useOffset=False)
            if est == "binning":  # saturated: show the ceilings, not rounding noise
                ax.set_xlim(0, 14)
                ax.set_ylim(0, 3.5)
            if i == 0:
                ax.set_title(model, fontsize=10)
            if j == 0:
                name = {"kde": "kde (MC, noise_scale=neighbour)"}.get(est, est)
                ax.set_ylabel(f"{name}\nI(T;Y) [bits]", fontsize=8)
            if i == len(ests) - 1:
                ax.set_xlabel("I(X;T) [bits]", fontsize=8)
            ax.tick_params(labelsize=7)
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, max(epochs)))
    fig.colorbar(sm, ax=axes, shrink=0.5, label="epoch")
    fig.suptitle(
        "Fashion-MNIST, 5 epochs: information planes by estimator (defaults; kde: kde_nn). "
        + ", ".join(
            f"{m}: {n} seed{'s' * (n > 1)}" for m, n in df.groupby("model").seed.nunique().items()
        ),
        fontsize=9,
    )
    fig.savefig(path, dpi=80, bbox_inches="tight")


def markdown(df: pd.DataFrame) -> str:
    """A Markdown table (without the optional ``tabulate`` package)."""
    cells = [[str(c) for c in df.columns]] + [[str(v) for v in row] for row in df.to_numpy()]
    lines = ["| " + " | ".join(r) + " |" for r in cells]
    lines.insert(1, "|" + "---|" * len(df.columns))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweeps", nargs="+", help="sweep folders (or tables)")
    parser.add_argument("--figure", type=Path, help="write the information-plane figure here")
    args = parser.parse_args()
    df = load(args.sweeps)
    print(markdown(check_table(df)))
    print()
    print(markdown(trajectory_table(df)))
    if args.figure:
        figure(df, args.figure)
        print(f"\nfigure: {args.figure} ({args.figure.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
