"""A differentiable copy of the network with one channel mask on every analysed tensor.

    ONNX:  t -> Consumers     becomes   t -> Mul(t, mask_i) -> Consumers   (mask_i a graph input)
           then onnx2torch.convert
    fx:    node -> users      becomes   node -> mul(node, mask_i) -> users (mask_i a placeholder)

A mask has shape 1 everywhere except the tensor's channel axis, so with all masks at 1 the
network computes exactly what the original does, and setting the masks of one unit's slots to
0 computes what the oracle's masked original computes when that unit is removed. The gradient
of an objective with respect to a mask, at 1, is the sum over positions of activation times
gradient for that channel (the Taylor quantity); a unit's gradient is the sum over its slots,
because removing a unit zeroes all of them at once.

Masks carry no batch axis: the calibration data is run one model batch at a time, at the
model's static batch size (1 for a dynamic batch), so with the usual batch of 1 every
gradient is a per-sample gradient.
"""
from __future__ import annotations

import copy
import operator
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import onnx
import torch
from torch import fx

from hwprune_fx.analysis import DependencyAnalysis
from hwprune_fx.calib import CalibrationData, model_input_specs
from hwprune_fx.errors import UserError

__all__ = ["MaskedModel", "build_masked_model", "is_fx_module"]


@dataclass
class MaskedModel:
    """``module(*inputs, *masks) -> outputs``; ``tensors[i]`` is the tensor that ``masks[i]`` scales."""

    module: torch.nn.Module
    input_names: list[str]
    tensors: list[str]
    mask_shapes: list[tuple[int, ...]]
    batch_size: int
    num_units: int
    unit_index: torch.Tensor  # unit id of every mask entry, masks flattened and concatenated

    def ones(self, requires_grad: bool = False) -> list[torch.Tensor]:
        return [torch.ones(s, requires_grad=requires_grad) for s in self.mask_shapes]

    def __call__(self, inputs: list[torch.Tensor], masks: list[torch.Tensor]) -> list[torch.Tensor]:
        out = self.module(*inputs, *masks)
        if isinstance(out, torch.Tensor):
            return [out]
        flat: list[torch.Tensor] = []
        _flatten(out, flat)
        return flat

    def unit_sums(self, per_mask: list[torch.Tensor]) -> torch.Tensor:
        """Sum per-channel values (one tensor per mask, e.g. its gradient) into the units."""
        flat = torch.cat([g.detach().reshape(-1).to(torch.float64) for g in per_mask])
        return torch.zeros(self.num_units, dtype=torch.float64).index_add_(0, self.unit_index, flat)

    def without_unit(self, unit: int) -> list[torch.Tensor]:
        """Masks that zero every slot of ``unit`` (what removing it does) and keep the rest."""
        masks, start = [], 0
        for shape in self.mask_shapes:
            n = int(np.prod(shape))
            keep = (self.unit_index[start:start + n] != unit).to(torch.float32)
            masks.append(keep.reshape(shape))
            start += n
        return masks

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


def build_masked_model(model: onnx.ModelProto | fx.GraphModule, analysis: DependencyAnalysis) -> MaskedModel:
    """The masked network of ``model`` (the prepared ONNX original, or a traced GraphModule).

    ``analysis`` must be the analysis of that same model: its tensor names are looked up in it.
    """
    if is_fx_module(model):
        return _fx_masked(model, analysis)
    if isinstance(model, onnx.ModelProto):
        return _onnx_masked(model, analysis)
    raise UserError(f"data-driven criteria need an onnx.ModelProto or a torch.fx.GraphModule, "
                    f"got {type(model).__name__}")


def _mask_shape(analysis: DependencyAnalysis, tensor: str) -> tuple[int, ...] | None:
    shape = analysis.graph.shape(tensor)
    if shape is None:
        return None
    out = [1] * len(shape)
    out[analysis.slots.axis[tensor]] = analysis.slots.size[tensor]
    return tuple(out)


def _finish(module: torch.nn.Module, inputs: list[str], tensors: list[str], shapes: list[tuple[int, ...]],
            batch: int, analysis: DependencyAnalysis) -> MaskedModel:
    index = np.concatenate([analysis.units_of(t) for t in tensors]) if tensors else np.zeros(0, np.int64)
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return MaskedModel(module, inputs, tensors, shapes, batch, analysis.num_units,
                       torch.from_numpy(np.asarray(index, np.int64)))


