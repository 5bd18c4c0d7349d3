"""The sweep machinery: infoflow's Hydra launcher (its plan and its stacks), the runner that
sets a job up and trains its stack, the job directory (status, table, checkpoint), the
training cache, shared evaluation passes, the merge of a sweep's tables and the Slurm check.

Imports: everything below it (:mod:`infoflow.spec`, :mod:`infoflow.training`,
:mod:`infoflow.estimators`, the base modules), Hydra and OmegaConf. Never :mod:`infoflow.report`.
"""
