"""The merge oracle: a merged-and-pruned network == the original with each merged channel
replaced by its scaled twin and every other removed channel forced to zero.

The reference is built from the original alone, never from the rewrite under test: the
removed channels are masked as :func:`hwprune_fx.oracle.mask_removed_channels` does, then
after every merged tensor ``T`` a channel-mixing ``Einsum`` with ``M = I``, ``M[c, c] = 0``,
``M[c, k] = alpha`` (so ``T[c] := alpha * T[k]``) feeds all of ``T``'s readers:

    T -> readers      becomes      T -> Einsum(M) -> readers
"""
from __future__ import annotations

import string
from collections import defaultdict
from typing import Iterable, Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from hwprune_fx.analysis.mergeable import Merge
from hwprune_fx.frontends.onnx_io import infer_shapes_static
from hwprune_fx.oracle import (OracleResult, compare_outputs, mask_removed_channels, onnx_oracle, random_inputs,
                               run_onnx)

__all__ = ["merge_reference", "merge_oracle"]


def merge_reference(original: onnx.ModelProto, removed_channels: dict[str, dict],
                    merges: Mapping[int, Merge] | Iterable[Merge]) -> onnx.ModelProto:
    """The original network with ``removed_channels`` zeroed and every merge's ``T[c]`` read as
    ``alpha * T[k]`` by ``T``'s consumers."""
    merges = list(merges.values() if isinstance(merges, Mapping) else merges)
    m = mask_removed_channels(original, removed_channels)
    if not merges:
        return m
    infer_shapes_static(m)  # a copy already; only value_info changes
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
              for vi in list(m.graph.value_info) + list(m.graph.output)}
    by_tensor: dict[str, list[Merge]] = defaultdict(list)
    for mg in merges:
        by_tensor[mg.tensor].append(mg)
    mixes: dict[str, onnx.NodeProto] = {}
    for t, ms in by_tensor.items():
        if t not in removed_channels:
            raise ValueError(f"merge oracle: {t!r} is merged but loses no channel")
        if any(o.name == t for o in m.graph.output):
            raise ValueError(f"merge oracle: merged tensor {t!r} is a graph output")
        axis, shape = int(removed_channels[t]["axis"]), shapes[t]
        mix = np.eye(shape[axis], dtype=np.float32)
        for mg in ms:
            mix[mg.c, mg.c] = 0.0
            mix[mg.c, mg.k] = mg.alpha
        letters = string.ascii_lowercase[:len(shape)]
        eq = f"{letters},z{letters[axis]}->{letters.replace(letters[axis], 'z')}"
        m.graph.initializer.append(numpy_helper.from_array(mix, f"{t}__merge_mix"))
        mixes[t] = helper.make_node("Einsum", [t, f"{t}__merge_mix"], [f"{t}__merged"], equation=eq,
                                    name=f"{t}__merge_oracle")
    nodes = []
    for node in m.graph.node:
        for i, name in enumerate(node.input):
            if name in mixes:
                node.input[i] = f"{name}__merged"
        nodes.append(node)
        nodes.extend(mixes[o] for o in node.output if o in mixes)
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    return m


def merge_oracle(original: onnx.ModelProto, merged: onnx.ModelProto, removed_channels: dict[str, dict],
                 merges: Mapping[int, Merge] | Iterable[Merge], feeds: dict[str, np.ndarray] | None = None,
                 tolerance: float = 1e-3) -> OracleResult:
    """Compare ``merged`` with :func:`merge_reference` on the same inputs (the rule of ``onnx_oracle``).

    Without merges this is :func:`~hwprune_fx.oracle.onnx_oracle` itself (its > 2 GB path included),
    so a caller can use it whatever the criterion.
    """
    merges = list(merges.values() if isinstance(merges, Mapping) else merges)
    feeds = feeds or random_inputs(original)
    if not merges:
        return onnx_oracle(original, merged, removed_channels, feeds, tolerance)
    ref = run_onnx(merge_reference(original, removed_channels, merges), feeds)
    return compare_outputs(ref, run_onnx(merged, feeds), tolerance)
