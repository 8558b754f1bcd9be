"""BatchNorm scale criterion (network slimming): |gamma| of every BN a unit passes through.

Groups without a BatchNorm fall back to the L1 filter norm, so every group can be ranked.
"""
from __future__ import annotations

import numpy as np

from hwprune_fx.analysis import DependencyAnalysis
from hwprune_fx.criteria.base import accumulate, register_criterion
from hwprune_fx.criteria.magnitude import filter_norms
from hwprune_fx.ir import Kind

__all__ = ["BNScaleCriterion"]


@register_criterion("bn")
class BNScaleCriterion:
    name = "bn"

    def score(self, analysis: DependencyAnalysis) -> np.ndarray:
        per_tensor: dict[str, np.ndarray] = {}
        for op in analysis.graph.ops():
            scale = op.attrs.get("scale")
            x = op.inputs[0] if op.inputs else ""
            if op.kind is Kind.CHANNELWISE and scale is not None and analysis.slots.has(x):
                per_tensor[x] = np.abs(np.asarray(scale, dtype=np.float64))
        bn = accumulate(analysis, per_tensor)
        l1 = accumulate(analysis, filter_norms(analysis, 1))
        has_bn = np.zeros(analysis.num_units, dtype=bool)
        for t in per_tensor:
            has_bn[analysis.units_of(t)] = True
        return np.where(has_bn, bn, l1)
