"""``flops``: multiply-accumulates and parameter counts from the ChannelGraph's static shapes.

The baseline the seeds argue against (FLOPs lie about latency); also what the report
shows as "MACs before/after".
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hwprune_fx.ir import ChannelGraph, Kind

__all__ = ["count_macs", "count_params", "FlopsCostModel"]

_PARAM_INPUTS = {Kind.CONV: (1, 2), Kind.CONV_TRANSPOSE: (1, 2), Kind.LINEAR: (1, 2),
                 Kind.CHANNELWISE: (1, 2), Kind.NORM_OVER_AXES: (1, 2)}


def _numel(shape: tuple[int, ...] | None) -> int:
    return 0 if shape is None else int(np.prod(shape, dtype=np.int64))


def count_macs(graph: ChannelGraph) -> int:
    """MACs of convolutions, transposed convolutions, linear layers and activation matmuls."""
    total = 0
    for op in graph.ops():
        if op.kind in (Kind.CONV, Kind.CONV_TRANSPOSE):
            w = graph.shape(op.inputs[1])
            x, y = graph.shape(op.inputs[0]), graph.shape(op.outputs[0])
            if w is None or x is None or y is None:
                continue
            if op.kind is Kind.CONV:
                total += _numel(y) * _numel(w[1:])
            else:
                total += _numel(x) * _numel(w[1:])
        elif op.kind in (Kind.LINEAR, Kind.MATMUL):
            x, y = graph.shape(op.inputs[0]), graph.shape(op.outputs[0])
            if x is not None and y is not None:
                total += _numel(y) * x[-1]
    return total


def count_params(graph: ChannelGraph) -> int:
    """Weights, biases, normalisation scales/shifts and per-channel constants (not BN statistics)."""
    seen: set[str] = set()
    total = 0
    for op in graph.ops():
        positions = _PARAM_INPUTS.get(op.kind)
        for i, t in enumerate(op.inputs):
            if not t or t in seen or not graph.is_constant(t):
                continue
            if positions is not None and i not in positions:
                continue
            if positions is None and op.kind not in (Kind.ELEMENTWISE, Kind.CONCAT):
                continue
            n = _numel(graph.shape(t))
            if n > 1 or positions is not None:
                seen.add(t)
                total += n
    return total


@dataclass(frozen=True)
class FlopsCostModel:
    """Latency proxy = MACs (in millions). Exists to show what hardware awareness buys."""

    name: str = "flops"

    def predict(self, graph: ChannelGraph) -> float:
        return count_macs(graph) / 1e6
