"""ONNX (onnx-graphsurgeon graph) -> ChannelGraph.

Each ONNX operator is mapped to a channel-semantics kind with normalised attributes. An
operator not listed here, or used in a form the mapping does not cover, becomes a barrier
with the reason stated.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import onnx_graphsurgeon as gs

from hwprune_fx.ir import ChannelGraph, Kind, OpNode, TensorInfo

__all__ = ["onnx_to_channel_graph", "UNARY_OPS", "ELEMENTWISE_OPS"]

UNARY_OPS = frozenset({
    "Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu", "Celu",
    "Softplus", "Softsign", "Gelu", "Erf", "Exp", "Log", "Abs", "Neg", "Sqrt", "Reciprocal",
    "Floor", "Ceil", "Round", "Sign", "Clip", "Dropout", "Identity", "Cast", "Mish", "Sin", "Cos",
    "ThresholdedRelu", "MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool",
    "GlobalLpPool", "Resize", "Upsample", "Pad", "Swish", "Not", "IsNaN", "IsInf",
})
ELEMENTWISE_OPS = frozenset({
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Where", "PRelu", "Equal",
    "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "And", "Or", "Xor", "Mod",
})
_POOLS = frozenset({"MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"})
REDUCE_OPS = {
    "ReduceMean": False, "ReduceMax": False, "ReduceMin": False, "ReduceProd": False,
    "ReduceLogSumExp": False, "ReduceSum": True, "ReduceL1": True, "ReduceL2": False,
    "ReduceSumSquare": True, "ReduceLogSum": False,
}


def _const(t: gs.Tensor) -> np.ndarray | None:
    return np.asarray(t.values) if isinstance(t, gs.Constant) else None


def _shape(t: gs.Tensor) -> tuple[int, ...] | None:
    if isinstance(t, gs.Constant):
        return tuple(int(d) for d in t.values.shape)
    if t.shape is None or any(not isinstance(d, (int, np.integer)) or d < 0 for d in t.shape):
        return None
    return tuple(int(d) for d in t.shape)


Mapper = Callable[[gs.Node], tuple[Kind, dict[str, Any], str]]
_MAPPERS: dict[str, Mapper] = {}


def _maps(*ops: str) -> Callable[[Mapper], Mapper]:
    def deco(fn: Mapper) -> Mapper:
        for o in ops:
            _MAPPERS[o] = fn
        return fn
    return deco


def _barrier(reason: str) -> tuple[Kind, dict[str, Any], str]:
    return Kind.BARRIER, {}, reason


@_maps("Conv", "ConvTranspose")
def _conv(n: gs.Node):
    w = _const(n.inputs[1])
    if w is None:
        return _barrier(f"{n.name}: convolution weight is not a constant")
    if len(n.inputs) > 2 and n.inputs[2] is not None and _const(n.inputs[2]) is None and n.inputs[2].name:
        return _barrier(f"{n.name}: convolution bias is not a constant")
    if n.op == "ConvTranspose" and ("output_shape" in n.attrs):
        return _barrier(f"{n.name}: ConvTranspose with output_shape")
    group = int(n.attrs.get("group", 1))
    if n.op == "Conv":
        out_major = w
        kind = Kind.CONV
    else:
        cin, cout_g = w.shape[0], w.shape[1]
        cin_g = cin // group
        out_major = w.reshape(group, cin_g, cout_g, *w.shape[2:]).swapaxes(1, 2).reshape(group * cout_g, cin_g, *w.shape[2:])
        kind = Kind.CONV_TRANSPOSE
    return kind, {"group": group, "weight": out_major}, ""


@_maps("Gemm")
def _gemm(n: gs.Node):
    w = _const(n.inputs[1])
    if int(n.attrs.get("transA", 0)) or w is None or _const(n.inputs[0]) is not None:
        return _barrier(f"{n.name}: Gemm with transA or a non-constant weight")
    alpha = float(n.attrs.get("alpha", 1.0))
    w = w * alpha if alpha != 1.0 else w
    kind_w = w if int(n.attrs.get("transB", 0)) else w.T  # [M, K]
    return Kind.LINEAR, {"weight": kind_w}, ""


@_maps("MatMul")
def _matmul(n: gs.Node):
    a, b = _const(n.inputs[0]), _const(n.inputs[1])
    if a is None and b is not None and b.ndim == 2:
        return Kind.LINEAR, {"weight": b.T}, ""
    if a is None and b is None:
        ra, rb = _shape(n.inputs[0]), _shape(n.inputs[1])
        if ra is None or rb is None or len(ra) < 2 or len(rb) < 2:
            return _barrier(f"{n.name}: MatMul of vectors")
        return Kind.MATMUL, {}, ""
    return _barrier(f"{n.name}: MatMul with a constant left operand or a batched constant")


@_maps("BatchNormalization", "InstanceNormalization")
def _bn(n: gs.Node):
    if any(_const(t) is None for t in n.inputs[1:]):
        return _barrier(f"{n.name}: normalisation parameters are not constants")
    return Kind.CHANNELWISE, {"axis": 1, "scale": _const(n.inputs[1])}, ""


@_maps(*UNARY_OPS)
def _unary(n: gs.Node):
    if any(_const(t) is None for t in n.inputs[1:] if t is not None and t.name):
        return _barrier(f"{n.name}: {n.op} with a non-constant parameter input")
    if n.op == "Resize" and len(n.inputs) > 3 and n.inputs[3] is not None and n.inputs[3].name:
        return _barrier(f"{n.name}: Resize with explicit sizes")
    return Kind.UNARY, ({"spatial_from": 2} if n.op in _POOLS else {}), ""


@_maps(*ELEMENTWISE_OPS)
def _eltwise(n: gs.Node):
    return Kind.ELEMENTWISE, {}, ""


@_maps(*REDUCE_OPS)
def _reduce(n: gs.Node):
    axes = n.attrs.get("axes")
    if axes is None and len(n.inputs) > 1 and n.inputs[1] is not None and n.inputs[1].name:
        c = _const(n.inputs[1])
        if c is None:
            return _barrier(f"{n.name}: reduction axes are not constant")
        axes = c.reshape(-1).tolist()
    if axes is not None and len(axes) == 0 and int(n.attrs.get("noop_with_empty_axes", 0)):
        return Kind.UNARY, {}, ""
    return Kind.REDUCE, {"axes": None if axes is None or len(axes) == 0 else list(axes),
                         "keepdims": bool(n.attrs.get("keepdims", 1)),
                         "channel_safe": REDUCE_OPS[n.op]}, ""


@_maps("Concat")
def _concat(n: gs.Node):
    return Kind.CONCAT, {"axis": int(n.attrs["axis"])}, ""


@_maps("Split")
def _split(n: gs.Node):
    return Kind.SPLIT, {"axis": int(n.attrs.get("axis", 0))}, ""


@_maps("Slice")
def _slice(n: gs.Node):
    shape = _shape(n.inputs[0])
    vals = [_const(t) if t is not None and t.name else None for t in n.inputs[1:]]
    while len(vals) < 4:
        vals.append(None)
    starts, ends, axes, steps = vals
    if starts is None or ends is None or (len(n.inputs) > 3 and n.inputs[3].name and axes is None) \
            or (len(n.inputs) > 4 and n.inputs[4].name and steps is None):
        return _barrier(f"{n.name}: Slice with non-constant bounds")
    if shape is None:
        return _barrier(f"{n.name}: Slice of a tensor with unknown shape")
    rank = len(shape)
    axes = list(range(len(starts))) if axes is None else [int(a) + rank if a < 0 else int(a) for a in axes]
    steps = [1] * len(starts) if steps is None else steps.tolist()
    ranges = {}
    for a, st, en, sp in zip(axes, starts.tolist(), ends.tolist(), steps):
        rs = range(shape[a])[slice(int(st), int(en), int(sp))]
        ranges[a] = (rs.start, rs.stop, rs.step)
    return Kind.SLICE, {"ranges": ranges}, ""


@_maps("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def _reshape(n: gs.Node):
    if n.op == "Reshape" and _const(n.inputs[1]) is None:
        return _barrier(f"{n.name}: Reshape to a shape computed at run time")
    return Kind.RESHAPE, {}, ""


@_maps("Transpose")
def _transpose(n: gs.Node):
    perm = n.attrs.get("perm")
    return Kind.TRANSPOSE, {"perm": list(perm) if perm is not None else None}, ""


@_maps("Gather")
def _gather(n: gs.Node):
    idx = _const(n.inputs[1])
    if idx is None:
        return _barrier(f"{n.name}: Gather with run-time indices")
    return Kind.GATHER, {"axis": int(n.attrs.get("axis", 0)), "indices_rank": idx.ndim}, ""


@_maps("LayerNormalization", "Softmax", "LogSoftmax", "Hardmax")
def _norm_over(n: gs.Node):
    shape = _shape(n.inputs[0])
    if shape is None:
        return _barrier(f"{n.name}: unknown input shape")
    rank = len(shape)
    axis = int(n.attrs.get("axis", -1))
    axis = axis + rank if axis < 0 else axis
    axes = list(range(axis, rank)) if n.op == "LayerNormalization" else [axis]
    return Kind.NORM_OVER_AXES, {"axes": axes}, ""


@_maps("LRN", "GroupNormalization", "MeanVarianceNormalization")
def _mix_channels(n: gs.Node):
    return Kind.NORM_OVER_AXES, {"axes": [1]}, ""


def onnx_to_channel_graph(graph: gs.Graph) -> ChannelGraph:
    """Build the ChannelGraph of a prepared (shape-inferred, constant-folded) graph."""
    cg = ChannelGraph(graph.name or "onnx")
    for name, t in graph.tensors().items():
        if not name:
            continue
        const = isinstance(t, gs.Constant)
        value = None
        if const and t.values.size <= 64:
            value = np.asarray(t.values)
        cg.add_tensor(TensorInfo(name=name, shape=_shape(t), is_constant=const, value=value))
    cg.inputs = [t.name for t in graph.inputs]
    cg.outputs = [t.name for t in graph.outputs]
    for i, n in enumerate(graph.nodes):
        name = n.name or f"{n.op}_{i}"
        n.name = name
        mapper = _MAPPERS.get(n.op)
        if n.domain not in ("", "ai.onnx", None) or mapper is None:
            kind, attrs, reason = _barrier(f"{name}: operator {n.op} is not understood")
        else:
            kind, attrs, reason = mapper(n)
        cg.add_op(OpNode(
            name=name, op_type=n.op, kind=kind,
            inputs=[t.name if t is not None else "" for t in n.inputs],
            outputs=[t.name if t is not None else "" for t in n.outputs],
            attrs=attrs, reason=reason,
        ))
    return cg.finish()
