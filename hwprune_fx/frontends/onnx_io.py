"""Reading and writing ONNX files: clear errors for bad input, atomic writes, >2 GB models.

Loading also makes shapes static (``--input-shape`` where the file's are dynamic), folds
constant sub-graphs with onnx-graphsurgeon (shape arithmetic such as ``Shape -> Gather ->
Div`` that feeds a ``Slice``) and runs ONNX shape inference, so that every activation has a
static shape the analysis can trust.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from google.protobuf.message import DecodeError

from hwprune_fx.errors import UserError

__all__ = ["load_onnx", "prepare_graph", "save_onnx", "parse_input_shapes", "infer_shapes_static", "TWO_GB",
           "fits_in_protobuf", "runtime_source", "initializer_stubs"]

TWO_GB = 2**31 - 1


def fits_in_protobuf(model: onnx.ModelProto) -> bool:
    """Whether the model serialises as one message (< 2 GB). ``ByteSize()`` itself fails above
    2 GB, so the estimate adds up the initializers' payloads with a margin for the graph."""
    total = 0
    for t in model.graph.initializer:
        total += len(t.raw_data) + 4 * (len(t.float_data) + len(t.int32_data)) + 8 * (len(t.int64_data) + len(t.double_data))
    return total + 64 * 1024 * 1024 < TWO_GB


@contextlib.contextmanager
def runtime_source(model: onnx.ModelProto) -> Iterator[bytes | str]:
    """What an onnxruntime session can load: the bytes, or above 2 GB a temporary file with
    external data (removed afterwards)."""
    if fits_in_protobuf(model):
        yield model.SerializeToString()
        return
    from hwprune_fx.frontends.onnx_external import save_with_external_data

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        save_with_external_data(model, path, "model.onnx.data")
        yield path


def parse_input_shapes(specs: tuple[str, ...] | list[str] | None) -> dict[str | None, list[int]]:
    """Parse ``name:1x3x224x224`` or ``1,3,224,224`` (for the only input) into a dict."""
    out: dict[str | None, list[int]] = {}
    for spec in specs or ():
        name, _, dims = spec.rpartition(":")
        parts = dims.replace("x", ",").split(",")
        try:
            shape = [int(p) for p in parts if p.strip()]
        except ValueError:
            raise UserError(f"--input-shape {spec!r}: expected NAME:1x3x224x224 or 1,3,224,224") from None
        if not shape or any(d <= 0 for d in shape):
            raise UserError(f"--input-shape {spec!r}: dimensions must be positive integers")
        out[name or None] = shape
    return out


def load_onnx(path: str | os.PathLike) -> onnx.ModelProto:
    """Load an ONNX file (with its external data), or raise a one-line :class:`UserError`."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: no such file")
    if p.is_dir():
        raise UserError(f"{p}: is a directory, expected an .onnx file")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as exc:
        raise UserError(f"{p}: not a readable ONNX model ({type(exc).__name__})") from None
    if not model.graph.node:
        raise UserError(f"{p}: not an ONNX model (no graph nodes found)")
    try:
        onnx.load_external_data_for_model(model, str(p.parent))
    except (OSError, ValueError) as exc:
        raise UserError(f"{p}: external data could not be read ({exc})") from None
    return model


def _apply_input_shapes(model: onnx.ModelProto, shapes: dict[str | None, list[int]], source: str) -> None:
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if None in shapes and len(inputs) != 1:
        names = ", ".join(i.name for i in inputs)
        raise UserError(f"{source}: the model has {len(inputs)} inputs ({names}); name each: NAME:1x3x224x224")
    known = {i.name for i in inputs}
    for name in shapes:
        if name is not None and name not in known:
            raise UserError(f"--input-shape names {name!r}, but the inputs are: {', '.join(sorted(known))}")
    for inp in inputs:
        shape = shapes.get(inp.name, shapes.get(None))
        dims = inp.type.tensor_type.shape.dim
        if shape is not None:
            if len(dims) and len(shape) != len(dims):
                raise UserError(f"--input-shape for {inp.name!r} has rank {len(shape)}, the model says {len(dims)}")
            inp.type.tensor_type.shape.Clear()
            for d in shape:
                inp.type.tensor_type.shape.dim.add().dim_value = d
        elif any(not d.HasField("dim_value") or d.dim_value <= 0 for d in dims) or not dims:
            raise UserError(
                f"{source}: input {inp.name!r} has a dynamic shape; give it with --input-shape {inp.name}:1x3x224x224")


def initializer_stubs(initializers) -> Iterator[onnx.TensorProto]:
    """Small constants as they are (shape inference reads shapes and axes from them), large ones
    reduced to name, type and dims."""
    for init in initializers:
        numel = 1
        for d in init.dims:
            numel *= d
        if numel <= 4096 and init.data_location != onnx.TensorProto.EXTERNAL:
            yield init
        else:
            yield onnx.TensorProto(name=init.name, dims=init.dims, data_type=init.data_type)


def _skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with large initializers reduced to name, type and dims (shape inference reads no more)."""
    from hwprune_fx.frontends.onnx_external import structure_copy

    skel = structure_copy(model)
    skel.graph.initializer.extend(initializer_stubs(model.graph.initializer))
    return skel


