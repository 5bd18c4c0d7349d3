"""Quantization-aware training as Lorenzen, Igel & Nielsen (ICLR 2022) do it, in PyTorch.

Their code (StephanLorenzen/ExactIBAnalysisInQNNs: ``IB/util/quantization.py``,
``IB/models/models.py``, ``IB/experiment.py``) quantizes a Keras net with TensorFlow Model
Optimization (tfmot) and two quantize configs:

- **tanh layers** (``TanhQuantizeConfig``): the Dense layer is linear and unquantized (no weight
  quantization); its activation is ``tanh`` followed by ``tf.quantization.
  fake_quant_with_min_max_vars`` over the *current tensor's* min and max (the training batch,
  or the whole evaluation pass), 2^bits levels.
- **every other Dense layer** (``Default8BitConfig``, ReLU and the softmax output): the kernel
  is fake-quantized over its last value's range (tfmot ``LastValueQuantizer``: min/max of the
  weights at each training step), the activation over a moving-average range (tfmot
  ``MovingAverageQuantizer``: EMA, decay 0.999, of the batch min and max with 0 forced into the
  range, starting from [-6, 6]; an evaluation pass uses the stored range). For the softmax
  output tfmot quantizes *before* the activation (``QuantizeAwareActivation``: softmax is a
  pre-quantized activation): the logits are quantized, the softmax of them is not.
- **the input**: ``quantize_apply`` puts a ``QuantizeLayer`` on it (tfmot's
  ``AllValuesQuantizer``: the range of every batch seen, from [-6, 6]). On the Tishby task's
  0/1 inputs it maps 1 to 0.988 (= 21 steps of 12/255) and 0 to 0.

All ranges are per tensor and asymmetric, with TensorFlow's nudging: the zero point is the
rounded ``-min / scale``, so 0 is exactly a level; gradients are straight-through, zero outside
the range. The fake quantization itself is PyTorch's own op
(``torch.fake_quantize_per_tensor_affine``, what ``torch.ao.quantization.FakeQuantize`` calls);
the ranges are kept here in a few lines because ``FakeQuantize``'s observers differ from tfmot's
where it matters for these nets: ``MovingAverageMinMaxObserver`` starts from the first batch
(tfmot from [-6, 6]: a ReLU layer's EMA minimum, -6 x 0.999^t, takes ~5,000 steps to come
within a level of 0), averages the raw batch minimum (tfmot: min(batch, 0)), keeps observing in
``eval()`` mode unless disabled, and ``MinMaxObserver`` keeps the range of every call where the
tanh layers need the current tensor's. Its Python bookkeeping also costs 3-5x the few lines
here per call (412 against 129 and 949 against 204 microseconds, two side-by-side runs on the
loaded 2-core machine; ``tests/test_quantize.py`` checks the order), on a net whose training
steps are mostly such per-call overhead.

Differences that remain: rounding at exact ties (PyTorch rounds half to even, TF half up),
and the gradient of values beyond the range, which TF sends to its min/max variables (dropped
for the non-trainable ones; for the tanh layer's current range back through ``reduce_min`` to
the extreme values) and PyTorch passes straight through where they round into the range.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

#: tfmot's initial range of every stored range (``_QuantizeHelper._add_range_weights``)
INIT_RANGE = (-6.0, 6.0)
#: tfmot's ``MovingAverageQuantizer`` EMA decay
EMA_DECAY = 0.999
#: the smallest scale, as torch's observers (float32 eps): a range of width 0 still quantizes
MIN_SCALE = float(torch.finfo(torch.float32).eps)
#: the widths model.quantize accepts
BITS = range(2, 17)

RangeRule = Literal["batch", "moving_average", "last_value", "all_values"]


def tf_qparams(lo: float, hi: float, bits: int) -> tuple[float, int]:
    """Scale and zero point of TensorFlow's ``FakeQuantWithMinMaxVars`` for [lo, hi].

    TF's ``Nudge``: ``scale = (hi - lo) / (2^bits - 1)``; the zero point is ``-lo / scale``
    clamped to [0, 2^bits - 1] and rounded half away from zero, so 0 is exactly a level and the
    range becomes ``[-z scale, (2^bits - 1 - z) scale]`` (with ``lo > 0``: ``[0, hi - lo]``, as TF).
    Plain Python floats: this runs several times per training step.
    """
    qmax = (1 << bits) - 1
    scale = max((hi - lo) / qmax, MIN_SCALE)
    z = -lo / scale
    zero = 0 if z < 0 else qmax if z > qmax else math.floor(z + 0.5)
    return scale, int(zero)


class Quantizer(nn.Module):
    """Fake quantization of a whole tensor to 2^bits levels over a range (straight-through).

    ``range``: ``batch``, the current tensor's min and max (tfmot's tanh quantizer of Lorenzen
    et al.: no state, the same in training and evaluation); ``moving_average``, ``last_value``,
    ``all_values``: tfmot's ``MovingAverageQuantizer``, ``LastValueQuantizer`` and
    ``AllValuesQuantizer``, a stored range (buffers ``lo``, ``hi``, float32, from [-6, 6]) that
    a training pass updates from the tensor's min/max with 0 forced in, and an evaluation pass
    (``eval()`` mode) only reads.
    """

    def __init__(self, bits: int, range: RangeRule = "batch", decay: float = EMA_DECAY) -> None:
        super().__init__()
        self.bits, self.rule, self.decay = int(bits), range, decay
        self.qmax = (1 << self.bits) - 1
        if range != "batch":
            self.register_buffer("lo", torch.tensor(INIT_RANGE[0]))
            self.register_buffer("hi", torch.tensor(INIT_RANGE[1]))

    def extra_repr(self) -> str:
        return f"bits={self.bits}, range={self.rule}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantize(x)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        if self.rule == "batch":
            b_lo, b_hi = torch.aminmax(x.detach())
            lo, hi = b_lo.item(), b_hi.item()
        elif self.training:
            lo, hi = self.observe(x)
        else:
            lo, hi = self.lo.item(), self.hi.item()
        if not math.isfinite(hi - lo):  # a diverged net: let the NaN reach the loss, whose
            return x  # check stops the seed with TrainingDiverged
        scale, zero = tf_qparams(lo, hi, self.bits)
        return torch.fake_quantize_per_tensor_affine(x, scale, zero, 0, self.qmax)

    def observe(self, x: torch.Tensor) -> tuple[float, float]:
        """Update the stored range from ``x`` as tfmot does and return it, as stored (float32,
        as TF's variables). Python floats and no ``torch.no_grad()`` context (nothing here
        records a graph: ``x`` is detached, the buffers need no grad): this runs up to 13 times
        per training step."""
        b_lo, b_hi = torch.aminmax(x.detach())
        lo, hi = min(b_lo.item(), 0.0), max(b_hi.item(), 0.0)  # TFLite: 0 is in the range
        if self.rule == "moving_average":  # assign_moving_average: v -= (v - x) * (1 - decay)
            old_lo, old_hi = self.lo.item(), self.hi.item()
            lo = old_lo - (old_lo - lo) * (1.0 - self.decay)
            hi = old_hi - (old_hi - hi) * (1.0 - self.decay)
        elif self.rule == "all_values":
            lo, hi = min(self.lo.item(), lo), max(self.hi.item(), hi)
        self.lo.fill_(lo)
        self.hi.fill_(hi)
        return self.lo.item(), self.hi.item()  # as stored (float32)


class QuantLinear(nn.Linear):
    """``nn.Linear`` with tfmot's quantizers around it: the weight fake-quantized over its last
    value's range (``LastValueQuantizer``, as ``Default8BitConfig``; the bias is not), the
    input over all the values seen (``in_range``: the net's input ``QuantizeLayer``) and the
    output (``out_range``: the softmax layer's logits, a moving-average range). Each is
    optional; ``weight=False`` leaves the weight as it is (``TanhQuantizeConfig``)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bits: int,
        weight: bool = True,
        in_range: RangeRule | None = None,
        out_range: RangeRule | None = None,
    ) -> None:
        super().__init__(in_features, out_features)
        self._quantizers(bits, weight, in_range, out_range)

    def _quantizers(
        self, bits: int, weight: bool, in_range: RangeRule | None, out_range: RangeRule | None
    ) -> None:
        self.in_quant = Quantizer(bits, in_range) if in_range else None
        self.weight_quant = Quantizer(bits, "last_value") if weight else None
        self.out_quant = Quantizer(bits, out_range) if out_range else None

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        bits: int,
        weight: bool = True,
        in_range: RangeRule | None = None,
        out_range: RangeRule | None = None,
    ) -> QuantLinear:
        """The same layer (its parameters, not copies: an initialiser still reaches them)."""
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.in_features, new.out_features = linear.in_features, linear.out_features
        new.weight, new.bias = linear.weight, linear.bias
        new._quantizers(bits, weight, in_range, out_range)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_quant is not None:
            x = self.in_quant.quantize(x)  # (B, in_features)
        w = self.weight if self.weight_quant is None else self.weight_quant.quantize(self.weight)
        y = F.linear(x, w, self.bias)  # (B, out_features)
        return y if self.out_quant is None else self.out_quant.quantize(y)


