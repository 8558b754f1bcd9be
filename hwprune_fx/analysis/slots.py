"""Channel slots: every (tensor, channel index) pair gets one integer id.

Handlers record which slots must be removed together as pairs of id arrays; the
connected components of that relation (scipy's ``connected_components``, vectorised)
are the removable units. A pinned tensor's slots can never be removed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hwprune_fx.ir import ChannelGraph

__all__ = ["SlotSpace"]


@dataclass
class SlotSpace:
    """Slot ids, the union pairs between them, and the pins (with reasons)."""

    graph: ChannelGraph
    axis: dict[str, int] = field(default_factory=dict)
    offset: dict[str, int] = field(default_factory=dict)
    size: dict[str, int] = field(default_factory=dict)
    pins: dict[str, str] = field(default_factory=dict)
    produced: dict[str, str] = field(default_factory=dict)  # tensor -> op that owns its channels
    total: int = 0
    _pairs_a: list[np.ndarray] = field(default_factory=list)
    _pairs_b: list[np.ndarray] = field(default_factory=list)

    def has(self, tensor: str) -> bool:
        return tensor in self.axis

    def assign(self, tensor: str, axis: int) -> bool:
        """Give ``tensor`` a channel axis and fresh slots; False if its shape is unknown."""
        shape = self.graph.shape(tensor)
        if shape is None or not (0 <= axis < len(shape)):
            return False
        if tensor in self.axis:
            return self.axis[tensor] == axis
        self.axis[tensor] = axis
        self.offset[tensor] = self.total
        self.size[tensor] = int(shape[axis])
        self.total += int(shape[axis])
        return True

    def ids(self, tensor: str, index: np.ndarray | None = None) -> np.ndarray:
        base = np.arange(self.size[tensor], dtype=np.int64) if index is None else np.asarray(index, np.int64)
        return base + self.offset[tensor]

    def union(self, a: str, ia: np.ndarray | None, b: str, ib: np.ndarray | None) -> None:
        """Tie slots ``a[ia]`` to ``b[ib]`` element by element (None: every slot)."""
        xa, xb = self.ids(a, ia), self.ids(b, ib)
        if xa.shape != xb.shape:
            raise ValueError(f"union of {a} and {b}: {xa.shape} vs {xb.shape} slots")
        self._pairs_a.append(xa)
        self._pairs_b.append(xb)

    def union_many(self, a: str, ia: np.ndarray, b: str, ib: np.ndarray) -> None:
        """Like :meth:`union` but for index arrays already expanded by the caller."""
        self.union(a, ia, b, ib)

    def pin(self, tensor: str, reason: str) -> None:
        if tensor in self.axis and tensor not in self.pins:
            self.pins[tensor] = reason

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        if not self._pairs_a:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(self._pairs_a), np.concatenate(self._pairs_b)
