"""infoflow: Hydra sweeps that train small nets and measure per-layer I(X;T), I(T;Y) in bits.

``infoflow.load(path)`` reads result tables back into one pandas DataFrame; the figures live in
``infoflow.report.plots`` and ``python -m infoflow.report`` (importing ``infoflow`` does not import
matplotlib, nor torch). ``infoflow.Dataset`` is the type a data set of your own returns
(``infoflow.training.data.Dataset``, docs/data.md); it comes with torch, on first use.
"""

from infoflow.report.load import LoadError, final_summary, load, varying_keys
from infoflow.report.score import failed_to_train, score
from infoflow.report.verdicts import compression

__all__ = [
    "LoadError",
    "compression",
    "failed_to_train",
    "final_summary",
    "load",
    "score",
    "varying_keys",
]


def __getattr__(name: str):
    if name == "Dataset":  # lazily: reading tables must not need torch
        from infoflow.training.data import Dataset

        return Dataset
    raise AttributeError(f"module 'infoflow' has no attribute {name!r}")
