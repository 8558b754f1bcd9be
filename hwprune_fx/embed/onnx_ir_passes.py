"""hwprune-fx passes inside an ``onnx_ir`` pass pipeline.

    onnx_ir.passes.PassManager([OnnxIrPass("fold-bn"), OnnxIrPass("prune-ratio", ratio=0.3),
                                OnnxIrPass("cleanup")])(ir_model)
        -> onnx_ir.passes.PassResult(model, modified)

Each :class:`OnnxIrPass` is an ``onnx_ir.passes.FunctionalPass``: the ``onnx_ir.Model`` is
serialized (``onnx_ir.serde.serialize_model``), the registered hwprune-fx pass runs on the
``ModelProto`` under the current :class:`~hwprune_fx.pass_infra.PassContext` (target,
threads, calibration data, seed: what ``prune`` measures with), and the result is
deserialized into a new ``onnx_ir.Model``. The input model is never changed. When the
pass changes nothing, ``modified`` is False and the returned model is a fresh copy of the
input (onnx_ir requires a functional pass to return a new object).

Every registered pass that works on ONNX can be wrapped (``fold-bn``, ``prune-ratio``,
``prune``, ``align``, ``cleanup``, ...); options are checked by the registry, so a typo
fails when the pass is built.
"""
from __future__ import annotations

from typing import Any

import onnx_ir as ir
from onnx_ir.passes import FunctionalPass, PassResult

from hwprune_fx.pass_infra import Pipeline, create_pass
from hwprune_fx.pass_infra.registry import resolve_options

__all__ = ["OnnxIrPass", "onnx_ir_passes"]


class OnnxIrPass(FunctionalPass):
    """A registered hwprune-fx pass as an ``onnx_ir`` functional pass.

    Args:
        name: registered pass name (``hwprune-fx passes`` lists them).
        *args: at most one value, for the pass's first option.
        **options: the pass's options, by name (text or Python values).
    """

    def __init__(self, name: str, /, *args: Any, **options: Any) -> None:
        self.pass_name = name
        self.options = resolve_options(name, args, options)  # unknown pass / option / value: UserError
        self.details: dict[str, Any] = {}  # the last run's pass details (e.g. prune-ratio's removed channels)

    def __repr__(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in self.options.items())
        return f"OnnxIrPass({self.pass_name}{'(' + opts + ')' if opts else ''})"

    def call(self, model: ir.Model) -> PassResult:
        proto = ir.serde.serialize_model(model)
        result = create_pass(self.pass_name, **self.options)(proto)
        self.details = dict(result.details)
        return PassResult(ir.serde.deserialize_model(result.model), bool(result.modified))


def onnx_ir_passes(text: str | Pipeline) -> list[OnnxIrPass]:
    """``onnx_ir`` passes for pipeline text, e.g. ``onnx_ir_passes("fold-bn,prune-ratio(ratio=0.3),cleanup")``."""
    pipeline = text if isinstance(text, Pipeline) else Pipeline.parse(text)
    return [OnnxIrPass(spec.name, **spec.options) for spec in pipeline]
