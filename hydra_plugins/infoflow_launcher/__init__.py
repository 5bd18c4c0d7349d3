"""infoflow's Hydra launcher plugin (``hydra/launcher=infoflow``, infoflow's default).

Hydra only instantiates plugins defined under the ``hydra_plugins`` namespace package; the
plan and the runs live in :mod:`infoflow.sweep.launcher`.
"""
