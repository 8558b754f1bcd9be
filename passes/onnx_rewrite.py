"""Apply a PruningPlan to an onnx-graphsurgeon graph: slice parameters, fix shape constants.

    Conv(W[Cout, Cin/g]) -> Conv(W[kept out, kept in/g'], group=g')
    Gemm/MatMul(W)       -> W sliced on K and M
    BN / per-channel constants / PRelu slopes -> sliced on the channel axis
    Reshape / Split / Slice constants that encode channel counts -> recomputed

Every modified constant is a new tensor, so constants shared between nodes stay correct.
After the rewrite, shapes are re-inferred and every channel count is checked against the
plan: a mismatch is a :class:`RewriteError`, never a silently wrong network.
"""
from __future__ import annotations

import itertools
from typing import Callable

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from hwprune_fx.errors import RewriteError
from hwprune_fx.plan import PruningPlan

__all__ = ["rewrite_onnx_graph", "check_channel_counts"]

_counter = itertools.count()
NodeRewriter = Callable[[gs.Node, PruningPlan], None]
_REWRITERS: dict[str, NodeRewriter] = {}


def _rewrites(*ops: str) -> Callable[[NodeRewriter], NodeRewriter]:
    def deco(fn: NodeRewriter) -> NodeRewriter:
        for o in ops:
            _REWRITERS[o] = fn
        return fn
    return deco


def _set_const(node: gs.Node, i: int, values: np.ndarray) -> None:
    old = node.inputs[i]
    node.inputs[i] = gs.Constant(f"{old.name}__pruned{next(_counter)}", np.ascontiguousarray(values))


def _rm(plan: PruningPlan, t: gs.Tensor | None) -> np.ndarray:
    return np.zeros(0, np.int64) if t is None else plan.removed(t.name)


def _axis(plan: PruningPlan, t: gs.Tensor) -> int | None:
    return plan.analysis.slots.axis.get(t.name)


def _slice_bias(n: gs.Node, rm_out: np.ndarray) -> None:
    """A conv's optional bias (input 2) loses the removed output channels."""
    if len(n.inputs) > 2 and isinstance(n.inputs[2], gs.Constant) and rm_out.size:
        _set_const(n, 2, np.delete(np.asarray(n.inputs[2].values), rm_out, 0))


def _grouped_weight(w: np.ndarray, group: int, rm_out: np.ndarray, rm_in: np.ndarray,
                    cin: int, name: str) -> tuple[np.ndarray, int]:
    """Slice an out-major grouped weight [Cout, Cin/g, ...]; whole groups may go."""
    cout, cin_g = w.shape[0], w.shape[1]
    cout_g = cout // group
    out_gone = np.zeros(cout, bool)
    out_gone[rm_out] = True
    in_gone = np.zeros(cin, bool)
    in_gone[rm_in] = True
    out_gone = out_gone.reshape(group, cout_g)
    in_gone = in_gone.reshape(group, cin_g)
    dead = out_gone.all(1) & in_gone.all(1)
    live = np.flatnonzero(~dead)
    if live.size == 0:
        raise RewriteError(f"{name}: every group of the convolution would be removed")
    in_pattern = in_gone[live]
    if not (in_pattern == in_pattern[0]).all() or len(set(out_gone[live].sum(1).tolist())) != 1:
        raise RewriteError(f"{name}: plan removes different channels from different conv groups")
    w = w.reshape(group, cout_g, cin_g, *w.shape[2:])[live]
    keep_out = ~out_gone[live]
    w = np.stack([w[i][keep_out[i]] for i in range(live.size)])
    w = w[:, :, ~in_pattern[0]]
    return w.reshape(-1, *w.shape[2:]), int(live.size)


