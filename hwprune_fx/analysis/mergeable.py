"""Which channel groups can *merge* a removed channel into a kept one (AFCP's "similar" choice).

A group's channels live in several tensors. They usually leave the group through one tensor
``T`` only -- ``Conv -> BN -> Relu -> T -> Conv`` -- and when every operator reading ``T`` is
linear in ``T``'s channels with a constant weight (``Conv`` with ``group=1``, ``Gemm`` /
``MatMul`` with a constant right operand), removing channel ``c`` of ``T`` after folding
``alpha * W[:, c]`` into ``W[:, k]`` is the same as replacing ``T[c]`` by ``alpha * T[k]``:

    Conv(W)(T) with T[c] := alpha * T[k]   ==   Conv(W')(T without c),   W'[:, k] = W[:, k] + alpha W[:, c]

A group is *mergeable* when exactly one of its tensors, ``T``, is read by operators outside the
group, all of those are such linear consumers, and every other read of a group tensor is a
per-channel operator whose outputs stay inside the group (BN, Relu, Clip, pools, concat, a
depthwise conv...: :func:`stays_inside`), so that ``T`` carries the channel's whole contribution
to the rest of the network. A depthwise conv is such an operator, so ``pw -> dw -> T -> conv``
merges at the depthwise conv's output, never into the depthwise conv's weight. The sites are
found on the ChannelGraph, but only ONNX op types (``Conv``, ``Gemm``, ``MatMul``) qualify,
since the merge rewrite exists for ONNX graphs only. A residual
stream (read by a conv *and* carried on by an ``Add`` into the next block's convs) has several
such tensors and is never merged. Every refusal carries a reason, like the analysis' pins.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from hwprune_fx.analysis.dependency import ChannelGroup, DependencyAnalysis
from hwprune_fx.ir import Kind, OpNode

__all__ = ["Merge", "MergeSite", "find_merge_sites", "linear_consumer_reason", "stays_inside"]


class Merge(NamedTuple):
    """Remove ``unit`` by folding ``alpha *`` its channel ``c`` of ``tensor`` into channel ``k`` of
    ``twin``: downstream of ``tensor``, ``tensor[c]`` reads as ``alpha * tensor[k]``."""

    unit: int
    twin: int
    alpha: float
    tensor: str
    c: int
    k: int


@dataclass(frozen=True)
class MergeSite:
    """Where a mergeable group's channels leave it: ``tensor`` and the ops that read it.

    ``channels[i]`` is the channel of ``tensor`` that carries ``group.units[i]``; ``consumers``
    are the linear readers with their weight in the kind's layout ``[out, in, ...]``.
    """

    group: ChannelGroup
    tensor: str
    channels: np.ndarray
    consumers: tuple[OpNode, ...]

    def column_norms(self) -> np.ndarray:
        """``sum over consumers of ||W[:, ch]||^2`` for every channel of ``tensor`` in the group."""
        total = np.zeros(self.channels.size, dtype=np.float64)
        for op in self.consumers:
            w = np.asarray(op.attrs["weight"], dtype=np.float64)
            cols = np.swapaxes(w, 0, 1).reshape(w.shape[1], -1)
            total += (cols[self.channels] ** 2).sum(1)
        return total


def linear_consumer_reason(op: OpNode, tensor: str, analysis: DependencyAnalysis) -> str:
    """Empty if ``op`` reads ``tensor`` linearly with a constant weight on its channel axis,
    else why not."""
    g = analysis.graph
    reads = [i for i, t in enumerate(op.inputs) if t == tensor]
    if reads != [0]:
        return f"{op.name} ({op.op_type}) reads {tensor!r} other than as its data input"
    rank = len(g.shape(tensor) or ())
    axis = analysis.slots.axis.get(tensor)
    if op.kind is Kind.CONV and op.op_type == "Conv":
        if int(op.attrs.get("group", 1)) != 1:
            return f"{op.name}: grouped/depthwise convolution mixes no channels to fold into"
        return "" if axis == 1 else f"{op.name}: {tensor!r} has its channels on axis {axis}, not 1"
    if op.kind is Kind.LINEAR and op.op_type in ("Gemm", "MatMul"):
        return "" if axis == rank - 1 else f"{op.name}: {tensor!r} has its channels on axis {axis}, not the last"
    return f"{op.name} ({op.op_type}) is not linear in the channels of {tensor!r} with a constant weight"


_PER_CHANNEL = {Kind.UNARY, Kind.CHANNELWISE, Kind.ELEMENTWISE, Kind.REDUCE, Kind.RESHAPE, Kind.TRANSPOSE,
                Kind.CONCAT, Kind.SPLIT, Kind.SLICE, Kind.GATHER}


def stays_inside(op: OpNode, inside: set[str]) -> bool:
    """Whether ``op`` keeps every channel it reads from the group to itself: its outputs all lie in
    the group and each output channel depends on one input channel (BN, Relu, pools, concat,
    a depthwise conv...). A conv or linear layer that mixes channels is a reader outside."""
    outs = [o for o in op.outputs if o]
    if not outs or any(o not in inside for o in outs):
        return False
    if op.kind in (Kind.CONV, Kind.CONV_TRANSPOSE):
        w = op.attrs.get("weight")
        return w is not None and w.shape[1] == 1  # depthwise: one input channel per group
    return op.kind in _PER_CHANNEL


def find_merge_sites(analysis: DependencyAnalysis) -> tuple[dict[int, MergeSite], dict[int, str]]:
    """``(sites, reasons)``: the merge site of every mergeable prunable group (by group id), and
    for every other prunable group why its channels cannot be merged."""
    sites: dict[int, MergeSite] = {}
    reasons: dict[int, str] = {}
    for grp in analysis.prunable_groups():
        site = _site_of(analysis, grp)
        if isinstance(site, str):
            reasons[grp.id] = site
        else:
            sites[grp.id] = site
    return sites, reasons


def _site_of(analysis: DependencyAnalysis, grp: ChannelGroup) -> MergeSite | str:
    g = analysis.graph
    inside = set(grp.tensors)
    escaping: dict[str, list[OpNode]] = {}
    for t in grp.tensors:
        if t in g.outputs:
            return f"{t!r} is a graph output"
        for op in g.consumers(t):
            if not stays_inside(op, inside):
                escaping.setdefault(t, []).append(op)
    if len(escaping) != 1:
        names = ", ".join(sorted(escaping)) or "none"
        return f"the channels leave the group through {len(escaping)} tensors ({names}), not one"
    tensor, consumers = next(iter(escaping.items()))
    for op in consumers:
        why = linear_consumer_reason(op, tensor, analysis)
        if why:
            return why
    units = analysis.units_of(tensor)
    members = set(grp.units.tolist())
    pos = {u: i for i, u in enumerate(units.tolist()) if u in members}
    if len(pos) != grp.size or np.isin(units, grp.units).sum() != grp.size:
        return f"the units of the group do not map one to one onto channels of {tensor!r}"
    channels = np.array([pos[u] for u in grp.units.tolist()], dtype=np.int64)
    return MergeSite(grp, tensor, channels, tuple({op.name: op for op in consumers}.values()))
