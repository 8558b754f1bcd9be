"""The oracle: pruned output == original output with every removed slot forced to zero.

``removed_channels`` (as written in the report) names, for every tensor of the original
graph that loses channels, the axis and the indices. The oracle multiplies each of those
tensors by a 0/1 mask right where it is produced, runs both networks in onnxruntime on the
same inputs and compares every output.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from hwprune_fx.frontends.onnx_io import fits_in_protobuf, infer_shapes_static, initializer_stubs, runtime_source

__all__ = ["OracleResult", "mask_removed_channels", "run_onnx", "onnx_oracle", "relative_error",
           "random_inputs", "compare_outputs"]


@dataclass(frozen=True)
class OracleResult:
    max_rel_error: float
    max_abs_error: float
    tolerance: float

    @property
    def exact(self) -> bool:
        return self.max_rel_error < self.tolerance


def relative_error(ref: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    """(max |ref - got| / max(|ref|), max |ref - got|)."""
    ref = np.asarray(ref, np.float64)
    got = np.asarray(got, np.float64)
    if ref.shape != got.shape:
        return float("inf"), float("inf")
    abs_err = float(np.max(np.abs(ref - got))) if ref.size else 0.0
    scale = float(np.max(np.abs(ref))) if ref.size else 1.0
    return abs_err / max(scale, 1e-12), abs_err


def mask_removed_channels(model: onnx.ModelProto, removed_channels: dict[str, dict],
                          with_weights: bool = True) -> onnx.ModelProto:
    """A copy of ``model`` with every listed tensor multiplied by its keep-mask at its producer.

    With ``with_weights=False`` the copy holds only the masks (a large model's weights are
    then supplied from ``model`` when it is written, see :func:`run_onnx`).
    """
    if with_weights:
        m = onnx.ModelProto()
        m.CopyFrom(model)
    else:
        from hwprune_fx.frontends.onnx_external import structure_copy

        m = structure_copy(model)
    inferred = infer_shapes_static(m if with_weights else _with_initializer_shapes(m, model))
    ranks = {vi.name: len(vi.type.tensor_type.shape.dim)
             for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    sizes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
             for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    produced = {o for n in m.graph.node for o in n.output}
    new_nodes = []
    for node in m.graph.node:
        new_nodes.append(node)
        for out in node.output:
            entry = removed_channels.get(out)
            if entry is None:
                continue
            if out not in ranks:
                raise ValueError(f"oracle: rank of {out!r} unknown")
            shape = [1] * ranks[out]
            c = sizes[out][entry["axis"]]
            shape[entry["axis"]] = c
            mask = np.ones(c, np.float32)
            mask[np.asarray(entry["indices"], np.int64)] = 0.0
            mname = f"{out}__oracle_mask"
            m.graph.initializer.append(numpy_helper.from_array(mask.reshape(shape), mname))
            new_nodes.append(helper.make_node("Mul", [out + "__oracle_raw", mname], [out]))
            node.output[list(node.output).index(out)] = out + "__oracle_raw"
    missing = set(removed_channels) - produced
    if missing - {i.name for i in m.graph.input}:
        raise ValueError(f"oracle: tensors not produced by any node: {sorted(missing)[:3]}")
    del m.graph.node[:]
    m.graph.node.extend(new_nodes)
    del m.graph.value_info[:]
    if any(len(o.type.tensor_type.shape.dim) for o in model.graph.output):
        del m.graph.output[:]
        m.graph.output.extend(model.graph.output)
    return m


def _with_initializer_shapes(light: onnx.ModelProto, full: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``light`` with data-free stand-ins of ``full``'s large initializers, for shape inference."""
    m = onnx.ModelProto()
    m.CopyFrom(light)
    m.graph.initializer.extend(initializer_stubs(full.graph.initializer))
    return m


def random_inputs(model: onnx.ModelProto, seed: int = 0, batch: int = 2) -> dict[str, np.ndarray]:
    """Normal-distributed float inputs at the model's static shapes."""
    rng = np.random.default_rng(seed)
    inits = {i.name for i in model.graph.initializer}
    feeds = {}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        dims = [d.dim_value if d.dim_value > 0 else batch for d in inp.type.tensor_type.shape.dim]
        feeds[inp.name] = rng.standard_normal(dims).astype(np.float32)
    return feeds


def run_onnx(model: onnx.ModelProto | str, feeds: dict[str, np.ndarray],
             weights_from: onnx.ModelProto | None = None) -> list[np.ndarray]:
    """Run a model in onnxruntime (CPU, all optimisations off so nothing is re-ordered)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    if isinstance(model, str):
        return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"]).run(None, feeds)
    if weights_from is not None:
        from hwprune_fx.frontends.onnx_external import save_with_external_data

        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.onnx")
            save_with_external_data(model, path, "model.onnx.data", initializers_from=weights_from)
            return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"]).run(None, feeds)
    with runtime_source(model) as src:
        return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"]).run(None, feeds)


def onnx_oracle(original: onnx.ModelProto, pruned: onnx.ModelProto, removed_channels: dict[str, dict],
                feeds: dict[str, np.ndarray] | None = None, tolerance: float = 1e-3) -> OracleResult:
    """Compare the pruned network against the masked original on the same inputs."""
    feeds = feeds or random_inputs(original)
    if fits_in_protobuf(original):
        ref = run_onnx(mask_removed_channels(original, removed_channels), feeds)
    else:  # above 2 GB: never copy the weights, stream them to disk from the original
        ref = run_onnx(mask_removed_channels(original, removed_channels, with_weights=False), feeds,
                       weights_from=original)
    return compare_outputs(ref, run_onnx(pruned, feeds), tolerance)


def compare_outputs(ref: list[np.ndarray], got: list[np.ndarray], tolerance: float = 1e-3) -> OracleResult:
    """The largest relative and absolute error over all outputs, judged against ``tolerance``."""
    rel, ab = 0.0, 0.0
    for r, g in zip(ref, got):
        e_rel, e_abs = relative_error(r, g)
        rel, ab = max(rel, e_rel), max(ab, e_abs)
    return OracleResult(rel, ab, tolerance)
