"""Training and measurement: data sets as whole tensors, the built-in models, the evaluation
schedule, devices and the training loop that trains a stack of seeds and measures it.

Imports: the standard library, torch, numpy, :mod:`infoflow.errors`, :mod:`infoflow.io` and
:mod:`infoflow.estimators`. Never the sweep machinery (:mod:`infoflow.sweep`), the job spec
or the report: what the loop needs of a job (its recorder, its training cache, its shared
evaluation passes) it receives as objects.
"""
