"""``ort-cpu``: onnxruntime's CPU execution provider, full graph optimisation, fixed threads."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np
import onnx

from hwprune_fx.targets.base import Backend, register_backend
from hwprune_fx.targets.measurement import Measurement, summarize, time_calls

__all__ = ["OrtCpuBackend"]


@register_backend
class OrtCpuBackend(Backend):
    name = "ort-cpu"
    description = "onnxruntime CPU execution provider (the embedded default)"
    requires = "onnxruntime (installed)"

    def settings(self) -> dict[str, Any]:
        import onnxruntime as ort

        return {**super().settings(), "onnxruntime": ort.__version__, "opt_level": "all"}

    def spawn_spec(self) -> dict[str, Any]:
        """A session costs a fraction of a second: another process rebuilds this backend cheaply."""
        return {"target": self.name, "timing": dataclasses.asdict(self.timing)}

    def session(self, model: onnx.ModelProto) -> Any:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.timing.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        from hwprune_fx.frontends.onnx_io import runtime_source

        with runtime_source(model) as src:
            return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])

    def _time_onnx(self, model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> Measurement:
        sess = self.session(model)
        t = self.timing
        samples = time_calls(lambda: sess.run(None, feeds), t.warmup, t.repeat, t.min_seconds)
        return summarize(self.name, samples, t.warmup, t.threads, self.settings())

    def block_timer(self, model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> Callable[[], Measurement]:
        """One session for every block; warmed up once here, so blocks are timed runs only."""
        sess = self.session(model)
        t = self.timing
        time_calls(lambda: sess.run(None, feeds), t.warmup, 0)

        def block() -> Measurement:
            samples = time_calls(lambda: sess.run(None, feeds), 0, t.repeat, t.min_seconds)
            return summarize(self.name, samples, 0, t.threads, self.settings())
        return block