def infer_shapes_static(model: onnx.ModelProto) -> onnx.ModelProto:
    """Shape inference on a weight-free skeleton; the inferred value_info is copied back.

    Serialising hundreds of megabytes of weights for shape inference is the slowest step
    of loading a large model, and impossible above 2 GB.
    """
    inferred = onnx.shape_inference.infer_shapes(_skeleton(model), data_prop=True)
    del model.graph.value_info[:]
    model.graph.value_info.extend(inferred.graph.value_info)
    del model.graph.output[:]
    model.graph.output.extend(inferred.graph.output)
    return model


def prepare_graph(model: onnx.ModelProto, input_shapes: dict[str | None, list[int]] | None = None,
                  source: str = "model") -> gs.Graph:
    """Static input shapes, constants folded, shapes inferred: the graph every pass works on.

    ``model`` itself gets the static input shapes (callers pass a model they own).
    """
    _apply_input_shapes(model, input_shapes or {}, source)
    for vi in list(model.graph.value_info):
        model.graph.value_info.remove(vi)
    try:
        model = infer_shapes_static(model)
        graph = gs.import_onnx(model)
        for _ in range(3):  # folding shapes can expose more constant sub-graphs
            before = len(graph.nodes)
            graph.fold_constants().cleanup().toposort()
            if len(graph.nodes) == before:
                break
        _unique_node_names(graph)
        model = infer_shapes_static(gs.export_onnx(graph))
    except onnx.shape_inference.InferenceError as exc:
        raise UserError(f"{source}: ONNX shape inference failed: {str(exc).splitlines()[0]}") from None
    graph = gs.import_onnx(model)
    for t in graph.tensors().values():
        # load every constant once into numpy and let the proto go: the graph then holds the
        # weights a single time (lazy values would keep the whole proto alive and load copies)
        if isinstance(t, gs.Constant):
            t.values = np.asarray(t.values)
    return graph


def _unique_node_names(graph: gs.Graph) -> None:
    """Every node gets a unique, stable name: plans and reports refer to operators by name."""
    seen: set[str] = set()
    for i, n in enumerate(graph.nodes):
        name = n.name or f"{n.op}_{i}"
        while name in seen:
            name = f"{name}_{i}"
        seen.add(name)
        n.name = name


def save_onnx(model: onnx.ModelProto, path: str | os.PathLike, *, check: bool = True) -> Path:
    """Check (full, with shape inference) and write atomically; external data above 2 GB."""
    dest = Path(path)
    if check:
        if fits_in_protobuf(model):
            onnx.checker.check_model(model, full_check=True)
    big = not fits_in_protobuf(model)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=str(dest.parent))
    os.close(fd)
    data_name = dest.name + ".data"
    try:
        if big:
            from hwprune_fx.frontends.onnx_external import save_with_external_data

            save_with_external_data(model, tmp, data_name + ".tmp")
            if check:
                onnx.checker.check_model(tmp, full_check=True)
            os.replace(str(dest.parent / (data_name + ".tmp")), str(dest.parent / data_name))
            _rewrite_external_location(tmp, data_name)
        else:
            onnx.save_model(model, tmp)
        os.replace(tmp, dest)
    except BaseException:
        for leftover in (tmp, str(dest.parent / (data_name + ".tmp"))):
            if os.path.exists(leftover):
                os.unlink(leftover)
        raise
    return dest


def _rewrite_external_location(model_path: str, location: str) -> None:
    m = onnx.load(model_path, load_external_data=False)
    for init in m.graph.initializer:
        for entry in init.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save_model(m, model_path)
