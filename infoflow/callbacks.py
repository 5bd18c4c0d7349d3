"""Hydra callbacks."""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from infoflow.results import merge_tables


class MergeResults(Callback):
    """At the end of a multirun, merge every job's ``mi.parquet`` into ``results.parquet``."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        merge_tables(config.hydra.sweep.dir)
