"""``torch``: eager PyTorch timing of a module (for users who deploy with PyTorch).

ONNX files cannot be timed here (there is no ONNX-to-torch importer among our
dependencies); use the Python API with the ``torch.nn.Module`` / fx ``GraphModule``.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from hwprune_fx.errors import UserError
from hwprune_fx.targets.base import Backend, register_backend
from hwprune_fx.targets.measurement import Measurement, summarize, time_calls

__all__ = ["TorchEagerBackend"]


@register_backend
class TorchEagerBackend(Backend):
    name = "torch"
    description = "PyTorch eager mode on the CPU (times torch modules, Python API)"
    requires = "torch (installed)"

    def settings(self) -> dict[str, Any]:
        import torch

        return {**super().settings(), "torch": torch.__version__}

    def _time_onnx(self, model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> Measurement:
        """An ONNX network is timed as the torch module onnx2torch rebuilds from it (the same ops
        a user deploying with PyTorch runs)."""
        import torch
        from onnx2torch import convert

        try:
            module = convert(model)
        except Exception as exc:  # noqa: BLE001 - the converter's own error, on one line
            raise UserError(f"target 'torch': onnx2torch cannot rebuild this network ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''}); use --target ort-cpu") from None
        inputs = tuple(torch.from_numpy(np.asarray(v)) for v in feeds.values())
        return self.measure_module(module, inputs)

    def measure_module(self, module: Any, example_inputs: tuple) -> Measurement:
        """Median eager latency of ``module(*example_inputs)`` under ``torch.inference_mode``."""
        import torch

        previous = torch.get_num_threads()
        torch.set_num_threads(self.timing.threads)
        try:
            module = module.eval()
            with torch.inference_mode():
                t = self.timing
                samples = time_calls(lambda: module(*example_inputs), t.warmup, t.repeat, t.min_seconds)
        finally:
            torch.set_num_threads(previous)
        return summarize(self.name, samples, self.timing.warmup, self.timing.threads, self.settings())
