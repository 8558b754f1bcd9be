"""torch.fx function/method node -> channel-semantics kind (modules: :mod:`.fx_modules`).

It mirrors :mod:`hwprune_fx.frontends.onnx_frontend`: every ``call_function`` and
``call_method`` node that produces a tensor is mapped onto one
:class:`~hwprune_fx.ir.Kind` with the same normalised attributes the ONNX frontend
writes. A node that is not listed here, or used in a form the mapping does not cover
(run-time split sizes, tensor-valued indices...), becomes a barrier with the reason
stated: the tool never guesses.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.fx import Node
from torch.fx.passes.shape_prop import TensorMetadata

from hwprune_fx.ir import Kind

__all__ = ["Mapped", "barrier", "map_call", "meta_shape", "index_items", "is_full_slice", "arg", "norm_axis"]


@dataclass
class Mapped:
    """A node's kind and attributes; ``params`` are module tensors appended as constant inputs."""

    kind: Kind
    attrs: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    params: list[tuple[str, torch.Tensor]] = field(default_factory=list)


def barrier(node: Node, why: str) -> Mapped:
    return Mapped(Kind.BARRIER, reason=f"{node.name}: {why}")


def meta_shape(node: Any) -> tuple[int, ...] | None:
    """Static shape recorded by ShapeProp for a tensor-valued node (None otherwise)."""
    meta = node.meta.get("tensor_meta") if isinstance(node, Node) else None
    return tuple(int(d) for d in meta.shape) if isinstance(meta, TensorMetadata) else None


def arg(node: Node, pos: int, name: str, default: Any = None) -> Any:
    if len(node.args) > pos:
        return node.args[pos]
    return node.kwargs.get(name, default)


def _int_list(value: Any) -> list[int] | None:
    """``value`` as a list of python ints (None if any element is computed at run time)."""
    items = list(value) if isinstance(value, (list, tuple, torch.Size)) else [value]
    return [int(v) for v in items] if all(isinstance(v, int) and not isinstance(v, bool) for v in items) else None


def norm_axis(a: int, rank: int) -> int:
    return a + rank if a < 0 else a


def _varargs(node: Node, kw: str) -> Any:
    """Shape/dims given either as one sequence or as varargs: ``x.view(1, -1)`` / ``x.view((1, -1))``."""
    if kw in node.kwargs:
        return node.kwargs[kw]
    if len(node.args) == 2 and isinstance(node.args[1], (list, tuple, torch.Size)):
        return node.args[1]
    return node.args[1:]


# --- functions and methods (args[0] is the input tensor in both) -------------------------------
Mapper = Callable[[Node], Mapped]


def _unary(node: Node) -> Mapped:
    return Mapped(Kind.UNARY)


def _elementwise(node: Node) -> Mapped:
    return Mapped(Kind.ELEMENTWISE)


def _reshape(node: Node) -> Mapped:
    if (node.op == "call_method" and node.target in ("view", "reshape")) or node.target is torch.reshape:
        shape = _varargs(node, "shape" if node.target is torch.reshape else "size")
        items = list(shape) if isinstance(shape, (list, tuple, torch.Size)) else [shape]
        if not all(isinstance(d, (int, Node)) and not isinstance(d, bool) for d in items):
            return barrier(node, f"{node.target} to a non-integer shape")
    return Mapped(Kind.RESHAPE)


def _transpose(node: Node) -> Mapped:
    x = meta_shape(node.args[0])
    if x is None:
        return barrier(node, "transpose of an unknown shape")
    rank = len(x)
    name = getattr(node.target, "__name__", node.target)
    if name == "permute":
        dims = _int_list(_varargs(node, "dims"))
        perm = None if dims is None else [norm_axis(d, rank) for d in dims]
    elif name == "t":
        perm = list(reversed(range(rank)))
    else:
        d = _int_list([arg(node, 1, "dim0"), arg(node, 2, "dim1")])
        perm = None
        if d is not None:
            perm = list(range(rank))
            a, b = norm_axis(d[0], rank), norm_axis(d[1], rank)
            perm[a], perm[b] = perm[b], perm[a]
    if perm is None or sorted(perm) != list(range(rank)):
        return barrier(node, f"{name} with dims computed at run time")
    return Mapped(Kind.TRANSPOSE, {"perm": perm})


