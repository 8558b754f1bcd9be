"""Our passes inside other compile pipelines, one module each (imported on demand).

- :mod:`hwprune_fx.embed.torch_fx`: ``FxPass`` for ``torch.fx.passes.infra.pass_manager.PassManager``;
- :mod:`hwprune_fx.embed.onnx_ir_passes`: ``OnnxIrPass`` for ``onnx_ir.passes.PassManager``;
- :mod:`hwprune_fx.embed.tvm_build`: ``prune_and_build``, pruning as the first stage of a TVM build.

Nothing is imported here, so importing one embedding does not import the others' frameworks.
"""
from __future__ import annotations

__all__: list[str] = []
