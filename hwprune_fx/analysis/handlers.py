"""Per-kind channel handlers: how each operator ties the slots of its inputs and outputs.

One registry keyed by :class:`Kind`. A handler either ties slots (so they are removed
together), gives an output fresh slots that its operator owns (conv, linear), or pins
the tensors it cannot reason about, with a reason. An unknown situation always pins:
the analysis never guesses.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from hwprune_fx.analysis.slots import SlotSpace
from hwprune_fx.ir import ChannelGraph, Kind, OpNode

__all__ = ["HANDLERS", "default_axis", "apply_handler"]

Handler = Callable[[OpNode, ChannelGraph, SlotSpace], None]
HANDLERS: dict[Kind, Handler] = {}


def register(*kinds: Kind) -> Callable[[Handler], Handler]:
    def deco(fn: Handler) -> Handler:
        for k in kinds:
            HANDLERS[k] = fn
        return fn
    return deco


def default_axis(shape: tuple[int, ...] | None) -> int | None:
    """Channel axis assumed for a tensor nothing defines: NC... layout, last axis for rank 3."""
    if shape is None or len(shape) == 0:
        return None
    if len(shape) == 1:
        return 0
    if len(shape) == 3:
        return 2
    return 1


def _activations(op: OpNode, g: ChannelGraph) -> list[str]:
    return [t for t in op.inputs if t and not g.is_constant(t)]


def pin_op(op: OpNode, g: ChannelGraph, s: SlotSpace, reason: str) -> None:
    """Barrier: pin every non-constant input, give outputs default axes and pin them."""
    for t in _activations(op, g):
        s.pin(t, reason)
    for t in op.outputs:
        if t and not s.has(t):
            ax = default_axis(g.shape(t))
            if ax is not None:
                s.assign(t, ax)
        s.pin(t, reason)


def _require_axis(t: str, axis: int, op: OpNode, s: SlotSpace) -> bool:
    if not s.has(t):
        return False
    if s.axis[t] != axis:
        s.pin(t, f"{op.name} ({op.op_type}) reads axis {axis} as channels, the analysis tracks axis {s.axis[t]}")
        return False
    return True


def _norm(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def apply_handler(op: OpNode, g: ChannelGraph, s: SlotSpace) -> None:
    """Dispatch ``op`` to its kind's handler; unknown shapes and unknown kinds pin."""
    for t in list(op.inputs) + list(op.outputs):
        if t and g.shape(t) is None and not g.is_constant(t):
            pin_op(op, g, s, f"{op.name} ({op.op_type}): shape of {t!r} is unknown")
            return
    handler = HANDLERS.get(op.kind)
    if handler is None or op.kind is Kind.BARRIER:
        pin_op(op, g, s, op.reason or f"{op.name}: operator {op.op_type} is not understood")
        return
    handler(op, g, s)


# --- producers ------------------------------------------------------------------------------
@register(Kind.CONV, Kind.CONV_TRANSPOSE)
def _conv(op: OpNode, g: ChannelGraph, s: SlotSpace) -> None:
    x, y = op.inputs[0], op.outputs[0]
    s.assign(y, 1)
    s.produced[y] = op.name
    groups = int(op.attrs.get("group", 1))
    has_in = _require_axis(x, 1, op, s)
    cin, cout = g.shape(x)[1], g.shape(y)[1]
    if groups == 1:
        return
    cin_g, cout_g = cin // groups, cout // groups
    if cin_g == 1:
        # depthwise-like: a whole group (its input channel and its outputs) goes together
        if not has_in:
            s.pin(y, f"{op.name}: depthwise input channels are not tracked")
            return
        gi = np.repeat(np.arange(groups), cout_g)
        s.union(x, gi, y, None)
        return
    # grouped: the k-th position of every group goes together, inputs and outputs independently
    for tensor, per, ok in ((x, cin_g, has_in), (y, cout_g, True)):
        if not ok:
            continue
        base = np.arange(per)
        for gi in range(1, groups):
            s.union(tensor, base, tensor, base + gi * per)


@register(Kind.LINEAR)
def _linear(op: OpNode, g: ChannelGraph, s: SlotSpace) -> None:
    x, y = op.inputs[0], op.outputs[0]
    ry = len(g.shape(y))
    _require_axis(x, len(g.shape(x)) - 1, op, s)
    s.assign(y, ry - 1)
    s.produced[y] = op.name


