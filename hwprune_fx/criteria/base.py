"""Importance criteria: one score per removable unit (higher = more important)."""
from __future__ import annotations

from typing import Callable, Protocol

import numpy as np

from hwprune_fx.analysis import DependencyAnalysis
from hwprune_fx.errors import UserError

__all__ = ["Criterion", "register_criterion", "create_criterion", "available_criteria", "accumulate",
           "needs_data", "require_data", "global_scale"]


class Criterion(Protocol):
    """``needs_data = True`` on a class marks a criterion that runs calibration data through the model.

    ``global_scale = True`` marks scores on one scale across groups (a change of the loss or of
    the output distribution): the searches compare them as they are. Other scores (weight norms,
    BN scales, activation energy) depend on each layer's scale, so the searches divide them by
    their group's mean first.
    """

    name: str

    def score(self, analysis: DependencyAnalysis) -> np.ndarray:
        """Importance of every unit, shape ``[analysis.num_units]``."""


_REGISTRY: dict[str, Callable[..., Criterion]] = {}


def register_criterion(name: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        _REGISTRY[name] = cls
        return cls
    return deco


def available_criteria() -> list[str]:
    return sorted(_REGISTRY)


def create_criterion(name: str, **options: object) -> Criterion:
    """Instantiate a criterion by name (``l1``, ``l2``, ``bn``, ``random``; ``taylor`` and ``ig`` take
    ``model=`` and ``calib=``)."""
    _check_known(name)
    return _REGISTRY[name](**options)


def _check_known(name: str) -> None:
    if name not in _REGISTRY:
        raise UserError(f"unknown criterion {name!r}; choose one of: {', '.join(available_criteria())}")


def needs_data(name: str) -> bool:
    """Whether criterion ``name`` needs the model and calibration data (``taylor``, ``ig``)."""
    _check_known(name)
    return bool(getattr(_REGISTRY[name], "needs_data", False))


def global_scale(criterion: object) -> bool:
    """Whether ``criterion``'s scores compare across groups as they are (see :class:`Criterion`)."""
    return bool(getattr(criterion, "global_scale", False))


def require_data(name: str, calib: object) -> None:
    """Fail early, in one line, when a data-driven criterion is asked for without calibration data."""
    if calib is None and needs_data(name):
        raise UserError(f"criterion {name!r} needs calibration data: pass --calib FILE "
                        f"(.npz/.npy or a folder of images)")


def accumulate(analysis: DependencyAnalysis, per_tensor: dict[str, np.ndarray]) -> np.ndarray:
    """Sum per-channel values of several tensors into their units."""
    out = np.zeros(analysis.num_units, dtype=np.float64)
    for t, values in per_tensor.items():
        np.add.at(out, analysis.units_of(t), np.asarray(values, dtype=np.float64))
    return out
