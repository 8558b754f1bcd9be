"""Apply a PruningPlan to a torch.fx GraphModule: smaller modules, sliced constants, fixed ints.

    Conv/ConvTranspose(W[Cout, Cin/g]) -> W[kept out, kept in/g'], groups=g' (whole groups may go)
    Linear(W[M, K])                    -> W[kept M, kept K]
    BatchNorm/InstanceNorm/PReLU       -> parameters and running statistics sliced
    get_attr constant * x              -> constant sliced where it spans the output's channels
    x.view(..., C, ...)                -> x.view(..., C - removed, ...)   (-1 and run-time ints kept)
    x.chunk(n) / x.split(s)            -> x.split([kept sizes])
    x[:, a:b]                          -> x[:, a':b']

The plan comes from the ChannelGraph of the same GraphModule (fx node names are tensor
names), so every coupled tensor loses the same channels. New parameters are fresh leaf
``nn.Parameter``s that keep their ``requires_grad`` flag, so the pruned module trains.
A module called from several places with different removals is cloned per call site.
"""
from __future__ import annotations

import copy
from typing import Any, Callable

import numpy as np
import torch
from torch import fx, nn

from hwprune_fx.errors import RewriteError
from hwprune_fx.frontends.fx_ops import index_items
from hwprune_fx.ir import Kind, OpNode
from hwprune_fx.plan import PruningPlan

__all__ = ["rewrite_graph_module"]

NodeRewriter = Callable[[fx.GraphModule, fx.Node, OpNode, PruningPlan], None]
_BY_KIND: dict[Kind, NodeRewriter] = {}


def _rewrites(*kinds: Kind) -> Callable[[NodeRewriter], NodeRewriter]:
    def deco(fn: NodeRewriter) -> NodeRewriter:
        for k in kinds:
            _BY_KIND[k] = fn
        return fn
    return deco


def rewrite_graph_module(gm: fx.GraphModule, plan: PruningPlan) -> None:
    """Remove the plan's channels from ``gm`` in place, then recompile it."""
    cg = plan.analysis.graph
    _unshare_modules(gm, plan)
    done: set[str] = set()
    for node in list(gm.graph.nodes):
        if node.name not in cg.nx:
            continue
        op = cg.op(node.name)
        if node.op == "call_module":
            if node.target in done:
                continue
            done.add(str(node.target))
        fn = _BY_KIND.get(op.kind)
        if fn is not None:
            fn(gm, node, op, plan)
    _slice_constants(gm, plan)
    gm.graph.lint()
    gm.recompile()


# --- helpers ---------------------------------------------------------------------------------
def _keep(size: int, removed: np.ndarray) -> np.ndarray:
    mask = np.ones(size, bool)
    mask[removed] = False
    return np.flatnonzero(mask)


def _take(t: torch.Tensor, dim: int, idx: np.ndarray) -> torch.Tensor:
    return t.detach().index_select(dim, torch.as_tensor(idx, dtype=torch.long, device=t.device)).clone()


