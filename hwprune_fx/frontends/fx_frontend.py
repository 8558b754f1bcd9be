"""torch.nn.Module -> torch.fx GraphModule -> ChannelGraph; and the fx oracle.

    symbolic_trace(deepcopy(module).eval()) -> ShapeProp(example_inputs) -> ChannelGraph

Names are shared between the two graphs so that a plan computed on the ChannelGraph can
be applied to the GraphModule without a lookup table: a tensor and the operator that
produces it are both called by the fx node's name, graph inputs are the placeholders,
module parameters are constants named by their qualified names (``layer1.0.conv1.weight``)
and the pieces of a tuple-valued node (``chunk``, ``split``) are ``<node>.<i>``. A
``getitem`` that takes a piece out of a tuple is an identity operator.
"""
from __future__ import annotations

import copy
import operator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import fx
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata
from torch.utils._pytree import tree_flatten

from hwprune_fx.errors import UserError
from hwprune_fx.frontends.fx_modules import map_module
from hwprune_fx.frontends.fx_ops import map_call
from hwprune_fx.ir import ChannelGraph, Kind, OpNode, TensorInfo, verify
from hwprune_fx.oracle import relative_error

__all__ = ["TracedModule", "trace_module", "fx_to_channel_graph", "fx_oracle"]

# kinds whose analysis reads exactly one activation and no constant: anything else is a barrier
_SINGLE_INPUT = {Kind.UNARY, Kind.RESHAPE, Kind.TRANSPOSE, Kind.REDUCE, Kind.SLICE, Kind.SPLIT, Kind.GATHER}
_MODULE_KINDS = {Kind.CONV, Kind.CONV_TRANSPOSE, Kind.LINEAR, Kind.CHANNELWISE, Kind.NORM_OVER_AXES}


@dataclass
class TracedModule:
    """A traced, shape-annotated GraphModule (owned: pruning edits it) and its ChannelGraph."""

    module: fx.GraphModule
    channel_graph: ChannelGraph

    def copy_module(self) -> fx.GraphModule:
        """A deep copy of :attr:`module` as it is now; take it before pruning to keep the original."""
        return copy.deepcopy(self.module)


def trace_module(module: torch.nn.Module, example_inputs: tuple) -> TracedModule:
    """Trace an eval-mode copy of ``module`` and build its ChannelGraph at the example's shapes.

    The user's module is never modified. Tracing specialises on eval mode (dropout off, BN on
    running statistics), which is the network the oracle can check.

    Raises:
        UserError: when torch.fx cannot trace the module (data-dependent control flow...) or
            the example inputs do not run through it.
    """
    owned = copy.deepcopy(module).eval()
    try:
        gm = fx.symbolic_trace(owned)
    except Exception as exc:  # noqa: BLE001 - any tracing failure is the model's, reported in one line
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise UserError(f"torch.fx cannot trace {type(module).__name__}: {type(exc).__name__}: {first}") from None
    gm.eval()
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(*example_inputs)
    except Exception as exc:  # noqa: BLE001 - wrong example inputs are the user's to fix
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise UserError(f"the example inputs do not run through {type(module).__name__}: {first}") from None
    cg = fx_to_channel_graph(gm, name=type(module).__name__)
    verify(cg)
    return TracedModule(gm, cg)


def _names(node: Any) -> list[str]:
    """Tensor names a node's value stands for: itself, the pieces of a tuple, or none."""
    if not isinstance(node, fx.Node):
        return []
    meta = node.meta.get("tensor_meta")
    if isinstance(meta, TensorMetadata):
        return [node.name]
    if isinstance(meta, (tuple, list)):
        return [f"{node.name}.{i}" for i, m in enumerate(meta) if isinstance(m, TensorMetadata)]
    return []


def _refs(args: Any) -> list[str]:
    """Tensor names referenced by (nested) node arguments, in order."""
    seen: list[fx.Node] = []
    fx.node.map_arg(args, seen.append)
    return [t for n in seen for t in _names(n)]


def _add_tensors(cg: ChannelGraph, node: fx.Node) -> None:
    meta = node.meta.get("tensor_meta")
    metas = [meta] if isinstance(meta, TensorMetadata) else list(meta or ())
    for name, m in zip(_names(node), [m for m in metas if isinstance(m, TensorMetadata)]):
        cg.add_tensor(TensorInfo(name=name, shape=tuple(int(d) for d in m.shape)))


def _add_constant(cg: ChannelGraph, name: str, value: torch.Tensor) -> None:
    small = value.detach().cpu().float().numpy() if value.numel() <= 64 else None
    cg.add_tensor(TensorInfo(name=name, shape=tuple(value.shape), is_constant=True, value=small))


def fx_to_channel_graph(gm: fx.GraphModule, name: str = "fx") -> ChannelGraph:
    """Build the ChannelGraph of a GraphModule whose nodes carry ShapeProp's ``tensor_meta``."""
    cg = ChannelGraph(name)
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            _add_tensors(cg, node)
            cg.inputs.extend(_names(node))
        elif node.op == "get_attr":
            value = _get_attr(gm, str(node.target))
            if isinstance(value, torch.Tensor):
                _add_constant(cg, node.name, value)
        elif node.op == "output":
            cg.outputs = _refs(node.args)
        elif _names(node):
            _add_tensors(cg, node)
            cg.add_op(_op(gm, node, cg))
    return cg.finish()


