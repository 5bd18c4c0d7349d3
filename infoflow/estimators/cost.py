"""What one estimate per layer costs, told before a job trains (issue 23, wide layers).

A job knows its probed layers' widths and the number of samples its estimator sees before it
trains; :func:`cost_warning` turns them and the estimator's parameters into an estimated time
and memory of one estimate of each layer, from a cost model per estimator (the work it does
times a rate measured on one machine), and returns a warning naming the expensive layers and
the cheaper estimators, or None. The models follow the code: renyi's Gram matrices of its
batches and their eigenvalues, sliced's projections, binning's passes over the layer, kde's
O(N^2 d) pairwise distances and O(M N d) Monte Carlo draws; the memory is what each holds
beyond the layer itself (renyi, sliced and kde in column blocks above ``_common.WIDE_UNITS``
units, see docs/estimators.md, "Wide layers").
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import infoflow.estimators._common as _common
from infoflow.estimators.binning import binning
from infoflow.estimators.kde import MC_ROWS, NN_QUERIES, WIDE_VALUES, kde
from infoflow.estimators.renyi import renyi
from infoflow.estimators.sliced import sliced

# A layer whose one estimate is estimated above either limit is named in the warning.
MAX_SECONDS = 30.0
MAX_BYTES = 2**30

# CPU seconds (the process, both torch threads) per unit of work of one estimate, measured with
# ``python benchmarks/bench_wide.py --calibrate`` on 2026-12-05 on the shared 2-core
# development machine (AMD EPYC, 23 GiB, torch 2.14.1 CPU), the least of 3 runs while other
# jobs loaded it (load average 6-11: CPU times there ran up to 2x a quieter run's, so these
# lean high). On an idle machine the wall time is at most the CPU time; a GPU or a larger CPU
# is faster still: the times are upper bounds there, the memory holds on any device.
RATES = {
    "renyi_gram": 1.6e-10,  # per multiply-add of the Gram sums, k b^2 d (with their gather)
    "renyi_eig": 9.3e-10,  # per b^3 of an eigenproblem (two per batch)
    "sliced_proj": 3.7e-11,  # per multiply-add of the projections, N d slices
    "sliced_slice": 4.4e-8,  # per projected value: sort, bins, counts, N slices
    "binning": 1.1e-8,  # per activation: min/max, codes and row hash (uniform bins)
    "quantile": 5.3e-8,  # per activation: np.quantile's sort of the pooled values, codes
    "kde_pair32": 8.6e-11,  # per multiply-add of the pairwise tiles and draws, float32
    "kde_pair64": 1.2e-10,  # the same in float64 (precision=float64 or float64 layers)
}

# Bytes held per value beyond the layer (measured peaks, ru_maxrss, see docs/estimators.md):
RENYI_ROW_BYTES = 16  # narrow renyi: its k b gathered rows, centred, squared, float64 variance
SLICED_DIR_BYTES = 20  # narrow sliced: its (d, slices) directions, float64 twice and float32
SLICED_PROJ_BYTES = 24  # both paths: (N, slices) projections, sorted values, codes, cells
KDE_NARROW_BYTES = 36  # kde up to WIDE_UNITS: float64 copies of the layer, W and U (33 measured)
QUANTILE_COPY_BYTES = 4  # np.quantile sorts a copy of the (float32) layer ...
QUANTILE_RANGE_BYTES = 5  # ... a fixed range clips into another and compares into a bool
BLOCK_BYTES = 24 * _common.BLOCK_ELEMS  # a column block's temporaries on the wide paths
KDE_BLOCK_BYTES = 96 * _common.BLOCK_ELEMS  # kde's float64 row blocks and draws (246-378 MiB)


def _renyi(n: int, d: int, p: dict[str, Any]) -> tuple[float, float]:
    b = min(int(p["batch_size"]), max(n, 1))
    k = n // b if p["batches"] is None else min(int(p["batches"]), n // b)
    seconds = RATES["renyi_gram"] * k * b * b * d + RATES["renyi_eig"] * 2 * k * b**3
    gram = 8 * 4 * k * b * b  # K_T, K_T o K_X, their stack, distances, eigen workspace
    rows = BLOCK_BYTES if d > _common.WIDE_UNITS else RENYI_ROW_BYTES * k * b * d
    return seconds, gram + rows


def _sliced(n: int, d: int, p: dict[str, Any]) -> tuple[float, float]:
    m = int(p["slices"])
    seconds = RATES["sliced_proj"] * n * d * m + RATES["sliced_slice"] * n * m
    directions = BLOCK_BYTES if d > _common.WIDE_UNITS else SLICED_DIR_BYTES * d * m
    return seconds, directions + SLICED_PROJ_BYTES * n * m


def _binning(n: int, d: int, p: dict[str, Any]) -> tuple[float, float]:
    if p["strategy"] != "quantile":  # row blocks of 2^20 values: float32 and int64 codes
        return RATES["binning"] * n * d, 12 * 2**20 + 64 * n
    fixed = p["range"] is not None and p["range"] != "layer"
    per_value = QUANTILE_COPY_BYTES + (QUANTILE_RANGE_BYTES if fixed else 0)
    return RATES["quantile"] * n * d, per_value * n * d + 24 * 2**20 + 64 * n


def _kde(n: int, d: int, p: dict[str, Any]) -> tuple[float, float]:
    # precision=auto takes float64 where max |t - mean|^2 / 2v > 5e4 (kde.FLOAT32_MAX_RATIO),
    # which a wide ReLU layer passes at noise_var=0.1 (2,000 x 65,536 measured: float64): the
    # model assumes float64 unless precision=float32, an upper bound of time and memory
    itemsize = 4 if p["precision"] == "float32" else 8
    rate = RATES["kde_pair32" if itemsize == 4 else "kde_pair64"]
    draws = n if p["mc_samples"] is None else int(p["mc_samples"])
    macs = n * n * d / 2 + draws * n * d  # bounds: the upper triangle; Monte Carlo: every pair
    if p["noise_scale"] == "neighbour":
        macs += min(n, NN_QUERIES) * n * d
    block = int(p.get("block", 2048))
    tiles = 3 * block * block * itemsize
    if d > _common.WIDE_UNITS or n * d > WIDE_VALUES:  # one (N, d) array, the rest in blocks
        held = n * d * itemsize + KDE_BLOCK_BYTES
    else:
        held = KDE_NARROW_BYTES * n * d + 16 * MC_ROWS * d
    return rate * macs, held + tiles


MODELS: dict[Callable[..., Any], Callable[[int, int, dict[str, Any]], tuple[float, float]]] = {
    renyi: _renyi,
    sliced: _sliced,
    binning: _binning,
    kde: _kde,
}


def estimate_cost(estimator: Any, width: int, n_samples: int) -> tuple[float, float] | None:
    """(seconds, bytes) of one estimate of a layer of ``width`` units on ``n_samples`` samples
    by ``estimator`` (a ``functools.partial`` of an estimator function, or the function), at
    this module's measured rates; None for an estimator without a cost model (per_neuron,
    which reads 50 units at most, and estimators of other modules)."""
    func = getattr(estimator, "func", estimator)
    model = MODELS.get(func)
    if model is None:
        return None
    params = {
        name: q.default
        for name, q in inspect.signature(func).parameters.items()
        if q.kind is q.KEYWORD_ONLY
    }
    params.update(getattr(estimator, "keywords", None) or {})
    return model(int(n_samples), int(width), params)


def _size(nbytes: float) -> str:
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**29 else f"{nbytes / 2**20:.0f} MiB"


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


def cost_warning(estimator: Any, widths: list[int], n_samples: int) -> str | None:
    """A warning where one estimate of a probed layer is expensive, else None.

    Parameters
    ----------
    estimator : functools.partial
        The estimator as the runner builds it from the ``estimator`` node: ``.func`` the
        estimator function, ``.keywords`` its parameters (the function's defaults fill the
        others). A bare estimator function is read at its defaults.
    widths : list of int
        Units of each probed layer.
    n_samples : int
        Samples each estimate sees.

    Returns
    -------
    str or None
        One paragraph naming each layer estimated at more than ``MAX_SECONDS`` or
        ``MAX_BYTES`` per estimate (its width, time and memory), the time of one evaluation
        of all layers, and the cheaper estimators (``estimator=renyi``, ``estimator=sliced``);
        None when every layer is below both limits, or the estimator has no cost model.
        Times are this module's measured CPU rates (:data:`RATES`): upper bounds on a GPU.
    """
    costs = [(int(w), estimate_cost(estimator, w, n_samples)) for w in widths]
    if any(c is None for _, c in costs):
        return None
    expensive: dict[int, tuple[int, float, float]] = {}  # width -> (layers, seconds, bytes)
    for w, (s, b) in costs:
        if s > MAX_SECONDS or b > MAX_BYTES:
            count = expensive.get(w, (0, s, b))[0]
            expensive[w] = (count + 1, s, b)
    if not expensive:
        return None
    func = getattr(estimator, "func", estimator)
    keywords = getattr(estimator, "keywords", None) or {}
    setting = ", ".join(f"{k}={v}" for k, v in keywords.items())
    layers = "; ".join(
        f"{'a layer' if count == 1 else f'{count} layers'} of {w:,} units: ~{_duration(s)} and "
        f"~{_size(b)}{'' if count == 1 else ' each'}"
        for w, (count, s, b) in sorted(expensive.items(), reverse=True)
    )
    total = sum(s for _, (s, _) in costs)
    cheaper = (
        "estimator=renyi or estimator=sliced at their defaults estimate layers of up to "
        "65,536 units on 10,000 samples in bounded memory, in seconds"
    )
    if func in (renyi, sliced):
        cheaper = f"{cheaper} (their defaults: batch_size=256, batches=4; slices=128)"
    return (
        f"estimator={func.__name__}{f' ({setting})' if setting else ''} on {n_samples:,} "
        f"samples is expensive here, per estimate (CPU rates measured on a 2-core machine; a "
        f"GPU is faster): {layers}. One evaluation of all {len(costs)} probed layers: "
        f"~{_duration(total)}, repeated at every evaluation. {cheaper}; or probe fewer layers "
        "(probe.layers) or evaluate less often (trainer.eval)."
    )