class QuantTanh(Quantizer):
    """tanh, then fake-quantized over the current tensor's range (Lorenzen et al.'s
    ``TanhQuantizer``). One module (not a tanh and a quantizer): a module call costs as much as
    a small op, and this runs 5 times per step."""

    def __init__(self, bits: int) -> None:
        super().__init__(bits, "batch")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantize(torch.tanh(x))


class QuantReLU(Quantizer):
    """ReLU, then fake-quantized over a moving-average range (tfmot's ``relu`` activation
    under ``Default8BitConfig``: quantized after the activation)."""

    def __init__(self, bits: int) -> None:
        super().__init__(bits, "moving_average")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantize(torch.relu(x))


def check_bits(bits: int) -> int:
    """``model.quantize`` as an int in 2..16 (the spec checks it first; this guards direct use)."""
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in BITS:
        raise ValueError(f"model.quantize must be null or an integer in 2..16, got {bits!r}")
    return bits


def quantize_mlp_(model: nn.Module, bits: int, activation: str) -> nn.Module:
    """Make an MLP's layers those of Lorenzen et al.'s quantized net, in place.

    ``model`` has hidden blocks ``fc1..fcN`` (each ``.linear`` and ``.act``) and the output
    layer ``out``. tanh blocks: ``QuantTanh``, the linear layer's weight unquantized; ReLU
    blocks: the weight quantized and ``QuantReLU``; ``out``: weight quantized, the logits on a
    moving-average range. The input's all-values quantizer (tfmot's input ``QuantizeLayer``)
    runs first in ``fc1.linear``, so that the top-level modules stay ``fc1..fcN, out``. The
    parameters stay the same tensors (the same random draws as the unquantized net).
    """
    bits = check_bits(bits)
    for i, block in enumerate(model.blocks()):
        block.linear = QuantLinear.from_linear(
            block.linear,
            bits,
            weight=activation != "tanh",
            in_range="all_values" if i == 0 else None,
        )
        block.act = QuantTanh(bits) if activation == "tanh" else QuantReLU(bits)
    model.out = QuantLinear.from_linear(model.out, bits, out_range="moving_average")
    return model
