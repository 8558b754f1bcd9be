"""ONNX -> Relax for the ``tvm-llvm`` target: the two modules tuning and compiling need.

``ONNX -> Relax (static shapes) -> Decompose/Canonicalize -> base``, and
``base -> zero_pipeline -> legalized``. Tasks are extracted from the legalized module, but
``compile_relax`` must get ``base``: given the legalized one it silently ignores the
tuning database and emits naive loops (30-80x slower).
"""
from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

__all__ = ["RelaxModules", "graph_inputs", "import_onnx", "compile_tuned"]


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
                target: Any) -> RelaxModules:
    """Relax modules for ``model`` with every input shape fixed to the shape of its feed.

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
        base = tvm.transform.Sequential([relax.transform.DecomposeOpsForInference(),
                                         relax.transform.CanonicalizeBindings()])(mod)
        legalized = relax.pipeline.zero_pipeline()(base)
    return RelaxModules(base=base, legalized=legalized)


def compile_tuned(tvm: types.ModuleType, modules: RelaxModules, database: Any, target: Any) -> Any:
    """A Relax VM executable whose fused kernels come from ``database``."""
    from tvm.s_tir import meta_schedule as ms

    return ms.relax_integration.compile_relax(database, modules.base, target, None)