def _reduce(channel_safe: bool) -> Mapper:
    def fn(node: Node) -> Mapped:
        dim = arg(node, 1, "dim")
        keep = arg(node, 2, "keepdim", False)
        axes = None if dim is None else _int_list(dim)
        if (dim is not None and axes is None) or not isinstance(keep, bool):
            return barrier(node, "reduction over axes computed at run time")
        return Mapped(Kind.REDUCE, {"axes": None if axes == [] else axes, "keepdims": keep,
                                    "channel_safe": channel_safe})
    return fn


def _concat(node: Node) -> Mapped:
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", node.kwargs.get("axis", 0))
    if not isinstance(dim, int):
        return barrier(node, "concatenation axis computed at run time")
    return Mapped(Kind.CONCAT, {"axis": dim})


def _split(node: Node) -> Mapped:
    name = getattr(node.target, "__name__", node.target)
    sizes = arg(node, 1, "chunks" if name == "chunk" else "split_size_or_sections",
                 node.kwargs.get("split_size"))
    dim = arg(node, 2, "dim", 0)
    if _int_list(sizes) is None or not isinstance(dim, int):
        return barrier(node, f"{name} with sizes computed at run time")
    return Mapped(Kind.SPLIT, {"axis": dim})


def _norm_over(dim_pos: int, default: int | None) -> Mapper:
    def fn(node: Node) -> Mapped:
        x = meta_shape(node.args[0])
        dim = arg(node, dim_pos, "dim", default)
        if x is None or not isinstance(dim, int):
            return barrier(node, f"{getattr(node.target, '__name__', node.target)} with an implicit dim")
        return Mapped(Kind.NORM_OVER_AXES, {"axes": [norm_axis(dim, len(x))]})
    return fn


def _layer_norm(node: Node) -> Mapped:
    x = meta_shape(node.args[0])
    shape = _int_list(arg(node, 1, "normalized_shape"))
    if x is None or shape is None:
        return barrier(node, "layer_norm with a run-time normalized_shape")
    return Mapped(Kind.NORM_OVER_AXES, {"axes": list(range(len(x) - len(shape), len(x)))})


def _group_norm(node: Node) -> Mapped:
    return Mapped(Kind.NORM_OVER_AXES, {"axes": [1]})


def is_full_slice(item: Any) -> bool:
    return isinstance(item, slice) and item.start is None and item.stop is None and item.step is None


def index_items(index: Any, rank: int) -> list[tuple[int, int, Any]] | None:
    """``(position in the index tuple, tensor axis, item)`` for a basic index of ints and slices.

    ``None`` for anything else (``None``/newaxis, tensors, lists, run-time bounds), which the
    frontend turns into a barrier and the rewrite therefore never sees.
    """
    items = index if isinstance(index, tuple) else (index,)
    if sum(1 for it in items if it is Ellipsis) > 1:
        return None
    out: list[tuple[int, int, Any]] = []
    axis = 0
    for pos, it in enumerate(items):
        if it is Ellipsis:
            axis += rank - (len(items) - 1)
            continue
        if isinstance(it, bool) or not isinstance(it, (int, slice)):
            return None
        if isinstance(it, slice) and not all(v is None or (isinstance(v, int) and not isinstance(v, bool))
                                             for v in (it.start, it.stop, it.step)):
            return None
        out.append((pos, axis, it))
        axis += 1
    return out if axis <= rank else None