@_rewrites("Conv")
def _conv(n: gs.Node, plan: PruningPlan) -> None:
    rm_out, rm_in = _rm(plan, n.outputs[0]), _rm(plan, n.inputs[0])
    if rm_out.size == 0 and rm_in.size == 0:
        return
    w = np.asarray(n.inputs[1].values)
    group = int(n.attrs.get("group", 1))
    cin = w.shape[1] * group
    if group == 1:
        w = np.delete(np.delete(w, rm_out, 0), rm_in, 1)
    else:
        w, group = _grouped_weight(w, group, rm_out, rm_in, cin, n.name)
        n.attrs["group"] = group
    _set_const(n, 1, w)
    _slice_bias(n, rm_out)


@_rewrites("ConvTranspose")
def _conv_t(n: gs.Node, plan: PruningPlan) -> None:
    rm_out, rm_in = _rm(plan, n.outputs[0]), _rm(plan, n.inputs[0])
    if rm_out.size == 0 and rm_in.size == 0:
        return
    w = np.asarray(n.inputs[1].values)  # [Cin, Cout/g, ...]
    group = int(n.attrs.get("group", 1))
    cin, cout_g = w.shape[0], w.shape[1]
    cin_g = cin // group
    out_major = w.reshape(group, cin_g, cout_g, *w.shape[2:]).swapaxes(1, 2).reshape(group * cout_g, cin_g, *w.shape[2:])
    new, g2 = _grouped_weight(out_major, group, rm_out, rm_in, cin, n.name)
    co_g, ci_g = new.shape[0] // g2, new.shape[1]
    w = new.reshape(g2, co_g, ci_g, *new.shape[2:]).swapaxes(1, 2).reshape(g2 * ci_g, co_g, *new.shape[2:])
    n.attrs["group"] = g2
    _set_const(n, 1, w)
    _slice_bias(n, rm_out)


@_rewrites("Gemm")
def _gemm(n: gs.Node, plan: PruningPlan) -> None:
    rm_out, rm_in = _rm(plan, n.outputs[0]), _rm(plan, n.inputs[0])
    if rm_out.size == 0 and rm_in.size == 0:
        return
    w = np.asarray(n.inputs[1].values)
    if int(n.attrs.get("transB", 0)):
        w = np.delete(np.delete(w, rm_out, 0), rm_in, 1)
    else:
        w = np.delete(np.delete(w, rm_in, 0), rm_out, 1)
    _set_const(n, 1, w)
    if len(n.inputs) > 2 and isinstance(n.inputs[2], gs.Constant) and rm_out.size:
        c = np.asarray(n.inputs[2].values)
        if c.ndim >= 1 and c.shape[-1] > 1:
            _set_const(n, 2, np.delete(c, rm_out, c.ndim - 1))


@_rewrites("MatMul")
def _matmul(n: gs.Node, plan: PruningPlan) -> None:
    if not isinstance(n.inputs[1], gs.Constant):
        return
    rm_out, rm_in = _rm(plan, n.outputs[0]), _rm(plan, n.inputs[0])
    if rm_out.size or rm_in.size:
        w = np.asarray(n.inputs[1].values)
        _set_const(n, 1, np.delete(np.delete(w, rm_in, 0), rm_out, 1))


@_rewrites("BatchNormalization", "InstanceNormalization")
def _bn(n: gs.Node, plan: PruningPlan) -> None:
    rm = _rm(plan, n.inputs[0])
    if rm.size:
        for i in range(1, len(n.inputs)):
            _set_const(n, i, np.delete(np.asarray(n.inputs[i].values), rm, 0))


def _slice_broadcast_constants(n: gs.Node, plan: PruningPlan) -> None:
    """Constants broadcast against the output: slice them where they span the channel axis."""
    y = n.outputs[0]
    rm, axis = _rm(plan, y), _axis(plan, y)
    if rm.size == 0 or axis is None:
        return
    rank = len(y.shape)
    for i, t in enumerate(n.inputs):
        if isinstance(t, gs.Constant):
            v = np.asarray(t.values)
            a = axis - (rank - v.ndim)
            if a >= 0 and v.shape[a] > 1:
                _set_const(n, i, np.delete(v, rm, a))