# --- channel-preserving ---------------------------------------------------------------------
def _tie_same(op: OpNode, g: ChannelGraph, s: SlotSpace, x: str, y: str, out_axis: int) -> None:
    """Output ``y`` carries the channels of ``x`` on ``out_axis``, index for index."""
    if not s.has(x):
        pin_op(op, g, s, f"{op.name}: input channels are not tracked")
        return
    if g.shape(y)[out_axis] != s.size[x]:
        s.assign(y, out_axis)
        s.pin(x, f"{op.name} ({op.op_type}) changes the channel count")
        s.pin(y, f"{op.name} ({op.op_type}) changes the channel count")
        return
    s.assign(y, out_axis)
    s.union(x, None, y, None)


@register(Kind.UNARY)
def _unary(op: OpNode, g: ChannelGraph, s: SlotSpace) -> None:
    x = op.inputs[0]
    spatial_from = op.attrs.get("spatial_from")
    if spatial_from is not None and s.has(x) and s.axis[x] >= spatial_from:
        pin_op(op, g, s, f"{op.name} ({op.op_type}) pools over the channel axis")
        return
    for y in op.outputs:
        if not y:
            continue
        if s.has(x) and len(g.shape(y)) == len(g.shape(x)):
            _tie_same(op, g, s, x, y, s.axis[x])
        else:
            pin_op(op, g, s, f"{op.name} ({op.op_type}) changes the tensor rank")


@register(Kind.CHANNELWISE)
def _channelwise(op: OpNode, g: ChannelGraph, s: SlotSpace) -> None:
    x, y = op.inputs[0], op.outputs[0]
    axis = _norm(int(op.attrs.get("axis", 1)), len(g.shape(x)))
    if not _require_axis(x, axis, op, s):
        pin_op(op, g, s, f"{op.name}: per-channel parameters on an untracked axis")
        return
    _tie_same(op, g, s, x, y, axis)
    for extra in op.outputs[1:]:
        if extra:
            pin_op(op, g, s, f"{op.name}: training-mode outputs are not supported")


@register(Kind.NORM_OVER_AXES)
def _norm_over_axes(op: OpNode, g: ChannelGraph, s: SlotSpace) -> None:
    x, y = op.inputs[0], op.outputs[0]
    rank = len(g.shape(x))
    axes = {_norm(int(a), rank) for a in op.attrs.get("axes", ())}
    if not s.has(x) or s.axis[x] in axes:
        pin_op(op, g, s, f"{op.name} ({op.op_type}) mixes channels (normalises over the channel axis)")
        return
    _tie_same(op, g, s, x, y, s.axis[x])


@register(Kind.ELEMENTWISE)
def _elementwise(op: OpNode, g: ChannelGraph, s: SlotSpace) -> None:
    y = op.outputs[0]
    r = len(g.shape(y))
    acts = [t for t in _activations(op, g) if s.has(t)]
    if len(acts) != len(_activations(op, g)):
        pin_op(op, g, s, f"{op.name}: an input's channels are not tracked")
        return
    # the output's channel axis: the first input whose channel axis is not broadcast
    out_axis = None
    for t in acts:
        aligned = s.axis[t] + r - len(g.shape(t))
        if s.size[t] > 1 and aligned >= 0 and g.shape(y)[aligned] == s.size[t]:
            out_axis = aligned
            break
    if out_axis is None:
        pin_op(op, g, s, f"{op.name}: no input defines the output's channels")
        return
    s.assign(y, out_axis)
    for t in acts:
        rt = len(g.shape(t))
        aligned_idx = out_axis - (r - rt)
        dim = g.shape(t)[aligned_idx] if aligned_idx >= 0 else 1
        if dim == 1:
            if s.axis[t] == aligned_idx or s.size[t] > 1:
                s.pin(t, f"{op.name}: broadcast along the channel axis")
            continue
        if s.axis[t] != aligned_idx:
            s.pin(t, f"{op.name}: inputs disagree on the channel axis")
            s.pin(y, f"{op.name}: inputs disagree on the channel axis")
            continue
        s.union(t, None, y, None)