def _getitem(node: Node) -> Mapped:
    x = meta_shape(node.args[0])
    parsed = None if x is None else index_items(node.args[1], len(x))
    if parsed is None:
        return barrier(node, "indexing with tensors, None or run-time bounds")
    ints = [(axis, it) for _, axis, it in parsed if isinstance(it, int)]
    if ints:
        if len(ints) == 1 and all(is_full_slice(it) for _, _, it in parsed if isinstance(it, slice)):
            return Mapped(Kind.GATHER, {"axis": ints[0][0], "indices_rank": 0})
        return barrier(node, "indexing that mixes integers with slices or several integers")
    ranges = {}
    for _, axis, it in parsed:
        rs = range(x[axis])[it]
        ranges[axis] = (rs.start, rs.stop, rs.step)
    return Mapped(Kind.SLICE, {"ranges": ranges})


_UNARY_FUNCS = [
    torch.relu, torch.relu_, F.relu, F.relu_, F.relu6, F.silu, F.gelu, F.hardswish, F.hardsigmoid,
    torch.sigmoid, F.sigmoid, torch.tanh, F.tanh, F.leaky_relu, F.elu, F.selu, F.celu, F.mish, F.softplus,
    F.hardtanh, F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout,
    F.interpolate, F.pad, torch.exp, torch.abs, torch.neg, torch.sqrt, torch.clamp, torch.clip, torch.erf,
    operator.neg, operator.pos,
]
_ELEMENTWISE_FUNCS = [
    operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd, operator.isub, operator.imul,
    operator.itruediv, torch.add, torch.sub, torch.mul, torch.div, torch.maximum, torch.minimum, torch.where,
]
_POOL_FUNCS = [
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
    F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d,
    F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
]
_FUNCS: dict[Callable, Mapper] = {f: _unary for f in _UNARY_FUNCS}
_FUNCS.update({f: (lambda node: Mapped(Kind.UNARY, {"spatial_from": 2})) for f in _POOL_FUNCS})
_FUNCS.update({f: _elementwise for f in _ELEMENTWISE_FUNCS})
_FUNCS.update({
    torch.cat: _concat, torch.concat: _concat, torch.concatenate: _concat,
    torch.flatten: _reshape, torch.reshape: _reshape, torch.squeeze: _reshape, torch.unsqueeze: _reshape,
    torch.transpose: _transpose, torch.permute: _transpose, torch.swapaxes: _transpose, torch.t: _transpose,
    torch.chunk: _split, torch.split: _split,
    torch.mean: _reduce(False), torch.sum: _reduce(True), torch.amax: _reduce(False), torch.amin: _reduce(False),
    F.layer_norm: _layer_norm, F.group_norm: _group_norm,
    F.softmax: _norm_over(1, None), F.log_softmax: _norm_over(1, None), torch.softmax: _norm_over(1, None),
    F.normalize: _norm_over(2, 1),
    operator.getitem: _getitem,
})
_METHODS: dict[str, Mapper] = {m: _unary for m in (
    "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "exp", "abs", "neg", "sqrt", "clamp", "clamp_", "clip",
    "contiguous", "clone", "detach", "float", "half", "double", "to", "type", "hardtanh", "hardtanh_")}
_METHODS.update({m: _elementwise for m in ("add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_")})
_METHODS.update({m: _reshape for m in ("view", "reshape", "flatten", "squeeze", "unsqueeze")})
_METHODS.update({m: _transpose for m in ("transpose", "permute", "swapaxes", "t")})
_METHODS.update({"chunk": _split, "split": _split, "mean": _reduce(False), "sum": _reduce(True),
                 "amax": _reduce(False), "amin": _reduce(False), "softmax": _norm_over(1, None),
                 "log_softmax": _norm_over(1, None)})


def map_call(node: Node) -> Mapped:
    """Kind and attributes of one tensor-producing ``call_function`` / ``call_method`` node."""
    if node.op == "call_function":
        fn = _FUNCS.get(node.target)
        name = getattr(node.target, "__name__", str(node.target))
        if fn is None and name == "stochastic_depth" and \
                getattr(node.target, "__module__", "").startswith("torchvision."):
            fn = _unary  # identity in eval mode; matched by name so that the core never imports torchvision
    else:
        fn = _METHODS.get(str(node.target))
        name = f"Tensor.{node.target}"
    if fn is None:
        return barrier(node, f"{name} is not understood")
    return fn(node)
