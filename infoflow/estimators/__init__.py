"""Mutual-information estimators: pure functions of arrays that return numbers in bits.

Every estimator has the signature ``estimator(T, X, Y, **params) -> dict`` where ``T`` holds one
layer's activations (n_samples, ...), ``X`` the inputs (n_samples, ...) and ``Y`` the integer
labels (n_samples,), as NumPy arrays or torch tensors. The dict has at least ``I_XT`` and
``I_TY`` in bits, and the diagnostics ``n_samples``, ``H_max`` (= log2 n_samples, the ceiling
of I_XT), ``saturated`` (I_XT within 1% of H_max) and ``H_Y`` (label entropy, the ceiling of
I_TY); other keys (``H_T``, bounds) become extra table columns.
A config option of the ``estimator`` group names the function (``_target_``) and its params;
:func:`check_params` validates such a node with messages naming the key, rule and value.

- ``binning``: whole-layer plug-in entropies of binned rows (Shwartz-Ziv & Tishby 2017).
- ``kde``: pairwise-distance bounds on the entropy of T + noise (Kolchinsky & Tracey 2017,
  as Saxe et al. 2018) and the Monte Carlo estimate between them (Goldfeld et al. 2019).
- ``renyi``: matrix-based Renyi alpha-entropy MI from Gram matrices (Giraldo et al. 2015).
- ``sliced``: sliced MI over random 1-D projections (Goldfeld & Greenewald 2021).
- ``per_neuron``: the seed notebook's per-unit estimator.
- ``exact``: the plug-in entropies of a quantized layer's rows, exact over the samples
  (Lorenzen, Igel & Nielsen 2022); refuses a layer that is not on a grid.

:func:`saturation_warning` turns a table's ``saturated`` column into a warning that names the
estimators at their ceiling and the keys that would move them; :func:`cost_warning`, before a
job trains, warns where one estimate of a probed layer would be slow or large.
"""

from infoflow.estimators._common import check_params
from infoflow.estimators.binning import binning
from infoflow.estimators.cost import cost_warning
from infoflow.estimators.exact import exact
from infoflow.estimators.kde import kde
from infoflow.estimators.per_neuron import per_neuron
from infoflow.estimators.renyi import renyi
from infoflow.estimators.saturation import saturation_summary, saturation_warning
from infoflow.estimators.sliced import sliced

__all__ = [
    "binning",
    "check_params",
    "cost_warning",
    "exact",
    "kde",
    "per_neuron",
    "renyi",
    "saturation_summary",
    "saturation_warning",
    "sliced",
]