# --- ONNX ----------------------------------------------------------------------------------------
def _onnx_masked(model: onnx.ModelProto, analysis: DependencyAnalysis) -> MaskedModel:
    import onnx_graphsurgeon as gs

    specs = model_input_specs(model)
    batch = {s[0] if s else None for s in specs.values()}
    batch_size = batch.pop() if len(batch) == 1 and None not in batch else 1
    graph = gs.import_onnx(model)
    by_name = graph.tensors()
    tensors, shapes = [], []
    for name in analysis.slots.axis:
        t = by_name.get(name)
        shape = _mask_shape(analysis, name)
        if not isinstance(t, gs.Variable) or shape is None or (t.dtype is not None and t.dtype != np.float32):
            continue  # constants are sliced, never masked (as in the oracle); so are non-float tensors
        mask = gs.Variable(f"hwprune_mask_{len(tensors)}", dtype=np.float32, shape=list(shape))
        masked = gs.Variable(f"{name}__hwprune_masked", dtype=t.dtype, shape=t.shape)
        for consumer in list(t.outputs):
            for j, x in enumerate(consumer.inputs):
                if x is t:
                    consumer.inputs[j] = masked
        graph.outputs = [masked if o is t else o for o in graph.outputs]
        graph.nodes.append(gs.Node("Mul", name=f"{name}__hwprune_mask_mul", inputs=[t, mask], outputs=[masked]))
        graph.inputs.append(mask)
        tensors.append(name)
        shapes.append(shape)
    graph.toposort()
    module = _to_torch(gs.export_onnx(graph))
    return _finish(module, list(specs), tensors, shapes, batch_size, analysis)


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
def _mask_pieces(value: tuple, masks: dict[int, torch.Tensor]) -> tuple:
    """Scale some pieces of a tuple-valued node (``chunk``, ``split``)."""
    return tuple(v * masks[i] if i in masks else v for i, v in enumerate(value))


def _fx_masked(gm: fx.GraphModule, analysis: DependencyAnalysis) -> MaskedModel:
    gm = copy.deepcopy(gm)
    graph = gm.graph
    nodes = {n.name: n for n in graph.nodes}
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    targets: list[tuple[str, fx.Node, int | None, tuple[int, ...]]] = []
    for name in analysis.slots.axis:
        shape = _mask_shape(analysis, name)
        owner, _, piece = name.rpartition(".")
        if name in nodes and nodes[name].op in ("placeholder", "call_function", "call_method", "call_module"):
            node, index = nodes[name], None
        elif owner in nodes and piece.isdigit():
            node, index = nodes[owner], int(piece)
        else:
            continue  # parameters and constants are sliced, never masked (as in the oracle)
        if shape is not None:
            targets.append((name, node, index, shape))
    masks: list[fx.Node] = []
    anchor = placeholders[-1] if placeholders else None
    for i in range(len(targets)):
        with graph.inserting_after(anchor) if anchor is not None else graph.inserting_before(None):
            anchor = graph.placeholder(f"hwprune_mask_{i}")
        masks.append(anchor)
    pieces: dict[fx.Node, dict[int, fx.Node]] = {}
    for (name, node, index, _), mask in zip(targets, masks):
        if index is not None:
            pieces.setdefault(node, {})[index] = mask
            continue
        _insert_after(graph, node, anchor, lambda: graph.call_function(operator.mul, (node, mask)))
    for node, by_index in pieces.items():
        _insert_after(graph, node, anchor, lambda: graph.call_function(_mask_pieces, (node, by_index)))
    graph.lint()
    gm.recompile()
    inputs = [n.name for n in placeholders]
    return _finish(gm, inputs, [t[0] for t in targets], [t[3] for t in targets], 1, analysis)


def _insert_after(graph: fx.Graph, node: fx.Node, last_placeholder: fx.Node,
                  make: Callable[[], fx.Node]) -> None:
    """Insert ``make()`` right after ``node`` (after the masks for an input) and route node's users to it."""
    where = last_placeholder if node.op == "placeholder" else node
    with graph.inserting_after(where):
        new = make()
    node.replace_all_uses_with(new, delete_user_cb=lambda user: user is not new)
