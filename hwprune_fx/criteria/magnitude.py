"""Magnitude criteria: the norm of each channel's producing filters, summed over its unit."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hwprune_fx.analysis import DependencyAnalysis
from hwprune_fx.criteria.base import accumulate, register_criterion

__all__ = ["MagnitudeCriterion", "L1Criterion", "L2Criterion", "filter_norms"]


def filter_norms(analysis: DependencyAnalysis, p: int) -> dict[str, np.ndarray]:
    """Per produced tensor, the Lp norm of each output filter of the operator that computes it."""
    out: dict[str, np.ndarray] = {}
    for t, op_name in analysis.slots.produced.items():
        w = analysis.graph.op(op_name).attrs.get("weight")
        if w is None or w.shape[0] != analysis.slots.size[t]:
            continue
        flat = np.abs(np.asarray(w, dtype=np.float64).reshape(w.shape[0], -1))
        out[t] = flat.sum(1) if p == 1 else np.sqrt((flat ** 2).sum(1))
    return out


@dataclass
class MagnitudeCriterion:
    p: int = 1
    name: str = "l1"

    def score(self, analysis: DependencyAnalysis) -> np.ndarray:
        return accumulate(analysis, filter_norms(analysis, self.p))


@register_criterion("l1")
class L1Criterion(MagnitudeCriterion):
    def __init__(self) -> None:
        super().__init__(p=1, name="l1")


@register_criterion("l2")
class L2Criterion(MagnitudeCriterion):
    def __init__(self) -> None:
        super().__init__(p=2, name="l2")