def _param(old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """A fresh leaf of the same kind as ``old`` (Parameter keeps its requires_grad)."""
    return nn.Parameter(new, requires_grad=old.requires_grad) if isinstance(old, nn.Parameter) else new


def _set_tensor(mod: nn.Module, name: str, new: torch.Tensor) -> None:
    old = getattr(mod, name)
    setattr(mod, name, _param(old, new))


def _io(op: OpNode, plan: PruningPlan) -> tuple[np.ndarray, np.ndarray]:
    """Removed channels of the operator's main input and output (empty where it has none)."""
    return (plan.removed(op.inputs[0]) if op.inputs else np.zeros(0, np.int64),
            plan.removed(op.outputs[0]) if op.outputs else np.zeros(0, np.int64))


def _unshare_modules(gm: fx.GraphModule, plan: PruningPlan) -> None:
    """A module called from several nodes with different removals gets one copy per removal."""
    cg = plan.analysis.graph
    by_target: dict[str, dict[tuple, list[fx.Node]]] = {}
    for node in gm.graph.nodes:
        if node.op != "call_module" or node.name not in cg.nx:
            continue
        rm_in, rm_out = _io(cg.op(node.name), plan)
        sig = (tuple(rm_in.tolist()), tuple(rm_out.tolist()))
        by_target.setdefault(str(node.target), {}).setdefault(sig, []).append(node)
    for target, sigs in by_target.items():
        for k, nodes in enumerate(list(sigs.values())[1:], start=1):
            new_name = f"{target.replace('.', '_')}_pruned_copy{k}"
            gm.add_submodule(new_name, copy.deepcopy(gm.get_submodule(target)))
            for node in nodes:
                node.target = new_name


# --- modules ---------------------------------------------------------------------------------
def _group_keep(cout: int, cin: int, groups: int, rm_out: np.ndarray, rm_in: np.ndarray,
                name: str) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Per live group: (group, kept local outputs, kept local inputs); equal counts required."""
    cout_g, cin_g = cout // groups, cin // groups
    out_keep = np.ones(cout, bool)
    out_keep[rm_out] = False
    in_keep = np.ones(cin, bool)
    in_keep[rm_in] = False
    out_keep, in_keep = out_keep.reshape(groups, cout_g), in_keep.reshape(groups, cin_g)
    live = np.flatnonzero(out_keep.any(1) | in_keep.any(1))
    if live.size == 0:
        raise RewriteError(f"{name}: every group of the convolution would be removed")
    n_out, n_in = set(out_keep[live].sum(1).tolist()), set(in_keep[live].sum(1).tolist())
    if len(n_out) != 1 or len(n_in) != 1 or 0 in n_out or 0 in n_in:
        raise RewriteError(f"{name}: plan removes different numbers of channels from different conv groups")
    return [(int(g), np.flatnonzero(out_keep[g]), np.flatnonzero(in_keep[g])) for g in live]


def _conv(gm: fx.GraphModule, node: fx.Node, op: OpNode, plan: PruningPlan) -> None:
    mod = gm.get_submodule(str(node.target))
    rm_in, rm_out = _io(op, plan)
    if rm_in.size == 0 and rm_out.size == 0:
        return
    g = int(mod.groups)
    transposed = isinstance(mod, nn.modules.conv._ConvTransposeNd)
    cin, cout = int(mod.in_channels), int(mod.out_channels)
    cin_g, cout_g = cin // g, cout // g
    live = _group_keep(cout, cin, g, rm_out, rm_in, node.name)
    w = mod.weight
    if transposed:  # [Cin, Cout/g, *k]: rows are global inputs, columns local outputs
        blocks = [_take(_take(w, 0, gi * cin_g + ki), 1, ko) for gi, ko, ki in live]
    else:  # [Cout, Cin/g, *k]
        blocks = [_take(_take(w, 0, gi * cout_g + ko), 1, ki) for gi, ko, ki in live]
    out_idx = np.concatenate([gi * cout_g + ko for gi, ko, _ in live])
    _set_tensor(mod, "weight", torch.cat(blocks, 0))
    if mod.bias is not None:
        _set_tensor(mod, "bias", _take(mod.bias, 0, out_idx))
    mod.groups = len(live)
    mod.in_channels = len(live) * live[0][2].size
    mod.out_channels = out_idx.size


def _linear(gm: fx.GraphModule, node: fx.Node, op: OpNode, plan: PruningPlan) -> None:
    mod = gm.get_submodule(str(node.target))
    rm_in, rm_out = _io(op, plan)
    if rm_in.size == 0 and rm_out.size == 0:
        return
    keep_out, keep_in = _keep(mod.out_features, rm_out), _keep(mod.in_features, rm_in)
    _set_tensor(mod, "weight", _take(_take(mod.weight, 0, keep_out), 1, keep_in))
    if mod.bias is not None:
        _set_tensor(mod, "bias", _take(mod.bias, 0, keep_out))
    mod.in_features, mod.out_features = int(keep_in.size), int(keep_out.size)


def _channelwise(gm: fx.GraphModule, node: fx.Node, op: OpNode, plan: PruningPlan) -> None:
    mod = gm.get_submodule(str(node.target))
    rm = plan.removed(op.inputs[0])
    if rm.size == 0:
        return
    if isinstance(mod, nn.PReLU):
        keep = _keep(mod.num_parameters, rm)
        _set_tensor(mod, "weight", _take(mod.weight, 0, keep))
        mod.num_parameters = int(keep.size)
        return
    if not isinstance(mod, (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)):
        raise RewriteError(f"{node.name}: no rewrite for per-channel module {type(mod).__name__}")
    keep = _keep(mod.num_features, rm)
    for name in ("weight", "bias", "running_mean", "running_var"):
        if getattr(mod, name, None) is not None:
            _set_tensor(mod, name, _take(getattr(mod, name), 0, keep))
    mod.num_features = int(keep.size)


_MODULE_REWRITERS: dict[Kind, NodeRewriter] = {Kind.CONV: _conv, Kind.CONV_TRANSPOSE: _conv,
                                               Kind.LINEAR: _linear, Kind.CHANNELWISE: _channelwise}


@_rewrites(Kind.CONV, Kind.CONV_TRANSPOSE, Kind.LINEAR, Kind.CHANNELWISE)
def _module(gm: fx.GraphModule, node: fx.Node, op: OpNode, plan: PruningPlan) -> None:
    if node.op != "call_module":
        raise RewriteError(f"{node.name}: {op.kind.value} that is not a module call")
    _MODULE_REWRITERS[op.kind](gm, node, op, plan)


@_rewrites(Kind.NORM_OVER_AXES)
def _norm_over_axes(gm: fx.GraphModule, node: fx.Node, op: OpNode, plan: PruningPlan) -> None:
    """Only channels off the normalised axes may go; its parameters live on those axes."""
    x = op.inputs[0]
    if plan.removed(x).size and plan.analysis.slots.axis[x] in op.attrs.get("axes", ()):
        raise RewriteError(f"{node.name}: plan removes channels on a normalised axis")


# --- integer arguments -----------------------------------------------------------------------
def _replace_arg(node: fx.Node, pos: int, kw: str, value: Any) -> None:
    if kw in node.kwargs:
        node.update_kwarg(kw, value)
    else:
        node.update_arg(pos, value)


@_rewrites(Kind.RESHAPE)
def _reshape(gm: fx.GraphModule, node: fx.Node, op: OpNode, plan: PruningPlan) -> None:
    """view/reshape spell the channel count out; flatten/squeeze/unsqueeze do not."""
    y = op.outputs[0]
    rm = plan.removed(y)
    spelled = (node.op == "call_method" and node.target in ("view", "reshape")) or node.target is torch.reshape
    if rm.size == 0 or not spelled:
        return
    axis, new = plan.analysis.slots.axis[y], plan.analysis.slots.size[y] - rm.size
    kw = "shape" if node.target is torch.reshape else "size"
    seq = kw in node.kwargs or (len(node.args) == 2 and isinstance(node.args[1], (list, tuple, torch.Size)))
    shape = list(node.kwargs[kw] if kw in node.kwargs else node.args[1] if seq else node.args[1:])
    if not isinstance(shape[axis], int) or shape[axis] == -1:
        return  # inferred or computed at run time from the (already smaller) input
    shape[axis] = new
    if seq:
        _replace_arg(node, 1, kw, tuple(shape))
    else:
        node.args = (node.args[0], *shape)


@_rewrites(Kind.SPLIT)
def _split(gm: fx.GraphModule, node: fx.Node, op: OpNode, plan: PruningPlan) -> None:
    """Piece sizes after pruning; ``chunk`` becomes ``split`` because pieces may now differ."""
    cg = plan.analysis.graph
    x = op.inputs[0]
    axis = int(op.attrs["axis"])
    axis = axis + len(cg.shape(x)) if axis < 0 else axis
    if plan.analysis.slots.axis.get(x) != axis or plan.removed(x).size == 0:
        return
    sizes = [int(cg.shape(p)[axis]) - int(plan.removed(p).size) for p in op.outputs]
    source = node.args[0] if node.args else node.kwargs.get("input", node.kwargs.get("tensor"))
    node.target = "split" if node.op == "call_method" else torch.split
    node.args, node.kwargs = (source, sizes), {"dim": axis}


@_rewrites(Kind.SLICE)
def _slice(gm: fx.GraphModule, node: fx.Node, op: OpNode, plan: PruningPlan) -> None:
    """A slice of the channel axis moves its bounds down by the removed channels before them."""
    x = op.inputs[0]
    rm = plan.removed(x)
    a = plan.analysis.slots.axis.get(x)
    ranges = op.attrs["ranges"]
    if rm.size == 0 or a not in ranges:
        return
    start, stop, step = ranges[a]
    index = node.args[1]
    parsed = index_items(index, len(plan.analysis.graph.shape(x)))
    pos = next(p for p, ax, _ in parsed if ax == a)
    new = slice(start - int(np.sum(rm < start)), stop - int(np.sum(rm < stop)), step)
    if isinstance(index, tuple):
        index = tuple(new if i == pos else it for i, it in enumerate(index))
    else:
        index = new
    node.update_arg(1, index)


# --- constants -------------------------------------------------------------------------------
def _owner(gm: fx.GraphModule, target: str) -> tuple[nn.Module, str]:
    prefix, _, name = target.rpartition(".")
    return (gm.get_submodule(prefix) if prefix else gm), name


def _constant_cut(plan: PruningPlan, user: fx.Node, value: torch.Tensor) -> tuple[int, tuple[int, ...]] | None:
    """(axis of ``value``, removed indices) where ``value`` spans its user's output channels."""
    cg = plan.analysis.graph
    if user.name not in cg.nx or cg.op(user.name).kind not in (Kind.ELEMENTWISE, Kind.CONCAT):
        return None
    y = cg.op(user.name).outputs[0]
    rm = plan.removed(y)
    if rm.size == 0:
        return None
    a = plan.analysis.slots.axis[y] - (len(cg.shape(y)) - value.dim())
    if a < 0 or value.shape[a] <= 1:
        return None
    return a, tuple(rm.tolist())


def _slice_constants(gm: fx.GraphModule, plan: PruningPlan) -> None:
    """Slice get_attr tensors like the ONNX rewrite slices broadcast constants.

    A tensor whose every use wants the same cut is replaced under its own name (state_dict
    keys stay); otherwise each distinct cut gets a new attribute and the original is kept
    for the uses that want it whole (and dropped if none does).
    """
    uses: dict[str, list[tuple[fx.Node, fx.Node, Any]]] = {}
    for node in gm.graph.nodes:
        if node.op != "get_attr":
            continue
        owner, name = _owner(gm, str(node.target))
        value = getattr(owner, name)
        if not isinstance(value, torch.Tensor):
            continue
        for user in list(node.users):
            uses.setdefault(str(node.target), []).append((node, user, _constant_cut(plan, user, value)))
    for target, entries in uses.items():
        cuts = {cut for _, _, cut in entries}
        if cuts == {None}:
            continue
        owner, name = _owner(gm, target)
        value = getattr(owner, name)
        if len(cuts) == 1:
            (a, rm), = cuts
            _set_tensor(owner, name, _take(value, a, _keep(value.shape[a], np.asarray(rm, np.int64))))
            continue
        for k, cut in enumerate(sorted(c for c in cuts if c is not None)):
            a, rm = cut
            new_name = f"{name}_pruned{k}"
            new = _param(value, _take(value, a, _keep(value.shape[a], np.asarray(rm, np.int64))))
            if isinstance(new, nn.Parameter):
                owner.register_parameter(new_name, new)
            elif name in dict(owner.named_buffers(recurse=False)):
                owner.register_buffer(new_name, new)
            else:
                setattr(owner, new_name, new)
            new_target = f"{target.rpartition('.')[0]}.{new_name}".lstrip(".")
            for ga, user, c in entries:
                if c == cut:
                    with gm.graph.inserting_before(user):
                        user.replace_input_with(ga, gm.graph.get_attr(new_target))
        for ga in {ga for ga, _, _ in entries}:
            if not ga.users:
                gm.graph.erase_node(ga)
        if None not in cuts:
            delattr(owner, name)
