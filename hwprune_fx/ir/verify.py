"""``verify(graph)``: one checker callable after any pass (like ``torch.fx.Graph.lint``)."""
from __future__ import annotations

import networkx as nx

from hwprune_fx.errors import VerificationError
from hwprune_fx.ir.channel_graph import ChannelGraph

__all__ = ["verify"]


def verify(graph: ChannelGraph) -> None:
    """Check acyclicity, unique producers, known tensors and static shapes on every edge.

    Raises:
        VerificationError: naming the first problem found.
    """
    if not nx.is_directed_acyclic_graph(graph.nx):
        raise VerificationError(f"{graph.name}: the operator graph has a cycle")
    produced: dict[str, str] = {}
    for op in graph.ops():
        for t in op.outputs:
            if t in produced:
                raise VerificationError(f"tensor {t!r} produced by both {produced[t]!r} and {op.name!r}")
            produced[t] = op.name
        for t in list(op.inputs) + list(op.outputs):
            if t and t not in graph.tensors:
                raise VerificationError(f"operator {op.name!r} uses unknown tensor {t!r}")
    for t in graph.outputs:
        if t not in produced and t not in graph.inputs:
            raise VerificationError(f"graph output {t!r} has no producer")
