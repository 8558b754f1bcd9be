"""PruningPlan: which units go, derived per tensor; and the ``--ratio`` selection."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hwprune_fx.analysis import DependencyAnalysis
from hwprune_fx.errors import UserError

__all__ = ["PruningPlan", "plan_by_ratio"]


@dataclass
class PruningPlan:
    """Units to remove, with the per-tensor view every rewrite and the report need."""

    analysis: DependencyAnalysis
    removed_units: np.ndarray
    removed_channels: dict[str, dict] = field(init=False)

    def __post_init__(self) -> None:
        self.removed_units = np.unique(np.asarray(self.removed_units, dtype=np.int64))
        if self.analysis.unit_pinned[self.removed_units].any():
            raise ValueError("plan removes a pinned unit")
        self.removed_channels = self.analysis.removed_channels(self.removed_units)
        for t, entry in self.removed_channels.items():
            if len(entry["indices"]) >= self.analysis.slots.size[t]:
                raise ValueError(f"plan removes every channel of {t!r}")

    def removed(self, tensor: str) -> np.ndarray:
        entry = self.removed_channels.get(tensor)
        return np.zeros(0, np.int64) if entry is None else np.asarray(entry["indices"], np.int64)

    def group_sizes(self) -> list[dict]:
        """Per prunable group: channels before and after."""
        gone = set(self.removed_units.tolist())
        return [{"group": g.id, "tensor": g.tensors[0], "before": g.size,
                 "after": g.size - sum(1 for u in g.units.tolist() if u in gone)}
                for g in self.analysis.prunable_groups()]

    @property
    def is_empty(self) -> bool:
        return self.removed_units.size == 0


def plan_by_ratio(analysis: DependencyAnalysis, scores: np.ndarray, ratio: float, round_to: int = 1) -> PruningPlan:
    """Remove ``floor(ratio * size)`` least important units of every prunable group.

    ``round_to`` (Torch-Pruning's option of that name): the kept count is rounded *up* to a
    multiple of it, so fewer units go and the widths stay on the multiples that vectorised
    kernels run fast at; a group smaller than ``round_to`` is left whole.

    At least one unit of each group stays, and no tensor is left without channels (a slice
    that only sees part of a group could otherwise lose all of its channels).
    """
    if not 0.0 < ratio < 1.0:
        raise UserError(f"--ratio must be strictly between 0 and 1, got {ratio}")
    if round_to < 1:
        raise UserError(f"round_to must be a positive channel count, got {round_to}")
    removed = np.zeros(analysis.num_units, dtype=bool)
    for grp in analysis.prunable_groups():
        kept = grp.size - int(np.floor(ratio * grp.size))
        kept = -(-kept // round_to) * round_to
        k = min(grp.size - kept, grp.size - 1)
        if k <= 0:
            continue
        order = np.argsort(scores[grp.units], kind="stable")
        removed[grp.units[order[:k]]] = True
    _keep_one_per_tensor(analysis, scores, removed)
    return PruningPlan(analysis, np.flatnonzero(removed))


def _keep_one_per_tensor(analysis: DependencyAnalysis, scores: np.ndarray, removed: np.ndarray) -> None:
    for t in analysis.slots.axis:
        units = analysis.units_of(t)
        if removed[units].all() and units.size:
            best = units[np.argmax(scores[units])]
            removed[best] = False