for _op in ("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Where", "PRelu", "Equal",
            "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "And", "Or", "Xor", "Mod", "Concat"):
    _REWRITERS[_op] = _slice_broadcast_constants


@_rewrites("Reshape")
def _reshape(n: gs.Node, plan: PruningPlan) -> None:
    y = n.outputs[0]
    rm, axis = _rm(plan, y), _axis(plan, y)
    if rm.size == 0 or axis is None:
        return
    shape = np.asarray(n.inputs[1].values).copy()
    if shape[axis] != -1:
        shape[axis] = plan.analysis.slots.size[y.name] - rm.size
    if int(n.attrs.get("allowzero", 0)) == 0:
        for i, d in enumerate(shape.tolist()):
            if d == 0 and i != axis:
                shape[i] = y.shape[i]
    _set_const(n, 1, shape)


@_rewrites("Split")
def _split(n: gs.Node, plan: PruningPlan) -> None:
    x = n.inputs[0]
    axis = int(n.attrs.get("axis", 0))
    axis = axis + len(x.shape) if axis < 0 else axis
    if _axis(plan, x) != axis or _rm(plan, x).size == 0:
        return
    sizes = np.array([int(y.shape[axis]) - _rm(plan, y).size for y in n.outputs], dtype=np.int64)
    n.attrs.pop("num_outputs", None)
    if "split" in n.attrs:
        n.attrs["split"] = sizes.tolist()
    elif len(n.inputs) > 1 and n.inputs[1] is not None and n.inputs[1].name:
        _set_const(n, 1, sizes)
    else:
        n.inputs.append(gs.Constant(f"{n.name}__split{next(_counter)}", sizes))


@_rewrites("Slice")
def _slice(n: gs.Node, plan: PruningPlan) -> None:
    x = n.inputs[0]
    a = _axis(plan, x)
    rm = _rm(plan, x)
    if a is None or rm.size == 0:
        return
    ranges = plan.analysis.graph.op(n.name).attrs["ranges"]
    if a not in ranges:
        return
    start, stop, _ = ranges[a]
    rank = len(x.shape)
    axes = (np.asarray(n.inputs[3].values).tolist() if len(n.inputs) > 3 and n.inputs[3].name
            else list(range(len(np.asarray(n.inputs[1].values)))))
    pos = [i for i, ax in enumerate(axes) if (ax + rank if ax < 0 else ax) == a][0]
    starts, ends = np.asarray(n.inputs[1].values).copy(), np.asarray(n.inputs[2].values).copy()
    starts[pos] = start - int(np.sum(rm < start))
    ends[pos] = stop - int(np.sum(rm < stop))
    _set_const(n, 1, starts)
    _set_const(n, 2, ends)


def rewrite_onnx_graph(graph: gs.Graph, plan: PruningPlan) -> gs.Graph:
    """Rewrite ``graph`` in place to remove the plan's channels; returns the same graph."""
    for n in graph.nodes:
        fn = _REWRITERS.get(n.op)
        if fn is not None:
            fn(n, plan)
    keep = {t.name for t in graph.inputs} | {t.name for t in graph.outputs}
    for t in graph.tensors().values():
        if isinstance(t, gs.Variable) and t.name not in keep:
            t.shape = None
    graph.cleanup().toposort()
    return graph


def check_channel_counts(model: onnx.ModelProto, plan: PruningPlan) -> None:
    """Every tracked tensor must have exactly its original channels minus the removed ones."""
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
              for vi in list(model.graph.value_info) + list(model.graph.output) + list(model.graph.input)}
    slots = plan.analysis.slots
    for t, entry in plan.removed_channels.items():
        shape = shapes.get(t)
        if shape is None:
            continue
        expected = slots.size[t] - len(entry["indices"])
        if shape[entry["axis"]] != expected:
            raise RewriteError(f"tensor {t!r}: {shape[entry['axis']]} channels after the rewrite, "
                               f"the plan expects {expected}")
