"""A differentiable copy of the network with a channel mask on every *frontier edge*.

An edge ``t -> op`` (a tensor of the slot space and one operator that reads it) is *internal*
when ``op`` carries ``t``'s channels on, channel for channel, inside the slot space: ``op`` is an
elementwise, channelwise, unary, concat, split, slice, reshape, transpose or gather operator, or
a convolution / reduction / normalisation whose output channels are tied to ``t``'s (a depthwise
convolution, a mean over the spatial axes), and all of ``op``'s outputs are in the slot space.
Every other edge is a *frontier* edge (a dense convolution, a linear layer, a matmul, a barrier,
an operator the analysis does not know), and so is a graph output. One mask scales each
frontier edge, for that consumer only:

    ONNX:  t -> op            becomes   t -> Mul(t, mask_i) -> op    (mask_i a graph input)
           then onnx2torch.convert, and each Mul becomes _center_scale(t, mask_i, mean_i, i)
    fx:    node -> user       becomes   node -> _center_scale(node, mask_i, mean_i, i) -> user
                                        (mask_i and mean_i placeholders)

A mask has shape 1 everywhere except the tensor's channel axis, so with all masks at 1 the
network computes exactly what the original does. Setting the masks of one unit to 0 computes
what the oracle's masked original computes when that unit is removed: the consumers that mix
channels never see the unit's channels, and what internal operators compute on them (a
BatchNorm's bias, say) goes nowhere else.

Every mask comes with a *mean* input of its shape: the edge computes ``mean + mask * (t - mean)``.
With the means at 0 (the default) that is ``mask * t``, the removal the oracle checks. With the
means set to the calibration mean of each channel (:meth:`MaskedModel.activation_means`), a mask
at 0 replaces the channel by its mean instead: the removal after which the consumer's bias
absorbs what the channel carried on average, which is what re-estimating BatchNorm statistics or
a short fine-tune restores after pruning.

The gradient of an objective with respect to a mask, at 1, is the sum over positions of
activation (minus its mean, when means are set) times gradient for that channel (the Taylor
quantity); a unit's gradient is the sum over its frontier edges, which are parallel exits of
the unit. (Masks on every tensor a unit lives in would put them in series: conv -> BN -> ReLU
scaled by s on every slot computes s^2 relu(z), and the estimates would grow with the number
of tensors a unit spans, which differs between groups and between a folded ONNX export and an
unfolded fx trace.)

Masks carry no batch axis: the calibration data is run one model batch at a time, at the
model's static batch size (1 for a dynamic batch), so with the usual batch of 1 every
gradient is a per-sample gradient.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import onnx
import torch
from torch import fx

from hwprune_fx.analysis import DependencyAnalysis
from hwprune_fx.calib import CalibrationData, model_input_specs
from hwprune_fx.errors import UserError
from hwprune_fx.ir import Kind, OpNode

__all__ = ["MaskedModel", "build_masked_model", "is_fx_module", "is_internal_edge"]


@dataclass
class MaskedModel:
    """``module(*inputs, *masks, *means) -> outputs``.

    ``masks[i]`` scales tensor ``tensors[i]`` around ``means[i]`` where operator ``consumers[i]``
    reads it (``None``: where the graph returns it); a tensor has one mask per frontier edge.
    ``means`` default to zeros (a mask scales the tensor itself).
    """

    module: torch.nn.Module
    input_names: list[str]
    tensors: list[str]
    consumers: list[str | None]
    mask_shapes: list[tuple[int, ...]]
    batch_size: int
    num_units: int
    unit_index: torch.Tensor  # unit id of every mask entry, masks flattened and concatenated
    means: list[torch.Tensor]  # what a mask at 0 leaves: zeros (removal) or calibration means

    def ones(self, requires_grad: bool = False) -> list[torch.Tensor]:
        return [torch.ones(s, requires_grad=requires_grad) for s in self.mask_shapes]

    def at(self, keep: np.ndarray | None, requires_grad: bool = False) -> list[torch.Tensor]:
        """Masks of the network with the units where ``keep`` is False removed (None: all kept)."""
        if keep is None:
            return self.ones(requires_grad)
        kept = torch.as_tensor(np.asarray(keep, dtype=bool))[self.unit_index].to(torch.float32)
        masks, start = [], 0
        for shape in self.mask_shapes:
            n = int(np.prod(shape))
            masks.append(kept[start:start + n].reshape(shape).clone().requires_grad_(requires_grad))
            start += n
        return masks

    def __call__(self, inputs: list[torch.Tensor], masks: list[torch.Tensor]) -> list[torch.Tensor]:
        out = self.module(*inputs, *masks, *self.means)
        if isinstance(out, torch.Tensor):
            return [out]
        flat: list[torch.Tensor] = []
        _flatten(out, flat)
        return flat

    def unit_sums(self, per_mask: list[torch.Tensor]) -> torch.Tensor:
        """Sum per-channel values (one tensor per mask, e.g. its gradient) into the units.

        The masks of one unit sit on its frontier edges, parallel exits, so their gradients add up.
        """
        flat = torch.cat([g.detach().reshape(-1).to(torch.float64) for g in per_mask])
        return torch.zeros(self.num_units, dtype=torch.float64).index_add_(0, self.unit_index, flat)

    def without_unit(self, unit: int) -> list[torch.Tensor]:
        """Masks that zero every frontier edge of ``unit`` (what removing it does) and keep the rest."""
        keep = np.ones(self.num_units, dtype=bool)
        keep[unit] = False
        return self.at(keep)

    def activation_means(self, calib: CalibrationData) -> list[torch.Tensor]:
        """Per channel, the mean of every masked tensor over the calibration samples and positions.

        Set them as :attr:`means` to make a mask at 0 replace a channel by its mean.
        """
        global _RECORDER
        recorder = _MeanRecorder(len(self.mask_shapes))
        _RECORDER = recorder
        try:   # with every mask at 1 each edge passes its tensor on, whatever the means
            with torch.no_grad():
                ones = self.ones()
                for inputs in self.batches(calib):
                    self(inputs, ones)
        finally:
            _RECORDER = None
        return recorder.means(self.mask_shapes)

    def batches(self, calib: CalibrationData) -> Iterator[list[torch.Tensor]]:
        """The calibration samples as model inputs, ``batch_size`` at a time.

        A last, partial batch is filled up with the first samples (a static batch cannot shrink).
        """
        arrays = self._arrays(calib)
        n, bs = calib.num_samples, self.batch_size
        for start in range(0, n, bs):
            idx = np.arange(start, start + bs) % n
            yield [torch.from_numpy(np.ascontiguousarray(a[idx], np.float32)) for a in arrays]

    def _arrays(self, calib: CalibrationData) -> list[np.ndarray]:
        """The calibration arrays in input order; one array feeds a one-input model whatever its name."""
        if len(self.input_names) == 1 and len(calib.samples) == 1:
            return list(calib.samples.values())
        missing = [n for n in self.input_names if n not in calib.samples]
        if missing:
            raise UserError(f"calibration data {calib.source!r} lacks input(s) {', '.join(missing)} "
                            f"(it holds {', '.join(sorted(calib.samples))})")
        return [calib.samples[k] for k in self.input_names]

    def num_batches(self, calib: CalibrationData) -> int:
        return -(-calib.num_samples // self.batch_size)


class _MeanRecorder:
    """Running per-channel means of the masked tensors while :meth:`MaskedModel.activation_means` runs."""

    def __init__(self, edges: int) -> None:
        self.sums: list[torch.Tensor | None] = [None] * edges
        self.counts = [0] * edges

    def add(self, index: int, tensor: torch.Tensor, mask: torch.Tensor) -> None:
        axes = [d for d in range(tensor.dim()) if mask.dim() != tensor.dim() or mask.shape[d] == 1]
        mean = tensor.detach().to(torch.float64).mean(dim=axes, keepdim=True) if axes else tensor.detach().double()
        self.sums[index] = mean if self.sums[index] is None else self.sums[index] + mean
        self.counts[index] += 1

    def means(self, shapes: list[tuple[int, ...]]) -> list[torch.Tensor]:
        return [torch.zeros(shape) if total is None else (total / n).to(torch.float32).reshape(shape)
                for total, n, shape in zip(self.sums, self.counts, shapes)]


_RECORDER: _MeanRecorder | None = None   # set only inside activation_means (one at a time)


def _center_scale(tensor: torch.Tensor, mask: torch.Tensor, mean: torch.Tensor, index: int) -> torch.Tensor:
    """One frontier edge: ``tensor`` scaled by ``mask`` around ``mean`` (``mask * tensor`` at mean 0)."""
    if _RECORDER is not None:
        _RECORDER.add(index, tensor, mask)
    return mean + mask * (tensor - mean)


def _flatten(value: Any, out: list[torch.Tensor]) -> None:
    if isinstance(value, torch.Tensor):
        out.append(value)
    elif isinstance(value, dict):
        for v in value.values():
            _flatten(v, out)
    elif isinstance(value, (tuple, list)):
        for v in value:
            _flatten(v, out)


def is_fx_module(model: Any) -> bool:
    return isinstance(model, fx.GraphModule)


def build_masked_model(model: onnx.ModelProto | fx.GraphModule, analysis: DependencyAnalysis,
                       means_from: CalibrationData | None = None) -> MaskedModel:
    """The masked network of ``model`` (the prepared ONNX original, or a traced GraphModule).

    ``analysis`` must be the analysis of that same model: its tensor names are looked up in it.
    ``means_from``: set the means to these samples' channel means (a mask at 0 then replaces a
    channel by its mean); without it they are zeros (a mask at 0 removes the channel).
    """
    if is_fx_module(model):
        masked = _fx_masked(model, analysis)
    elif isinstance(model, onnx.ModelProto):
        masked = _onnx_masked(model, analysis)
    else:
        raise UserError(f"data-driven criteria need an onnx.ModelProto or a torch.fx.GraphModule, "
                        f"got {type(model).__name__}")
    if means_from is not None:
        masked.means = masked.activation_means(means_from)
    return masked


def _mask_shape(analysis: DependencyAnalysis, tensor: str) -> tuple[int, ...] | None:
    shape = analysis.graph.shape(tensor)
    if shape is None:
        return None
    out = [1] * len(shape)
    out[analysis.slots.axis[tensor]] = analysis.slots.size[tensor]
    return tuple(out)


# operators that carry each input channel on to the same channel of an output, index for index
# (the handlers tie those slots, or pin them); so do a depthwise convolution and a reduction or a
# normalisation over other axes than the channels' (see _carries_channels)
_CARRY = frozenset({Kind.ELEMENTWISE, Kind.CHANNELWISE, Kind.UNARY, Kind.CONCAT, Kind.SPLIT, Kind.SLICE,
                    Kind.RESHAPE, Kind.TRANSPOSE, Kind.GATHER})
def is_internal_edge(analysis: DependencyAnalysis, tensor: str, op_name: str) -> bool:
    """Whether operator ``op_name`` carries ``tensor``'s channels on inside the slot space.

    Such an edge needs no mask: the channels reach the frontier further on, where the consumers
    that mix them are masked. A consumer the channel graph does not hold is a frontier.
    """
    g = analysis.graph
    if op_name not in g.nx or tensor not in analysis.slots.axis:
        return False
    op = g.op(op_name)
    outputs = [o for o in op.outputs if o]
    if not outputs or any(o not in analysis.slots.axis for o in outputs):
        return False
    return op.kind in _CARRY or _carries_channels(analysis, op, tensor)


def _carries_channels(analysis: DependencyAnalysis, op: OpNode, tensor: str) -> bool:
    """A convolution, reduction or normalisation that maps channel c to channel(s) c only.

    (Tied units are not the test: a residual add ties a dense conv's output to its input.)
    """
    shape, axis = analysis.graph.shape(tensor), analysis.slots.axis[tensor]
    if shape is None or not op.inputs or op.inputs[0] != tensor:
        return False
    if op.kind in (Kind.CONV, Kind.CONV_TRANSPOSE):  # depthwise: one input channel per group
        groups = int(op.attrs.get("group", 1))
        return groups > 1 and shape[1] == groups
    if op.kind in (Kind.REDUCE, Kind.NORM_OVER_AXES):
        axes = op.attrs.get("axes")
        return axes is not None and axis not in {int(a) % len(shape) for a in axes}
    return False


def _finish(module: torch.nn.Module, inputs: list[str], edges: list[tuple[str, str | None]],
            shapes: list[tuple[int, ...]], batch: int, analysis: DependencyAnalysis) -> MaskedModel:
    tensors = [t for t, _ in edges]
    index = np.concatenate([analysis.units_of(t) for t in tensors]) if tensors else np.zeros(0, np.int64)
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return MaskedModel(module, inputs, tensors, [c for _, c in edges], shapes, batch, analysis.num_units,
                       torch.from_numpy(np.asarray(index, np.int64)), [torch.zeros(s) for s in shapes])


def _add_mean_placeholders(graph: fx.Graph, count: int) -> list[fx.Node]:
    """``count`` new placeholders after the last one: the means, one per mask, in mask order."""
    if count == 0:
        return []
    anchor = [n for n in graph.nodes if n.op == "placeholder"][-1]   # the masks come before
    out = []
    for i in range(count):
        with graph.inserting_after(anchor):
            anchor = graph.placeholder(f"hwprune_mean_{i}")
        out.append(anchor)
    return out


# --- ONNX ----------------------------------------------------------------------------------------
def _onnx_masked(model: onnx.ModelProto, analysis: DependencyAnalysis) -> MaskedModel:
    import onnx_graphsurgeon as gs

    specs = model_input_specs(model)
    batch = {s[0] if s else None for s in specs.values()}
    batch_size = batch.pop() if len(batch) == 1 and None not in batch else 1
    graph = gs.import_onnx(model)
    by_name = graph.tensors()
    edges: list[tuple[str, str | None]] = []
    shapes: list[tuple[int, ...]] = []

    def masked_copy(t: gs.Variable, shape: tuple[int, ...], name: str, consumer: str | None) -> gs.Variable:
        i = len(edges)
        mask = gs.Variable(f"hwprune_mask_{i}", dtype=np.float32, shape=list(shape))
        masked = gs.Variable(f"{t.name}__hwprune_masked_{i}", dtype=t.dtype, shape=t.shape)
        graph.nodes.append(gs.Node("Mul", name=f"{t.name}__hwprune_mask_mul_{i}", inputs=[t, mask],
                                   outputs=[masked]))
        graph.inputs.append(mask)
        edges.append((name, consumer))
        shapes.append(shape)
        return masked

    for name in analysis.slots.axis:
        t = by_name.get(name)
        shape = _mask_shape(analysis, name)
        if not isinstance(t, gs.Variable) or shape is None or (t.dtype is not None and t.dtype != np.float32):
            continue  # constants are sliced, never masked (as in the oracle); so are non-float tensors
        for consumer in list(t.outputs):
            if is_internal_edge(analysis, name, consumer.name):
                continue
            masked = masked_copy(t, shape, name, consumer.name)
            for j, x in enumerate(consumer.inputs):
                if x is t:
                    consumer.inputs[j] = masked
        if any(o is t for o in graph.outputs):
            masked = masked_copy(t, shape, name, None)
            graph.outputs = [masked if o is t else o for o in graph.outputs]
    graph.toposort()
    module = _centered_masks(_to_torch(gs.export_onnx(graph)), len(edges))
    return _finish(module, list(specs), edges, shapes, batch_size, analysis)


def _centered_masks(module: fx.GraphModule, count: int) -> fx.GraphModule:
    """Replace onnx2torch's ``Mul(t, mask_i)`` modules by ``_center_scale(t, mask_i, mean_i, i)``."""
    graph = module.graph
    muls: dict[int, fx.Node] = {}
    for node in graph.nodes:
        _, sep, index = str(node.target).rpartition("__hwprune_mask_mul_")
        if node.op == "call_module" and sep and index.isdigit():
            muls[int(index)] = node
    if sorted(muls) != list(range(count)):
        raise RuntimeError(f"masked network: found {len(muls)} of {count} mask multiplications after onnx2torch")
    means = _add_mean_placeholders(graph, count)
    for i in range(count):
        node = muls[i]
        tensor, mask = node.args
        with graph.inserting_before(node):
            new = graph.call_function(_center_scale, (tensor, mask, means[i], i))
        node.replace_all_uses_with(new)
        graph.erase_node(node)
    graph.lint()
    module.delete_all_unused_submodules()
    module.recompile()
    return module


# onnx2torch 1.5 converts operators up to opset 17; opset 18 moved Reduce*'s axes (and Split's sizes)
# from attributes to inputs, which the ONNX version converter can move back
_ONNX2TORCH_OPSET = 17


def _to_torch(proto: onnx.ModelProto) -> torch.nn.Module:
    """onnx2torch's module of ``proto``, after a down-conversion to opset 17 if it needs one."""
    from onnx import version_converter
    from onnx2torch import convert

    try:
        return convert(proto)
    except Exception as exc:  # noqa: BLE001 - an operator onnx2torch lacks is the model's limit, in one line
        first_error = exc
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset > _ONNX2TORCH_OPSET:
        try:
            return convert(version_converter.convert_version(proto, _ONNX2TORCH_OPSET))
        except Exception:  # noqa: BLE001 - report the first failure, on the model as given
            pass
    first = (str(first_error).strip().splitlines() or [""])[0][:200]
    raise UserError(f"data-driven criteria need gradients and onnx2torch cannot convert this model: "
                    f"{type(first_error).__name__}: {first}; use --criterion l1 or bn") from None


# --- torch.fx ------------------------------------------------------------------------------------
def _mask_pieces(value: tuple, masks: dict[int, tuple[torch.Tensor, torch.Tensor, int]]) -> tuple:
    """Scale some pieces of a tuple-valued node (``chunk``, ``split``): piece -> (mask, mean, edge index)."""
    return tuple(_center_scale(v, *masks[i]) if i in masks else v for i, v in enumerate(value))


def _fx_masked(gm: fx.GraphModule, analysis: DependencyAnalysis) -> MaskedModel:
    gm = copy.deepcopy(gm)
    graph = gm.graph
    nodes = {n.name: n for n in graph.nodes}
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    # (tensor, its node, piece index or None, mask shape, the user node that reads it)
    targets: list[tuple[str, fx.Node, int | None, tuple[int, ...], fx.Node]] = []
    for name in analysis.slots.axis:
        shape = _mask_shape(analysis, name)
        owner, _, piece = name.rpartition(".")
        if name in nodes and nodes[name].op in ("placeholder", "call_function", "call_method", "call_module"):
            node, index = nodes[name], None
        elif owner in nodes and piece.isdigit():
            node, index = nodes[owner], int(piece)
        else:
            continue  # parameters and constants are sliced, never masked (as in the oracle)
        if shape is None:
            continue
        for user in list(node.users):
            if user.name in analysis.graph.nx and name not in analysis.graph.op(user.name).inputs:
                continue  # reads another piece of the tuple
            # the output node is the graph output; a user outside the channel graph is a frontier
            if user.op == "output" or not is_internal_edge(analysis, name, user.name):
                targets.append((name, node, index, shape, user))
    masks: list[fx.Node] = []
    anchor = placeholders[-1] if placeholders else None
    for i in range(len(targets)):
        with graph.inserting_after(anchor) if anchor is not None else graph.inserting_before(None):
            anchor = graph.placeholder(f"hwprune_mask_{i}")
        masks.append(anchor)
    means = _add_mean_placeholders(graph, len(targets))
    # one scaled copy of each (node, user) pair, read by that user alone
    per_edge: dict[tuple[fx.Node, fx.Node], dict[int | None, tuple[fx.Node, fx.Node, int]]] = {}
    for i, ((_, node, index, _, user), mask, mean) in enumerate(zip(targets, masks, means)):
        per_edge.setdefault((node, user), {})[index] = (mask, mean, i)
    for (node, user), by_index in per_edge.items():
        with graph.inserting_before(user):
            if None in by_index:
                new = graph.call_function(_center_scale, (node, *by_index[None]))
            else:
                new = graph.call_function(_mask_pieces, (node, by_index))
        user.replace_input_with(node, new)
    graph.lint()
    gm.recompile()
    inputs = [n.name for n in placeholders]  # the model's own inputs (taken before masks were added)
    return _finish(gm, inputs, [(t[0], None if t[4].op == "output" else t[4].name) for t in targets],
                   [t[3] for t in targets], 1, analysis)
