"""infoflow: Hydra sweeps that train small nets and measure per-layer I(X;T), I(T;Y) in bits.

``infoflow.load(path)`` reads result tables back into one pandas DataFrame; the figures live in
``infoflow.plots`` and ``python -m infoflow.report`` (importing ``infoflow`` does not import
matplotlib).
"""

from infoflow.loading import LoadError, load

__all__ = ["LoadError", "load"]
