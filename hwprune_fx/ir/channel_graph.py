"""ChannelGraph: operators with channel semantics, tensors with static shapes.

The graph is a :class:`networkx.DiGraph` whose nodes are operator names (attribute ``op``
holds the :class:`OpNode`) and whose edges carry the tensor name that flows along them.
Both frontends build it; everything between frontend and emitter works on it alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import networkx as nx
import numpy as np

from hwprune_fx.ir.kinds import Kind

__all__ = ["TensorInfo", "OpNode", "ChannelGraph"]


@dataclass
class TensorInfo:
    """A tensor of the graph. ``value`` is kept for constants the analysis reads."""

    name: str
    shape: tuple[int, ...] | None
    is_constant: bool = False
    value: np.ndarray | None = None

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)


@dataclass
class OpNode:
    """One operator: its concrete type (for messages) and its channel-semantics kind."""

    name: str
    op_type: str
    kind: Kind
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    reason: str = ""  # why the frontend made it a barrier


class ChannelGraph:
    """Operators and tensors; built once by a frontend, read by every analysis."""

    def __init__(self, name: str = "graph") -> None:
        self.name = name
        self.nx = nx.DiGraph()
        self.tensors: dict[str, TensorInfo] = {}
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self._producer: dict[str, str] = {}

    # -- construction -------------------------------------------------------------------
    def add_tensor(self, info: TensorInfo) -> None:
        self.tensors[info.name] = info

    def add_op(self, op: OpNode) -> None:
        if op.name in self.nx:
            raise ValueError(f"duplicate operator name {op.name!r}")
        self.nx.add_node(op.name, op=op)
        for t in op.outputs:
            self._producer[t] = op.name
        for t in op.inputs:
            src = self._producer.get(t)
            if src is not None:
                self.nx.add_edge(src, op.name, tensor=t)

    def finish(self) -> "ChannelGraph":
        """Add edges to producers declared after their consumers (frontends may emit any order)."""
        for name, data in self.nx.nodes(data=True):
            for t in data["op"].inputs:
                src = self._producer.get(t)
                if src is not None and not self.nx.has_edge(src, name):
                    self.nx.add_edge(src, name, tensor=t)
        return self

    # -- queries ------------------------------------------------------------------------
    def op(self, name: str) -> OpNode:
        return self.nx.nodes[name]["op"]

    def ops(self) -> Iterator[OpNode]:
        """Operators in topological order."""
        for name in nx.topological_sort(self.nx):
            yield self.nx.nodes[name]["op"]

    def producer(self, tensor: str) -> OpNode | None:
        name = self._producer.get(tensor)
        return None if name is None else self.op(name)

    def consumers(self, tensor: str) -> list[OpNode]:
        src = self._producer.get(tensor)
        if src is None:
            return [d["op"] for _, d in self.nx.nodes(data=True) if tensor in d["op"].inputs]
        return [self.op(n) for n in self.nx.successors(src) if tensor in self.op(n).inputs]

    def shape(self, tensor: str) -> tuple[int, ...] | None:
        info = self.tensors.get(tensor)
        return None if info is None else info.shape

    def is_constant(self, tensor: str) -> bool:
        info = self.tensors.get(tensor)
        return bool(info and info.is_constant)

    def __len__(self) -> int:
        return self.nx.number_of_nodes()
