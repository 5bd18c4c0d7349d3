"""The closing-note table of the Tishby task from sweep directories: per layer, over seeds.

For every group of runs (``LABEL=PATH[,PATH...]`` on the command line, split further by
``model.activation``) and every hidden layer: I(X;T) at epoch 0, at its peak (with the epoch
of the peak) and at the last evaluation, and I(T;Y) at the last evaluation, as mean +- std
(ddof=1) over the seeds, in bits. Runs whose ``status.json`` is not ``completed`` are listed
and left out unless ``--partial`` (then the last epoch each reached is shown).

    python benchmarks/tishby_table.py \\
        tishby2017=outputs/tishby/tishby2017,outputs/tishby/tishby2017_s1-4 \\
        saxe2018=outputs/tishby/saxe2018_e1000

Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from infoflow.report.load import load


def run_status(paths: list[Path]) -> dict[str, str]:
    """run_id -> status, from every ``status.json`` under ``paths``."""
    out = {}
    for root in paths:
        for f in root.rglob("status.json"):
            s = json.loads(f.read_text())
            out[s.get("run_id", "")] = s.get("status", "?")
    return out


def per_seed(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, layer): start, peak (value, epoch), end of I_XT; end of I_TY."""
    rows = []
    for (run, layer), g in df.groupby(["run_id", "layer"], sort=True):
        g = g.sort_values("epoch")
        xt, epoch = g["I_XT"].to_numpy(), g["epoch"].to_numpy(dtype=float)
        peak = int(np.argmax(xt))
        rows.append({
            "run_id": run, "layer": int(layer), "layer_name": g["layer_name"].iloc[0],
            "units": int(g["units"].iloc[0]), "seed": int(g["seed"].iloc[0]),
            "XT_0": xt[0], "XT_peak": xt[peak], "peak_epoch": epoch[peak], "XT_end": xt[-1],
            "TY_end": g["I_TY"].iloc[-1], "end_epoch": epoch[-1],
        })  # fmt: skip
    return pd.DataFrame(rows)


def fmt(values: pd.Series, digits: int = 2) -> str:
    v = values.to_numpy(dtype=float)
    if len(v) < 2:
        return f"{v.mean():.{digits}f}"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def table(label: str, df: pd.DataFrame) -> str:
    seeds = per_seed(df)
    lines = [
        f"**{label}** ({seeds['run_id'].nunique()} seeds: "
        f"{', '.join(map(str, sorted(seeds['seed'].unique())))}; last epoch "
        f"{', '.join(f'{e:g}' for e in sorted(seeds['end_epoch'].unique()))})",
        "",
        "| layer | units | I(X;T) epoch 0 | I(X;T) peak | peak epoch (median [min, max]) "
        "| I(X;T) end | I(T;Y) end |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for (layer, name, units), g in seeds.groupby(["layer", "layer_name", "units"], sort=True):
        pe = g["peak_epoch"]
        lines.append(
            f"| {layer} {name} | {units} | {fmt(g['XT_0'])} | {fmt(g['XT_peak'])} | "
            f"{pe.median():.3g} [{pe.min():.3g}, {pe.max():.3g}] | {fmt(g['XT_end'])} | "
            f"{fmt(g['TY_end'], 3)} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("groups", nargs="+", metavar="LABEL=PATH[,PATH...]")
    parser.add_argument("--partial", action="store_true", help="include unfinished runs")
    args = parser.parse_args()
    for spec in args.groups:
        label, _, paths = spec.partition("=")
        roots = [Path(p) for p in paths.split(",")]
        df = load([str(p) for p in roots])
        status = run_status(roots)
        unfinished = sorted(r for r in df["run_id"].unique() if status.get(r) != "completed")
        if unfinished:
            print(f"{label}: {len(unfinished)} run(s) not completed: {', '.join(unfinished)}"
                  + ("" if args.partial else " (left out; --partial includes them)"))  # fmt: skip
            if not args.partial:
                df = df[~df["run_id"].isin(unfinished)]
        keys = ["model.activation"] if "model.activation" in df.columns else []
        for values, g in df.groupby(keys, sort=True) if keys else [((), df)]:
            name = label + (f", {values[0]}" if keys else "")
            print(table(name, g) + "\n")


if __name__ == "__main__":
    main()
