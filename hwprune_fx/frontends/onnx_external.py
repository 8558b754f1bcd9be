"""Writing models above 2 GB without copying them in memory or touching the caller's proto.

``onnx.save_model(..., save_as_external_data=True)`` moves the weights out of the proto it
is given (the caller's model loses its data), and ``ByteSize()``/``CopyFrom`` of a 2 GB
model doubles memory. Here weights stream to the data file one tensor at a time, and the
small graph proto that points at them is built fresh.
"""
from __future__ import annotations

import os

import onnx
from onnx import numpy_helper

__all__ = ["save_with_external_data", "structure_copy"]


def structure_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """Everything but the initializers (graph structure, io, opsets, metadata)."""
    out = onnx.ModelProto()
    out.ir_version = model.ir_version
    out.producer_name = model.producer_name
    out.producer_version = model.producer_version
    out.opset_import.extend(model.opset_import)
    out.functions.extend(model.functions)
    out.metadata_props.extend(model.metadata_props)
    g = out.graph
    g.name = model.graph.name
    g.node.extend(model.graph.node)
    g.input.extend(model.graph.input)
    g.output.extend(model.graph.output)
    g.value_info.extend(model.graph.value_info)
    return out


def save_with_external_data(model: onnx.ModelProto, path: str | os.PathLike, location: str,
                            initializers_from: onnx.ModelProto | None = None, threshold: int = 1024) -> None:
    """Write ``model`` to ``path`` with tensors above ``threshold`` bytes in ``location`` (beside it).

    Args:
        initializers_from: take the initializers from this model instead (same names), so a
            re-wired copy of a large graph need not hold the weights itself.
    """
    light = structure_copy(model)
    data_path = os.path.join(os.path.dirname(os.fspath(path)) or ".", location)
    offset = 0
    sources = list(model.graph.initializer)
    if initializers_from is not None:
        own = {t.name for t in sources}
        sources += [t for t in initializers_from.graph.initializer if t.name not in own]
    with open(data_path, "wb") as fh:
        for t in sources:
            data = t.raw_data if t.HasField("raw_data") else numpy_helper.to_array(t).tobytes()
            if len(data) <= threshold:
                light.graph.initializer.append(t)
                continue
            pad = (-offset) % 4096
            fh.write(b"\0" * pad)
            offset += pad
            fh.write(data)
            ref = onnx.TensorProto(name=t.name, dims=t.dims, data_type=t.data_type,
                                   data_location=onnx.TensorProto.EXTERNAL)
            for key, value in (("location", location), ("offset", str(offset)), ("length", str(len(data)))):
                entry = ref.external_data.add()
                entry.key, entry.value = key, value
            light.graph.initializer.append(ref)
            offset += len(data)
    onnx.save_model(light, os.fspath(path))
