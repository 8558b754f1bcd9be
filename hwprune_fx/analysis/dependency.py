"""Dependency analysis: channel slots -> removable units -> channel groups (DepGraph's idea).

A *unit* is a connected component of tied slots: removing it removes one channel
everywhere it lives. Units that touch the same tensors form a *group* (the 64 channels of
one residual stream, say). A unit that touches a pinned tensor cannot be removed, and the
pin's reason is kept so that ``hwprune-fx analyze`` can say why.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from hwprune_fx.analysis.handlers import apply_handler, default_axis
from hwprune_fx.analysis.slots import SlotSpace
from hwprune_fx.ir import ChannelGraph

__all__ = ["ChannelGroup", "DependencyAnalysis", "analyze_dependencies"]


@dataclass
class ChannelGroup:
    """Units that live in the same tensors; pruned together by ratio, ranked by criteria."""

    id: int
    units: np.ndarray                 # unit ids, in channel order of the first tensor
    tensors: tuple[str, ...]          # every tensor its units touch
    producers: tuple[str, ...]        # operators that own (compute) these channels
    prunable: bool
    reasons: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        return int(self.units.size)


@dataclass
class DependencyAnalysis:
    """Result of the analysis: slot space, unit label per slot, groups."""

    graph: ChannelGraph
    slots: SlotSpace
    labels: np.ndarray                # unit id of every slot
    unit_pinned: np.ndarray           # bool per unit
    groups: list[ChannelGroup] = field(default_factory=list)

    @property
    def num_units(self) -> int:
        return int(self.unit_pinned.size)

    def units_of(self, tensor: str) -> np.ndarray:
        """Unit id of each channel of ``tensor``."""
        return self.labels[self.slots.ids(tensor)]

    def removed_channels(self, removed_units: np.ndarray) -> dict[str, dict]:
        """``{tensor: {"axis": a, "indices": [...]}}`` for every tensor that loses channels."""
        removed = np.zeros(self.num_units, dtype=bool)
        removed[np.asarray(removed_units, dtype=np.int64)] = True
        out: dict[str, dict] = {}
        for t in self.slots.axis:
            idx = np.flatnonzero(removed[self.units_of(t)])
            if idx.size:
                out[t] = {"axis": int(self.slots.axis[t]), "indices": idx.tolist()}
        return out

    def prunable_groups(self) -> list[ChannelGroup]:
        return [grp for grp in self.groups if grp.prunable]


def analyze_dependencies(graph: ChannelGraph) -> DependencyAnalysis:
    """Run every operator's handler, then group the slots into units and units into groups."""
    s = SlotSpace(graph)
    for t in graph.inputs:
        ax = default_axis(graph.shape(t))
        if ax is not None and s.assign(t, ax):
            s.pin(t, f"graph input {t!r}")
    for op in graph.ops():
        apply_handler(op, graph, s)
    for t in graph.outputs:
        s.pin(t, f"graph output {t!r}")

    a, b = s.pairs()
    n = max(s.total, 1)
    adj = coo_matrix((np.ones(a.size, dtype=np.int8), (a, b)), shape=(n, n))
    n_units, labels = connected_components(adj, directed=False)
    labels = labels[: s.total].astype(np.int64)

    tensor_of_slot = np.empty(s.total, dtype=np.int64)
    names = list(s.axis)
    for i, t in enumerate(names):
        tensor_of_slot[s.offset[t]: s.offset[t] + s.size[t]] = i

    pinned = np.zeros(n_units, dtype=bool)
    unit_reason: dict[int, str] = {}
    for t, reason in s.pins.items():
        units = np.unique(labels[s.ids(t)])
        fresh = units[~pinned[units]]
        pinned[units] = True
        for u in fresh.tolist():
            unit_reason.setdefault(u, reason)
    # a unit whose channels no operator computes cannot be removed by any rewrite
    owned = np.zeros(n_units, dtype=bool)
    for t in s.produced:
        owned[labels[s.ids(t)]] = True
    for u in np.flatnonzero(~owned & ~pinned).tolist():
        unit_reason[u] = "no operator owns these channels"
    pinned |= ~owned

    groups = _group_units(s, names, labels, tensor_of_slot, pinned, unit_reason, n_units)
    return DependencyAnalysis(graph=graph, slots=s, labels=labels, unit_pinned=pinned, groups=groups)


def _group_units(
    s: SlotSpace,
    names: list[str],
    labels: np.ndarray,
    tensor_of_slot: np.ndarray,
    pinned: np.ndarray,
    unit_reason: dict[int, str],
    n_units: int,
) -> list[ChannelGroup]:
    """Units with the same set of tensors form one group."""
    pairs = np.unique(np.stack([labels, tensor_of_slot], axis=1), axis=0)
    starts = np.flatnonzero(np.r_[True, pairs[1:, 0] != pairs[:-1, 0]])
    ends = np.r_[starts[1:], len(pairs)]
    by_sig: dict[tuple[int, ...], list[int]] = {}
    for st, en in zip(starts.tolist(), ends.tolist()):
        sig = tuple(pairs[st:en, 1].tolist())
        by_sig.setdefault(sig, []).append(int(pairs[st, 0]))
    # order units by their first slot so a group lists channels in natural order
    first_slot = np.full(n_units, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first_slot, labels, np.arange(labels.size, dtype=np.int64))
    groups: list[ChannelGroup] = []
    for sig, units in sorted(by_sig.items(), key=lambda kv: first_slot[kv[1]].min()):
        units_arr = np.array(sorted(units, key=lambda u: first_slot[u]), dtype=np.int64)
        tensors = tuple(names[i] for i in sig)
        producers = tuple(sorted({s.produced[t] for t in tensors if t in s.produced}))
        is_pinned = bool(pinned[units_arr].any())
        reasons = tuple(sorted({unit_reason[u] for u in units_arr.tolist() if u in unit_reason}))
        groups.append(ChannelGroup(
            id=len(groups), units=units_arr, tensors=tensors, producers=producers,
            prunable=not is_pinned and units_arr.size > 1, reasons=reasons if is_pinned else
            (() if units_arr.size > 1 else ("a single channel cannot be removed",)),
        ))
    return groups
