"""Result tables: flattening a config into columns, atomic Parquet writes, merging a sweep."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

JOB_TABLE = "mi.parquet"
SWEEP_TABLE = "results.parquet"
GROUPS = ("model", "data", "optimizer", "estimator")


def flatten_config(cfg: DictConfig | Mapping, prefix: str = "") -> dict[str, Any]:
    """Every scalar leaf of a config as ``{"dotted.key": value}``.

    Keys starting with ``_`` (``_target_``, ``_partial_``) and the ``hydra`` node are left out;
    lists become their string form so that a column holds one type.
    """
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    flat: dict[str, Any] = {}
    for key, value in cfg.items():
        if str(key).startswith("_") or (not prefix and key == "hydra"):
            continue
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, prefix=f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = str(list(value))
        else:
            flat[name] = value
    return flat


def write_parquet_atomic(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write ``df`` beside ``path`` then rename over it: readers see the old or the new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class JobTable:
    """A job's table: rows are appended per epoch and the whole file rewritten atomically."""

    def __init__(self, path: str | os.PathLike, meta: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self.meta = dict(meta)
        self.rows: list[dict[str, Any]] = []

    def append(self, rows: Iterable[Mapping[str, Any]]) -> None:
        self.rows.extend({**self.meta, **r} for r in rows)
        write_parquet_atomic(self.frame(), self.path)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)


def merge_tables(sweep_dir: str | os.PathLike) -> pd.DataFrame | None:
    """Concatenate every job's table under ``sweep_dir`` into ``sweep_dir/results.parquet``."""
    sweep_dir = Path(sweep_dir)
    paths = sorted(sweep_dir.glob(f"**/{JOB_TABLE}"))
    frames = []
    for p in paths:
        try:
            frames.append(pd.read_parquet(p))
        except Exception as err:  # one unreadable job must not lose the others
            log.warning("skipping unreadable table %s: %s", p, err)
    if not frames:
        log.warning("no %s under %s: nothing to merge", JOB_TABLE, sweep_dir)
        return None
    merged = pd.concat(frames, ignore_index=True)
    write_parquet_atomic(merged, sweep_dir / SWEEP_TABLE)
    log.info(
        "merged %d job tables (%d rows) into %s", len(frames), len(merged), sweep_dir / SWEEP_TABLE
    )
    return merged
