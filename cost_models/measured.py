"""``measured`` (HILP): build the pruned network and time it on the target, whole.

The ground truth the cheap models are judged by; slow (a compile and a timing per query),
so searches use it to confirm, not to explore.
"""
from __future__ import annotations

import numpy as np
import onnx

from hwprune_fx.analysis import DependencyAnalysis
from hwprune_fx.cost_models.base import register_cost_model
from hwprune_fx.plan import PruningPlan
from hwprune_fx.targets.base import Backend

__all__ = ["MeasuredCostModel"]


@register_cost_model("measured")
class MeasuredCostModel:
    name = "measured"

    def __init__(self, original: onnx.ModelProto, analysis: DependencyAnalysis, backend: Backend) -> None:
        self.original = original
        self.analysis = analysis
        self.backend = backend

    def build(self, keep: np.ndarray) -> onnx.ModelProto:
        from hwprune_fx.pipeline import materialize

        return materialize(self.original, PruningPlan(self.analysis, np.flatnonzero(~keep)))

    def predict(self, keep: np.ndarray) -> float:
        return self.backend.measure(self.build(keep)).median_ms

    def delta(self, keep: np.ndarray, remove: np.ndarray) -> float:
        after = keep.copy()
        after[remove] = False
        return self.predict(after) - self.predict(keep)