def _op(gm: fx.GraphModule, node: fx.Node, cg: ChannelGraph) -> OpNode:
    outputs = _names(node)
    source = node.args[0] if node.args else None
    source_meta = source.meta.get("tensor_meta") if isinstance(source, fx.Node) else None
    if node.target is operator.getitem and isinstance(source_meta, (tuple, list)) \
            and not isinstance(source_meta, TensorMetadata):  # TensorMetadata is a NamedTuple
        idx = node.args[1]
        piece = f"{source.name}.{idx}" if isinstance(idx, int) else None
        if piece in cg.tensors:  # taking a piece out of a tuple: identity
            return OpNode(node.name, "getitem", Kind.UNARY, [piece], outputs)
        return OpNode(node.name, "getitem", Kind.BARRIER, _refs(node.args), outputs,
                      reason=f"{node.name}: getitem of a tuple with a non-integer index")
    module = gm.get_submodule(str(node.target)) if node.op == "call_module" else None
    mapped = map_module(node, module) if module is not None else map_call(node)
    op_type = type(module).__name__ if module is not None else getattr(node.target, "__name__", str(node.target))
    acts = _refs((node.args, node.kwargs))
    for pname, value in mapped.params:
        _add_constant(cg, pname, value)
    inputs = acts + [p for p, _ in mapped.params]
    kind, reason = mapped.kind, mapped.reason
    n_acts = sum(1 for t in acts if not cg.is_constant(t))
    single = isinstance(node.meta.get("tensor_meta"), TensorMetadata)
    if kind not in (Kind.SPLIT, Kind.BARRIER) and not single:
        kind, reason = Kind.BARRIER, f"{node.name} ({op_type}) returns several tensors"
    elif kind in _SINGLE_INPUT and (len(acts) != 1 or n_acts != 1):
        kind, reason = Kind.BARRIER, f"{node.name} ({op_type}) takes {len(acts)} tensor inputs, the mapping expects one"
    elif kind in _MODULE_KINDS and (not acts or cg.is_constant(acts[0]) or n_acts != 1):
        kind, reason = Kind.BARRIER, f"{node.name} ({op_type}): parameters or extra tensor inputs computed at run time"
    elif kind is not Kind.BARRIER and n_acts == 0:
        kind, reason = Kind.BARRIER, f"{node.name} ({op_type}) computes only on constants"
    if kind is Kind.BARRIER and not reason:
        reason = f"{node.name}: {op_type} is not understood"
    attrs = mapped.attrs if kind is mapped.kind else {}
    return OpNode(node.name, op_type, kind, inputs, outputs, attrs, reason)


def _get_attr(gm: fx.GraphModule, target: str) -> Any:
    owner, _, name = target.rpartition(".")
    return getattr(gm.get_submodule(owner) if owner else gm, name)


# --- oracle ------------------------------------------------------------------------------------
class _MaskingInterpreter(fx.Interpreter):
    """Runs a GraphModule with every listed tensor multiplied by its keep-mask where produced."""

    def __init__(self, gm: fx.GraphModule, removed_channels: dict[str, dict]) -> None:
        super().__init__(gm)
        self.removed_channels = removed_channels

    def _mask(self, name: str, value: Any) -> Any:
        entry = self.removed_channels.get(name)
        if entry is None or not isinstance(value, torch.Tensor):
            return value
        axis = int(entry["axis"])
        keep = torch.ones(value.shape[axis], dtype=value.dtype, device=value.device)
        keep[torch.as_tensor(entry["indices"], dtype=torch.long, device=value.device)] = 0
        shape = [1] * value.dim()
        shape[axis] = value.shape[axis]
        return value * keep.reshape(shape)

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        if n.op in ("placeholder", "get_attr", "output"):
            return out
        if isinstance(out, (tuple, list)):
            pieces = [self._mask(f"{n.name}.{i}", v) for i, v in enumerate(out)]
            return type(out)(pieces) if isinstance(out, list) or type(out) is tuple else out
        return self._mask(n.name, out)


def fx_oracle(original_gm: fx.GraphModule, pruned_gm: fx.GraphModule, removed_channels: dict[str, dict],
              example_inputs: tuple) -> float:
    """Max relative error between the pruned module and the masked original, over all outputs.

    Both run in eval mode without gradients. A wrong rewrite shows up as a large error, a
    mismatched output structure or shape as ``inf``.
    """
    original_gm.eval()
    pruned_gm.eval()
    with torch.no_grad():
        ref, _ = tree_flatten(_MaskingInterpreter(original_gm, removed_channels).run(*example_inputs))
        got, _ = tree_flatten(pruned_gm(*example_inputs))
    if len(ref) != len(got):
        return float("inf")
    worst = 0.0
    for r, g in zip(ref, got):
        if isinstance(r, torch.Tensor) and isinstance(g, torch.Tensor):
            rel, _ = relative_error(_numpy(r), _numpy(g))
            worst = max(worst, rel)
    return worst


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()
