"""ONNX -> Relax for the ``tvm-llvm`` target: the two modules tuning and compiling need.

``ONNX -> Relax (static shapes) -> Decompose -> convs to NHWC -> fold constants ->
Canonicalize -> base``, and ``base -> zero_pipeline -> legalized``. Tasks are extracted from
the legalized module, but ``compile_relax`` must get ``base``: given the legalized one it
silently ignores the tuning database and emits naive loops (30-80x slower).
"""
from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

__all__ = ["RelaxModules", "CONV_LAYOUT", "graph_inputs", "import_onnx", "compile_tuned"]

#: data and kernel layout every conv is compiled in. ONNX's NCHW puts the channels, which a
#: conv's inner loop should vectorise over, outermost. Over 3 tuning runs each at 64 trials,
#: ResNet-18's 64->64 3x3 conv ran at a median 1.38x onnxruntime's time in NHWC (the two
#: transposes at the ends included) and 1.47x in NCHW; the runs' ranges overlap
#: (benchmarks/results/tvm_layout.md). The weights are transposed once, at compile time
#: (FoldConstant); ConvertLayout carries the layout through the element-wise ops and pools
#: between convs, so a network transposes only at its ends.
CONV_LAYOUT = ("NHWC", "HWIO")


@dataclass(frozen=True)
class RelaxModules:
    """The un-legalized module to compile and the legalized one to extract tasks from."""

    base: Any
    legalized: Any


def graph_inputs(model: onnx.ModelProto) -> list[str]:
    """Names of the real inputs in graph order (initializers listed as inputs excluded)."""
    inits = {init.name for init in model.graph.initializer}
    return [inp.name for inp in model.graph.input if inp.name not in inits]


def import_onnx(tvm: types.ModuleType, model: onnx.ModelProto, feeds: dict[str, np.ndarray],
                target: Any, conv_layout: tuple[str, str] | None = CONV_LAYOUT) -> RelaxModules:
    """Relax modules for ``model`` with every input shape fixed to the shape of its feed, its
    convs in ``conv_layout`` (data, kernel; None: as imported, NCHW/OIHW).

    Why static: MetaSchedule tunes one shape per workload, and the database key is the
    shape-specialised PrimFunc, so a symbolic batch would never hit the database.
    """
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    names = graph_inputs(model)
    shapes = {name: list(feeds[name].shape) for name in names}
    dtypes = {name: str(feeds[name].dtype) for name in names}
    mod = from_onnx(model, shape_dict=shapes, dtype_dict=dtypes)
    with target:
        layout = ([relax.transform.ConvertLayout({"relax.nn.conv2d": list(conv_layout)}),
                   relax.transform.FoldConstant()] if conv_layout else [])
        base = tvm.transform.Sequential([relax.transform.DecomposeOpsForInference(), *layout,
                                         relax.transform.CanonicalizeBindings()])(mod)
        legalized = relax.pipeline.zero_pipeline()(base)
    return RelaxModules(base=base, legalized=legalized)


def compile_tuned(tvm: types.ModuleType, modules: RelaxModules, database: Any, target: Any) -> Any:
    """A Relax VM executable whose fused kernels come from ``database``."""
    from tvm.s_tir import meta_schedule as ms

    return ms.relax_integration.compile_relax(database, modules.base, target, None)
