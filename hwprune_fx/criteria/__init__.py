"""Importance criteria, created by name."""
from __future__ import annotations

from hwprune_fx.criteria import bn_scale, magnitude, random_score  # noqa: F401  (registration)
from hwprune_fx.criteria import information_gain, similarity, taylor  # noqa: F401  (registration)
from hwprune_fx.criteria.base import (Criterion, available_criteria, create_criterion, global_scale, needs_data,
                                      require_data)

__all__ = ["Criterion", "available_criteria", "create_criterion", "needs_data", "require_data", "global_scale"]
