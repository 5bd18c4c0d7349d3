"""Golden tables: four sweeps re-run through the real CLI must give, bit for bit, the tables
frozen in tests/golden/ from commit 6196410 (before the package's internals were reorganised).

A refactor moves code, it does not change numbers: a failure here means it did. Never regenerate
the golden files to make this pass (tests/golden/README.md).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

GOLDEN = Path(__file__).resolve().parent / "golden"

# Every sweep runs on one CPU thread: a CPU's last digits depend on the thread count.
PINNED = ("runtime.threads=1", "runtime.device=cpu")

# name -> the overrides after ``python -m infoflow -m`` (tests/golden/README.md lists them too)
SWEEPS = {
    # the README's headline sweep: 8 jobs, digits, 5 epochs
    "readme_sweep": ("model=mlp1,mlp3,mlp5,cnn", "estimator.bins=10,30"),
    # three seeds the default launcher trains as one stacked model
    "seed_stack": ("model=mlp1", "seed=0,1,2", "trainer.epochs=3"),
    # the Tishby reference run, shortened
    "tishby_short": ("experiment=tishby2017", "trainer.epochs=200", "trainer.eval=log:40"),
    # four jobs differing only in estimator: one training, shared evaluation passes
    "shared_passes": ("model=mlp1", "estimator=binning,kde,renyi,sliced", "trainer.epochs=2"),
}

# differ from run to run by design: a time stamp and random bits, where the data was read from
DROPPED = ["run_id", "data_source"]
# config keys added since the freeze: a new column each, the numbers unchanged (probe.layers:
# the built-in models' default layers, named in their options since issue 23; model.quantize,
# null unless a net is quantized, issue 24)
ADDED = ["probe.layers", "model.quantize"]

# config columns, the sort key with ROW: the group choices, seed, device and the dotted config
# leaves (``estimator.bins``); every other column is measured (sigma_T and the like included)
GROUPS = {"model", "data", "optimizer", "estimator", "seed", "device"}
ROW = ["epoch", "step", "layer"]


def normalise(df: pd.DataFrame) -> pd.DataFrame:
    """Drop the columns that differ between runs; sort rows by every config column (by name),
    then epoch, step and layer."""
    df = df.drop(columns=[c for c in [*DROPPED, *ADDED] if c in df.columns])
    config = sorted(c for c in df.columns if c in GROUPS or "." in c)
    key = [*config, *ROW]
    assert not df.duplicated(key).any(), f"rows not unique on {key}"
    return df.sort_values(key, kind="mergesort").reset_index(drop=True)


def differences(new: pd.DataFrame, golden: pd.DataFrame) -> str:
    """Per column: how many cells differ and by how much at most (a readable failure)."""
    if len(new) != len(golden):
        return f"{len(new)} rows, golden {len(golden)}"
    lines = []
    for c in golden.columns:
        a, b = new[c], golden[c]
        if a.dtype != b.dtype:
            lines.append(f"{c}: dtype {a.dtype}, golden {b.dtype}")
            continue
        differ = ~((a == b).fillna(False).astype(bool) | (a.isna() & b.isna()))
        if differ.any():
            rows = differ[differ].index
            line = f"{c}: {differ.sum()} of {len(a)} rows differ (first row {rows[0]}"
            if a.dtype.kind == "f":
                line += f", max |diff| {(a - b).abs()[rows].max():.3g}"
            lines.append(f"{line}: {a[rows[0]]!r}, golden {b[rows[0]]!r})")
    return "\n".join(lines)


@pytest.mark.parametrize("name", list(SWEEPS))
def test_sweep_matches_its_golden_table(name, cli, tmp_path):
    sweep = tmp_path / "sweep"
    proc = cli("-m", *SWEEPS[name], *PINNED, f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    new = normalise(pd.read_parquet(sweep / "results.parquet"))
    golden = pd.read_parquet(GOLDEN / f"{name}.parquet")

    missing, extra = set(golden.columns) - set(new.columns), set(new.columns) - set(golden.columns)
    assert not missing and not extra, f"columns missing: {sorted(missing)}, new: {sorted(extra)}"
    new = new[list(golden.columns)]
    try:
        pd.testing.assert_frame_equal(new, golden, check_exact=True)
    except AssertionError as err:
        raise AssertionError(f"{err}\n{differences(new, golden)}") from None


def test_the_readme_sweep_reaches_090_on_digits():
    """The README's sweep (its golden table, which the sweep above reproduces bit for bit):
    8 jobs, every model at >= 0.9 eval accuracy after 5 epochs."""
    df = pd.read_parquet(GOLDEN / "readme_sweep.parquet")
    assert df.groupby(["model", "estimator.bins"]).ngroups == 8
    assert sorted(df.epoch.unique()) == [0, 1, 2, 3, 4, 5]
    final = df[df.epoch == 5].groupby("model").eval_acc.min()
    assert len(final) == 4 and (final >= 0.9).all(), final
