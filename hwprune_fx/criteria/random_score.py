"""Random importance: the control every other criterion must beat."""
from __future__ import annotations

import numpy as np

from hwprune_fx.analysis import DependencyAnalysis
from hwprune_fx.criteria.base import register_criterion

__all__ = ["RandomCriterion"]


@register_criterion("random")
class RandomCriterion:
    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def score(self, analysis: DependencyAnalysis) -> np.ndarray:
        return np.random.default_rng(self.seed).random(analysis.num_units)