@register(Kind.REDUCE)
def _reduce(op: OpNode, g: ChannelGraph, s: SlotSpace) -> None:
    x, y = op.inputs[0], op.outputs[0]
    rank = len(g.shape(x))
    axes = op.attrs.get("axes")
    axes = set(range(rank)) if axes is None else {_norm(int(a), rank) for a in axes}
    keep = bool(op.attrs.get("keepdims", True))
    if not s.has(x):
        pin_op(op, g, s, f"{op.name}: input channels are not tracked")
        return
    a = s.axis[x]
    if a in axes:
        if op.attrs.get("channel_safe"):  # a sum: removed channels contribute nothing
            ax = default_axis(g.shape(y))
            if ax is not None:
                s.assign(y, ax)
            s.pin(y, f"{op.name}: channels were summed away")
        else:
            pin_op(op, g, s, f"{op.name} ({op.op_type}) reduces over the channel axis")
        return
    out_axis = a if keep else a - sum(1 for b in axes if b < a)
    _tie_same(op, g, s, x, y, out_axis)


@register(Kind.TRANSPOSE)
def _transpose(op: OpNode, g: ChannelGraph, s: SlotSpace) -> None:
    x, y = op.inputs[0], op.outputs[0]
    perm = list(op.attrs.get("perm") or reversed(range(len(g.shape(x)))))
    if not s.has(x):
        pin_op(op, g, s, f"{op.name}: input channels are not tracked")
        return
    _tie_same(op, g, s, x, y, perm.index(s.axis[x]))


@register(Kind.GATHER)
def _gather(op: OpNode, g: ChannelGraph, s: SlotSpace) -> None:
    x, y = op.inputs[0], op.outputs[0]
    rank = len(g.shape(x))
    axis = _norm(int(op.attrs.get("axis", 0)), rank)
    idx_rank = int(op.attrs.get("indices_rank", 0))
    if not s.has(x) or s.axis[x] == axis:
        pin_op(op, g, s, f"{op.name}: gathers along the channel axis")
        return
    a = s.axis[x]
    _tie_same(op, g, s, x, y, a if a < axis else a + idx_rank - 1)


# --- channel re-mapping ---------------------------------------------------------------------
@register(Kind.CONCAT)
def _concat(op: OpNode, g: ChannelGraph, s: SlotSpace) -> None:
    y = op.outputs[0]
    r = len(g.shape(y))
    axis = _norm(int(op.attrs["axis"]), r)
    ins = [t for t in op.inputs if t]
    acts = [t for t in ins if not g.is_constant(t)]
    if not acts or any(not s.has(t) for t in acts):
        pin_op(op, g, s, f"{op.name}: an input's channels are not tracked")
        return
    axes = {s.axis[t] for t in acts}
    if axes == {axis}:
        if len(acts) != len(ins):
            pin_op(op, g, s, f"{op.name}: concatenates a constant along the channel axis")
            return
        s.assign(y, axis)
        off = 0
        for t in ins:
            n = s.size[t]
            s.union(t, None, y, np.arange(off, off + n))
            off += n
        return
    if len(axes) == 1 and axis not in axes:
        (a,) = axes
        s.assign(y, a)
        for t in acts:
            s.union(t, None, y, None)
        return
    pin_op(op, g, s, f"{op.name}: inputs disagree on the channel axis")


@register(Kind.SPLIT)
def _split(op: OpNode, g: ChannelGraph, s: SlotSpace) -> None:
    x = op.inputs[0]
    rank = len(g.shape(x))
    axis = _norm(int(op.attrs["axis"]), rank)
    if not s.has(x):
        pin_op(op, g, s, f"{op.name}: input channels are not tracked")
        return
    if s.axis[x] != axis:
        for y in op.outputs:
            _tie_same(op, g, s, x, y, s.axis[x])
        return
    off = 0
    for y in op.outputs:
        n = g.shape(y)[axis]
        s.assign(y, axis)
        s.union(x, np.arange(off, off + n), y, None)
        off += n


@register(Kind.SLICE)
def _slice(op: OpNode, g: ChannelGraph, s: SlotSpace) -> None:
    x, y = op.inputs[0], op.outputs[0]
    if not s.has(x):
        pin_op(op, g, s, f"{op.name}: input channels are not tracked")
        return
    a = s.axis[x]
    ranges: dict[int, tuple[int, int, int]] = op.attrs["ranges"]
    if a not in ranges:
        _tie_same(op, g, s, x, y, a)
        return
    start, stop, step = ranges[a]
    if step != 1:
        pin_op(op, g, s, f"{op.name}: strided slice of the channel axis")
        return
    s.assign(y, a)
    s.union(x, np.arange(start, stop), y, None)


