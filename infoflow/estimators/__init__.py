"""Mutual-information estimators: pure functions of arrays that return numbers in bits.

Every estimator has the signature ``estimator(T, X, Y, **params) -> dict`` where ``T`` holds one
layer's activations (n_samples, ...), ``X`` the inputs (n_samples, ...) and ``Y`` the integer
labels (n_samples,), as NumPy arrays or torch tensors. The dict has at least ``I_XT`` and
``I_TY`` in bits; other keys (``H_T``, ``n_samples``, bounds) become extra table columns.
A config option of the ``estimator`` group names the function (``_target_``) and its params.
"""

from infoflow.estimators.binning import binning
from infoflow.estimators.per_neuron import per_neuron

__all__ = ["binning", "per_neuron"]
