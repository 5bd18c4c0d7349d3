"""The lorenzen2022 tables from sweep directories: verdicts per activation and estimator, failed
runs marked, scores against exact, and each run's split of time between training and
evaluation.

    python benchmarks/lorenzen_table.py outputs/multirun/<date>/<time> [more sweep dirs]
    python benchmarks/lorenzen_table.py DIR --min-drop 0.1 --scores

Per configuration (activation, estimator setting, failed_to_train) and layer, from
``infoflow.compression``: the peak I(X;T) (each seed's peak chosen on the other seeds' mean),
its epoch, the final I(X;T), the drop with its 95% bootstrap interval over seeds, the gain in
I(T;Y), the number of seeds and the verdict. Runs that fail Lorenzen et al.'s rule (training
accuracy below 0.55 at epoch 1,000) are marked by ``infoflow.failed_to_train`` and get rows of
their own. With ``--scores`` and estimators beside ``exact``: ``infoflow.score`` against exact.
Prints Markdown.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pandas as pd

import infoflow

#: a point's log line: "... epoch E step S ... (train 0.16s, estimate 0.01s...)"
_POINT = re.compile(r"eval \d+/\d+ epoch \S+ step \d+ .*\(train ([\d.]+)s, estimate ([\d.]+)s")


def time_split(roots: list[Path]) -> pd.DataFrame:
    """Per job log: seconds of training and of evaluation (probe pass and estimates) summed
    over its points, from the per-point log lines."""
    rows = []
    for root in roots:
        for log in sorted(root.rglob("*.log")):
            train = estimate = 0.0
            points = 0
            for line in log.read_text(errors="replace").splitlines():
                if m := _POINT.search(line):
                    train, estimate = train + float(m[1]), estimate + float(m[2])
                    points += 1
            if points:
                rows.append(
                    {"log": str(log.relative_to(root)), "points": points,
                     "train_s": train, "evaluate_s": estimate}
                )  # fmt: skip
    return pd.DataFrame(rows)


def md(df: pd.DataFrame, digits: int = 3) -> str:
    """A DataFrame as a Markdown table (floats to ``digits``), without tabulate."""

    def cell(v) -> str:
        return f"{v:.{digits}f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + " --- |" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(False)]
    return "\n".join(lines)


def bits(v: float) -> str:
    return "" if pd.isna(v) else f"{v:.2f}"


def verdict_table(verdicts: pd.DataFrame, label: str) -> str:
    lines = [
        f"**{label}**",
        "",
        "| layer | peak I(X;T) | peak epoch | final I(X;T) | drop [95% interval] | I(T;Y) gain "
        "| seeds | verdict |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for _, r in verdicts.iterrows():
        lines.append(
            f"| {r['layer']} {r.get('layer_name', '')} | {bits(r['I_XT_peak'])} | "
            f"{r['peak_epoch']:.0f} | {bits(r['I_XT_final'])} | {bits(r['I_XT_drop'])} "
            f"[{bits(r['I_XT_drop_lo'])}, {bits(r['I_XT_drop_hi'])}] | {bits(r['I_TY_gain'])} | "
            f"{r['n_seeds']} | {r['verdict']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sweeps", nargs="+", type=Path)
    parser.add_argument("--min-drop", type=float, default=0.1, help="bits (compression)")
    parser.add_argument("--scores", action="store_true", help="score estimators against exact")
    args = parser.parse_args()
    df = infoflow.failed_to_train(infoflow.load([str(p) for p in args.sweeps]))
    failed = df.groupby("run_id")["failed_to_train"].first()
    seeds = df.groupby("run_id")[["seed", "model.activation"]].first()
    if failed.any():
        bad = seeds[failed].drop_duplicates()
        print(
            f"{int(failed.sum())} of {len(failed)} runs failed to train (train_acc < 0.55 at "
            "epoch 1,000): "
            + ", ".join(f"{a} seed {s}" for s, a in bad[["seed", "model.activation"]].values)
            + "; they are kept, in rows of their own (failed_to_train=True)\n"
        )
    verdicts = infoflow.compression(df, min_drop=args.min_drop)
    keys = [c for c in ("model.activation", "estimator", "failed_to_train") if c in verdicts]
    for key, g in verdicts.groupby(keys, sort=True):
        label = ", ".join(f"{k}={v}" for k, v in zip(keys, key))
        print(verdict_table(g, label) + "\n")
    if args.scores and df["estimator"].nunique() > 1:
        scores = infoflow.score(df)
        cols = ["I_XT_mae", "I_TY_mae", "I_XT_spearman", "I_TY_spearman", "verdicts_agree"]
        print("Scores against exact (bits; Spearman of the trajectories, mean over layers):\n")
        print(md(scores.summary) + "\n")
        front = list(scores.summary.columns[:-6])  # the setting and configuration keys
        print(md(scores.layers[[*front, "layer", *cols[:4], "verdict", "verdict_ref"]]))
    split = time_split(args.sweeps)
    if not split.empty:
        print("\nTime per job (seconds, summed over its evaluation points):\n")
        print(md(split, 1))


if __name__ == "__main__":
    main()