@register(Kind.RESHAPE)
def _reshape(op: OpNode, g: ChannelGraph, s: SlotSpace) -> None:
    x, y = op.inputs[0], op.outputs[0]
    if not s.has(x):
        pin_op(op, g, s, f"{op.name}: input channels are not tracked")
        return
    mapping = reshape_slot_map(g.shape(x), s.axis[x], g.shape(y))
    if mapping is None:
        pin_op(op, g, s, f"{op.name} ({op.op_type}) reshapes the channel axis in a way the analysis cannot follow")
        return
    out_axis, src, dst = mapping
    s.assign(y, out_axis)
    s.union(x, src, y, dst)


def reshape_slot_map(
    in_shape: tuple[int, ...], axis: int, out_shape: tuple[int, ...]
) -> tuple[int, np.ndarray, np.ndarray] | None:
    """Where the channel axis of a row-major re-view lands, as (out_axis, src_idx, dst_idx).

    Three shapes of re-view are exact under channel removal: the channel axis kept whole
    (possibly moved), merged with trailing axes (Flatten: a channel owns a block of features)
    and/or leading axes, or split so that an inner factor becomes the output axis (heads x
    head_dim: position j of every head goes together).
    """
    c = in_shape[axis]
    q = int(np.prod(in_shape[axis + 1:], dtype=np.int64))
    suffix = [int(np.prod(out_shape[b + 1:], dtype=np.int64)) for b in range(len(out_shape))]
    for b, sz in enumerate(out_shape):
        qo = suffix[b]
        if not (qo <= q < qo * sz) or q % qo:
            continue
        r = q // qo
        block = c * r
        if sz % block == 0:  # channel (with r trailing features) possibly merged with leading axes
            outer = sz // block
            src = np.repeat(np.arange(c), r * outer)
            dst = (np.arange(outer)[None, :, None] * block
                   + np.arange(c)[:, None, None] * r + np.arange(r)[None, None, :]).reshape(-1)
            return b, src, dst
        if r == 1 and c % sz == 0:  # channel split: inner factor becomes the axis
            return b, np.arange(c), np.arange(c) % sz
        return None
    return None


@register(Kind.MATMUL)
def _matmul(op: OpNode, g: ChannelGraph, s: SlotSpace) -> None:
    """Two activations, numpy matmul: A's last axis contracts with B's second-to-last.

    Contracted channels are tied (zeroing a pair removes its product from the sum: q.k^T over
    head_dim). The output takes its channels from B's last axis, A's row axis, or a shared
    batch axis; a channel axis that cannot flow anywhere is pinned.
    """
    a, b = op.inputs[0], op.inputs[1]
    y = op.outputs[0]
    if not (s.has(a) and s.has(b)):
        pin_op(op, g, s, f"{op.name}: an input's channels are not tracked")
        return
    ra, rb, r = len(g.shape(a)), len(g.shape(b)), len(g.shape(y))
    ax_a, ax_b = s.axis[a], s.axis[b]
    a_contr, b_contr = ax_a == ra - 1, ax_b == rb - 2
    if a_contr and b_contr:
        s.union(a, None, b, None)
    elif a_contr:
        s.pin(a, f"{op.name}: channels contracted against a non-channel axis")
    elif b_contr:
        s.pin(b, f"{op.name}: channels contracted against a non-channel axis")
    # where each non-contracted channel axis lands in the output
    flows: list[tuple[str, int]] = []  # B's columns first: attn @ v keeps v's channels
    if not b_contr:
        flows.append((b, r - 1 if ax_b == rb - 1 else ax_b + r - rb))
    if not a_contr:
        flows.append((a, r - 2 if ax_a == ra - 2 else ax_a + r - ra))
    target = None
    for t, out_ax in flows:
        if target is None and 0 <= out_ax < r and g.shape(y)[out_ax] == s.size[t]:
            target = out_ax
    if target is None:
        ax = default_axis(g.shape(y))
        if ax is not None:
            s.assign(y, ax)
        s.pin(y, f"{op.name}: output channels not owned by either operand")
        for t, _ in flows:
            s.pin(t, f"{op.name}: channels do not reach the output")
        return
    s.assign(y, target)
    for t, out_ax in flows:
        if out_ax == target and g.shape(y)[out_ax] == s.size[t]:
            s.union(t, None, y, None)
        else:
            s.pin(t, f"{op.name}: channels do not reach the output")
