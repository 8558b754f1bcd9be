"""``predictor`` (AFCP): a regression from per-configuration features to measured latency.

Features: the LUT's per-op-type latency sums, MACs, how many layers were pruned at all, and
the activation traffic (elements of every tracked tensor at its kept channels: the
element-wise operators, pools and copies a per-layer table leaves out);
and, on networks with depthwise convolutions, the activation elements of depthwise layers
whose kept width is not a multiple of 4; fitted to whole-network measurements of randomly
pruned variants, so that it learns fusion and fixed overheads a per-layer sum misses.

Why the depthwise term: on ort-cpu, random unaligned widths made MobileNetV2 variants up to
1.47x *slower* than the unpruned network, which no amount-of-work feature can express. Most
of that is the depthwise kernel itself (a width off a multiple of 4 runs it 2-7x slower,
benchmarks/results/depthwise_comb.md), which the LUT now measures in its own class of
widths; before it did, the term took the held-out error from 4.7% to 3.3% on MobileNetV2 and
from 9.6% to 6.8% on EfficientNet-B0. With the class-aware LUT it adds little
(benchmarks/results/predictor_ablation.md, refitted on fresh variants) and NNLS may weigh it
near zero; it stays for the activation traffic around such layers. The multiple, 4, was
picked on another draw of variants, where 2, 8 and 16 did worse.

The fit is non-negative least squares: every feature is an amount of work, and more work
never makes a network faster. Unconstrained (ridge) fits on 30 noisy samples traded large
opposite-signed coefficients between correlated features and extrapolated a held-out
ResNet-18 variant to 5x its measured latency; NNLS cannot do that.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from hwprune_fx.analysis import DependencyAnalysis
from hwprune_fx.cost_models.base import register_cost_model
from hwprune_fx.cost_models.layer_flops import FlopsConfigModel
from hwprune_fx.cost_models.lut import LutCostModel
from hwprune_fx.profiling.sweep import DEPTHWISE_MULTIPLE

__all__ = ["PredictorCostModel", "fit_coefficients"]

UNALIGNED_DEPTHWISE = DEPTHWISE_MULTIPLE   # a depthwise width off it pays (see the module docstring)


def fit_coefficients(features: np.ndarray, measured_ms: Sequence[float]) -> np.ndarray:
    """Non-negative least squares of ``measured_ms`` on the rows of ``features``, each relative
    error weighted alike (rows divided by the measured latency)."""
    from scipy.optimize import nnls

    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(measured_ms, dtype=np.float64)
    scale = np.abs(x).max(0)
    scale[scale == 0] = 1.0
    coef, _ = nnls(x / scale / y[:, None], np.ones_like(y))
    return coef / scale


@register_cost_model("predictor")
@dataclass
class PredictorCostModel:
    lut: LutCostModel
    analysis: DependencyAnalysis | None = None
    coef: np.ndarray | None = None
    unaligned_depthwise: bool = True   # the depthwise term; off only to measure what it buys
    name: str = field(default="predictor", init=False)

    def __post_init__(self) -> None:
        self.flops = FlopsConfigModel(self.lut.channels)
        kinds = sorted({self._kind(layer) for layer in self.lut.channels.layers})
        self.kinds = kinds
        self._slot_units = self._slot_elems = None
        if self.analysis is not None:
            a = self.analysis
            elems = np.zeros(a.labels.size)
            for t in a.slots.axis:
                shape = a.graph.shape(t)
                elems[a.slots.ids(t)] = float(np.prod(shape)) / max(shape[a.slots.axis[t]], 1) / 1e6
            self._slot_units, self._slot_elems = a.labels, elems
        # depthwise layer index -> elements per input channel, per output channel (millions)
        self._depthwise = {i: (float(np.prod(layer.input_shape[2:])) / 1e6,
                               float(np.prod(layer.output_shape[2:])) / 1e6)
                           for i, layer in enumerate(self.lut.channels.layers)
                           if self.unaligned_depthwise and self._kind(layer) == "depthwise"}

    @staticmethod
    def _kind(layer) -> str:
        if layer.group > 1 and layer.group == layer.in_channels:
            return "depthwise"
        return "conv" if layer.op_type.startswith("Conv") else "linear"

    def feature_names(self) -> list[str]:
        """Names of :meth:`features`' columns, in order (for reports)."""
        traffic = [] if self._slot_units is None else ["activation_traffic_Melems"]
        unaligned = [f"depthwise_off_{UNALIGNED_DEPTHWISE}_Melems"] if self._depthwise else []
        return ["bias", *(f"lut_{k}_ms" for k in self.kinds), "gmacs", "changed_layers/10", *traffic, *unaligned]

    def features(self, keep: np.ndarray) -> np.ndarray:
        per_kind = dict.fromkeys(self.kinds, 0.0)
        changed, unaligned = 0, 0.0
        full = np.ones_like(keep)
        for i, layer in enumerate(self.lut.channels.layers):
            per_kind[self._kind(layer)] += self.lut.layer_ms(keep, i)
            cin, cout = counts = self.lut.channels.counts(keep, i)
            if counts != self.lut.channels.counts(full, i):
                changed += 1
            if i in self._depthwise and (cin % UNALIGNED_DEPTHWISE or cout % UNALIGNED_DEPTHWISE):
                per_in, per_out = self._depthwise[i]   # activation elements (millions, input + output)
                unaligned += cin * per_in + cout * per_out
        traffic = [] if self._slot_units is None else [float(keep[self._slot_units] @ self._slot_elems)]
        return np.array([1.0, *per_kind.values(), self.flops.predict(keep) / 1e3, changed / 10.0, *traffic,
                         *([unaligned] if self._depthwise else [])])

    def fit(self, configs: Sequence[np.ndarray], measured_ms: Sequence[float]) -> "PredictorCostModel":
        """Fit the coefficients to measured variants (see :func:`fit_coefficients`)."""
        self.coef = fit_coefficients(np.stack([self.features(k) for k in configs]), measured_ms)
        return self

    def predict(self, keep: np.ndarray) -> float:
        if self.coef is None:
            return self.lut.predict(keep)
        return float(self.features(keep) @ self.coef)

    def delta(self, keep: np.ndarray, remove: np.ndarray) -> float:
        after = keep.copy()
        after[remove] = False
        return self.predict(after) - self.predict(keep)
