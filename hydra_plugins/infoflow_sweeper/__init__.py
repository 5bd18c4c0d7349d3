"""infoflow's Hydra sweeper plugin (``hydra/sweeper=infoflow``, infoflow's default).

Hydra only instantiates plugins defined under the ``hydra_plugins`` namespace package; the
expansion and the batches live in :mod:`infoflow.sweep.sweeper`.
"""
