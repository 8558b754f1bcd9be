"""``predictor`` (AFCP): a regression from per-configuration features to measured latency.

Features: the LUT's per-op-type latency sums, MACs, how many layers were pruned at all, and
the activation traffic (elements of every tracked tensor at its kept channels: the
element-wise operators, pools and copies a per-layer table leaves out);
fitted (ridge least squares) to whole-network measurements of randomly pruned variants, so
that it learns fusion and fixed overheads a per-layer sum misses.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from hwprune_fx.analysis import DependencyAnalysis
from hwprune_fx.cost_models.base import register_cost_model
from hwprune_fx.cost_models.layer_flops import FlopsConfigModel
from hwprune_fx.cost_models.lut import LutCostModel

__all__ = ["PredictorCostModel"]


@register_cost_model("predictor")
@dataclass
class PredictorCostModel:
    lut: LutCostModel
    analysis: DependencyAnalysis | None = None
    ridge: float = 1e-6
    coef: np.ndarray | None = None
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

    @staticmethod
    def _kind(layer) -> str:
        if layer.group > 1 and layer.group == layer.in_channels:
            return "depthwise"
        return "conv" if layer.op_type.startswith("Conv") else "linear"

    def features(self, keep: np.ndarray) -> np.ndarray:
        per_kind = dict.fromkeys(self.kinds, 0.0)
        changed = 0
        full = np.ones_like(keep)
        for i, layer in enumerate(self.lut.channels.layers):
            per_kind[self._kind(layer)] += self.lut.layer_ms(keep, i)
            if self.lut.channels.counts(keep, i) != self.lut.channels.counts(full, i):
                changed += 1
        traffic = [] if self._slot_units is None else [float(keep[self._slot_units] @ self._slot_elems)]
        return np.array([1.0, *per_kind.values(), self.flops.predict(keep) / 1e3, changed / 10.0, *traffic])

    def fit(self, configs: Sequence[np.ndarray], measured_ms: Sequence[float]) -> "PredictorCostModel":
        """Ridge regression on standardised features; the ridge strength is chosen by
        leave-one-out error among ``ridge * 10**k`` (few, noisy samples overfit otherwise)."""
        x = np.stack([self.features(k) for k in configs])
        y = np.asarray(measured_ms, dtype=np.float64)
        self._mu = x[:, 1:].mean(0)
        self._sd = x[:, 1:].std(0)
        self._sd[self._sd == 0] = 1.0
        z = np.hstack([np.ones((x.shape[0], 1)), (x[:, 1:] - self._mu) / self._sd])
        best = None
        for lam in self.ridge * 10.0 ** np.arange(0, 7):
            reg = lam * np.eye(z.shape[1])
            reg[0, 0] = 0.0
            hat = z @ np.linalg.solve(z.T @ z + reg, z.T)
            resid = (y - hat @ y) / np.clip(1 - np.diag(hat), 1e-6, None)
            loo = float(np.mean((resid / y) ** 2))
            if best is None or loo < best[0]:
                best = (loo, lam)
        reg = best[1] * np.eye(z.shape[1])
        reg[0, 0] = 0.0
        self.coef = np.linalg.solve(z.T @ z + reg, z.T @ y)
        self.chosen_ridge = best[1]
        return self

    def predict(self, keep: np.ndarray) -> float:
        if self.coef is None:
            return self.lut.predict(keep)
        f = self.features(keep)
        return float(self.coef[0] + ((f[1:] - self._mu) / self._sd) @ self.coef[1:])

    def delta(self, keep: np.ndarray, remove: np.ndarray) -> float:
        after = keep.copy()
        after[remove] = False
        return self.predict(after) - self.predict(keep)
