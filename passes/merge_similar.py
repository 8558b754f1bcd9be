"""``merge-similar``: fold removed channels into their kept twins (AFCP's "similar" choice).

    Conv(W)(T) -> Conv(W')(T),   W'[:, k] = W[:, k] + alpha * W[:, c],   W'[:, c] = 0

for every merge ``c -> k`` of ``T`` (``Gemm``/``MatMul``: the same on the weight's input axis).
Alone, the pass makes ``T[c]`` read as ``alpha * T[k]`` downstream of ``T``; the channel-removal
rewrite that follows (:func:`materialize_merged`) then drops the zero column together with ``c``.
It runs *before* the removal, which would otherwise throw ``W[:, c]`` away. Only merges whose
twin the plan keeps apply (:func:`applicable_merges`); a merged channel whose twin is removed
too falls back to a plain zero-out. The exact check is :func:`hwprune_fx.merge_oracle.merge_oracle`.
"""
from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Iterable, Mapping

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from hwprune_fx.analysis.mergeable import Merge
from hwprune_fx.errors import RewriteError
from hwprune_fx.pass_infra import PassBase, PassResult
from hwprune_fx.plan import PruningPlan

__all__ = ["MergeSimilarPass", "applicable_merges", "materialize_merged", "weight_axis"]

_counter = itertools.count()


def applicable_merges(plan: PruningPlan, twins: Mapping[int, Merge] | Iterable[Merge]) -> list[Merge]:
    """The merges of ``twins`` that ``plan`` realises: the unit is removed and its twin kept."""
    merges = twins.values() if isinstance(twins, Mapping) else twins
    removed = set(plan.removed_units.tolist())
    return [m for m in merges if m.unit in removed and m.twin not in removed]


def weight_axis(node: gs.Node, tensor: gs.Tensor) -> int | str:
    """The axis of ``node``'s constant weight that meets ``tensor``'s channels, or why there is none."""
    if [i for i, t in enumerate(node.inputs) if t is tensor] != [0]:
        return f"{node.name} ({node.op}) reads {tensor.name!r} other than as its data input"
    w = node.inputs[1] if len(node.inputs) > 1 else None
    if not isinstance(w, gs.Constant):
        return f"{node.name} ({node.op}): the weight is not a constant"
    if node.op == "Conv":
        return 1 if int(node.attrs.get("group", 1)) == 1 else f"{node.name}: grouped convolution"
    if node.op == "Gemm" and not int(node.attrs.get("transA", 0)):
        return 1 if int(node.attrs.get("transB", 0)) else 0
    if node.op == "MatMul" and w.values.ndim == 2:
        return 0
    return f"{node.name} ({node.op}) is not linear in {tensor.name!r} with a constant weight"


class MergeSimilarPass(PassBase):
    """Fold ``alpha * W[:, c]`` into ``W[:, k]`` (and zero ``W[:, c]``) for every merge, in place.

    Args:
        merges: the merges to apply (:func:`applicable_merges` of the criterion's ``twins``); each
            ``c`` must be removed and each ``k`` kept by the plan the removal rewrite applies next.
    """

    name = "merge-similar"
    in_place = True

    def __init__(self, merges: Iterable[Merge]) -> None:
        self.merges = list(merges)

    def requires(self, model: object) -> None:
        if not isinstance(model, gs.Graph):
            raise TypeError(f"merge-similar works on an onnx-graphsurgeon graph, not {type(model).__name__}")
        merged = {(m.tensor, m.c) for m in self.merges}
        if len(merged) != len(self.merges) or any((m.tensor, m.k) in merged for m in self.merges):
            raise RewriteError("merge-similar: a channel is merged twice or merged into a merged channel")

    def call(self, model: gs.Graph) -> PassResult:
        if not self.merges:
            return PassResult(model, False)
        by_tensor: dict[str, list[Merge]] = defaultdict(list)
        for m in self.merges:
            by_tensor[m.tensor].append(m)
        tensors = model.tensors()
        changed = 0
        for name, merges in by_tensor.items():
            t = tensors.get(name)
            if t is None:
                raise RewriteError(f"merge-similar: no tensor {name!r} in the graph")
            for node in {id(n): n for n in t.outputs}.values():
                axis = weight_axis(node, t)
                if isinstance(axis, str):
                    raise RewriteError(f"merge-similar: cannot merge channels of {name!r}: {axis}")
                changed += _fold(node, axis, merges)
        return PassResult(model, changed > 0, {"merges": len(self.merges), "tensors": len(by_tensor),
                                               "weights_changed": changed})


def _fold(node: gs.Node, axis: int, merges: list[Merge]) -> bool:
    """Fold the merges into ``node``'s weight; False if that changes nothing (already folded:
    ``W[:, c]`` is zero then, so the pass is idempotent)."""
    old = node.inputs[1]
    w = np.array(old.values, copy=True)
    src = np.moveaxis(np.asarray(old.values), axis, 0)
    dst = np.moveaxis(w, axis, 0)  # a view: writes land in w
    for m in merges:
        dst[m.k] += np.asarray(m.alpha, w.dtype) * src[m.c]
    for m in merges:
        dst[m.c] = 0
    if np.array_equal(w, np.asarray(old.values)):
        return False
    node.inputs[1] = gs.Constant(f"{old.name}__merged{next(_counter)}", np.ascontiguousarray(w))
    return True


def materialize_merged(original: onnx.ModelProto, plan: PruningPlan,
                       merges: Mapping[int, Merge] | Iterable[Merge]) -> onnx.ModelProto:
    """The pruned network of ``plan`` with the applicable ``merges`` folded in first (a fresh copy
    of the prepared original, like ``hwprune_fx.pipeline.materialize``)."""
    from hwprune_fx.emit.onnx_emit import export_checked
    from hwprune_fx.passes.prune_channels import PruneChannelsPass

    graph = gs.import_onnx(original)
    MergeSimilarPass(applicable_merges(plan, merges))(graph)
    PruneChannelsPass(plan)(graph)
    return export_checked(graph, plan)
