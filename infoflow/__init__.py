"""infoflow: Hydra sweeps that train small nets and measure per-layer I(X;T), I(T;Y) in bits.

``infoflow.load(path)`` reads result tables back into one pandas DataFrame; the figures live in
``infoflow.report.plots`` and ``python -m infoflow.report`` (importing ``infoflow`` does not import
matplotlib).
"""

from infoflow.report.load import LoadError, final_summary, load, varying_keys
from infoflow.report.verdicts import compression

__all__ = ["LoadError", "compression", "final_summary", "load", "varying_keys"]
