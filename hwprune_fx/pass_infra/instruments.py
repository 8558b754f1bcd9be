"""Instruments wrap every pass (TVM's PassInstrument): timing, verification, records.

Passes stay pure; what is measured about them lives here, and the same instruments feed
the reports.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from hwprune_fx.errors import VerificationError
from hwprune_fx.pass_infra.base import PassBase, PassResult

__all__ = ["PassInstrument", "TimingInstrument", "VerifyInstrument", "verify_model", "LatencyRecord",
           "LatencyInstrument", "IRDumpInstrument"]


class PassInstrument:
    """Hooks called around each pass; override what you need.

    ``before_pass`` hooks run in instrument order and ``after_pass`` hooks in reverse order
    (instruments nest like context managers). ``enter_run`` / ``exit_run`` are called once
    by :meth:`hwprune_fx.pass_infra.pipeline_text.Pipeline.run` with the input and the final
    model (a bare :class:`PassManager` does not call them).
    """

    def enter_run(self, model: Any) -> None:
        pass

    def before_pass(self, p: PassBase, model: Any) -> None:  # noqa: D401 - hook
        pass

    def after_pass(self, p: PassBase, result: PassResult) -> None:
        pass

    def exit_run(self, model: Any) -> None:
        pass


@dataclass
class TimingInstrument(PassInstrument):
    """Wall time of every pass run, in order: ``[(name, seconds, modified)]``."""

    records: list[tuple[str, float, bool]] = field(default_factory=list)
    _start: float = 0.0

    def before_pass(self, p: PassBase, model: Any) -> None:
        self._start = time.perf_counter()

    def after_pass(self, p: PassBase, result: PassResult) -> None:
        self.records.append((p.name, time.perf_counter() - self._start, result.modified))

    def totals(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, sec, _ in self.records:
            out[name] = out.get(name, 0.0) + sec
        return out


def verify_model(model: Any) -> None:
    """Check a pipeline model: ONNX (``onnx.checker`` + the ChannelGraph ``verify``) or fx (``lint``).

    Raises:
        VerificationError: the model is malformed.
    """
    import onnx

    if isinstance(model, onnx.ModelProto):
        try:
            onnx.checker.check_model(model)
        except onnx.checker.ValidationError as exc:
            raise VerificationError(f"onnx.checker: {str(exc).splitlines()[0]}") from exc
        from hwprune_fx.pipeline import load_onnx_model  # builds the ChannelGraph and runs verify()

        load_onnx_model(model)
        return
    graph = getattr(model, "graph", None)
    if graph is not None and hasattr(graph, "lint"):
        try:
            graph.lint()
        except Exception as exc:  # noqa: BLE001 - fx lint raises plain RuntimeError
            raise VerificationError(f"torch.fx lint: {exc}") from exc
        return
    import onnx_graphsurgeon as gs

    if isinstance(model, gs.Graph):
        verify_model(gs.export_onnx(model.copy()))
        return
    raise VerificationError(f"cannot verify a {type(model).__name__}")


@dataclass
class VerifyInstrument(PassInstrument):
    """Run a verifier after every pass (default :func:`verify_model`); a failure names the pass."""

    verifier: Callable[[Any], None] = verify_model

    def after_pass(self, p: PassBase, result: PassResult) -> None:
        try:
            self.verifier(result.model)
        except VerificationError as exc:
            raise VerificationError(f"after pass {p.name!r}: {exc}") from exc


def _counts(model: Any) -> tuple[int | None, int | None]:
    """(params, MACs) of an ONNX model from its ChannelGraph; (None, None) for other models."""
    import onnx

    if not isinstance(model, onnx.ModelProto):
        return None, None
    from hwprune_fx.cost_models.flops import count_macs, count_params
    from hwprune_fx.pass_infra.context import PassContext
    from hwprune_fx.pipeline import load_onnx_model

    shapes = PassContext.current().input_shapes
    cg = load_onnx_model(model, dict(shapes) if shapes else None).channel_graph
    return count_params(cg), count_macs(cg)


@dataclass(frozen=True)
class LatencyRecord:
    """Latency figures of the model after one pass (``step`` 0 and ``pass_name`` "input": the input)."""

    step: int
    pass_name: str
    params: int | None
    macs: int | None
    measured_ms: float | None = None
    p10_ms: float | None = None
    p90_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class LatencyInstrument(PassInstrument):
    """Predicted latency after every pass (MACs, the cheap figure) and measured latency where asked.

    Measurement uses the :class:`PassContext` of the run (target, threads, repeat, cache) and
    happens after the passes named in ``measure_after`` (pass names), on the input when
    ``measure_input``, and on the final model when ``measure_final`` (the default).
    ``records`` holds one :class:`LatencyRecord` per step, the input first.
    """

    measure_after: Sequence[str] = ()
    measure_input: bool = False
    measure_final: bool = True
    records: list[LatencyRecord] = field(default_factory=list)

    def enter_run(self, model: Any) -> None:
        self.records.clear()
        self._record("input", model, self.measure_input)

    def after_pass(self, p: PassBase, result: PassResult) -> None:
        self._record(p.name, result.model, p.name in self.measure_after)

    def exit_run(self, model: Any) -> None:
        last = self.records[-1] if self.records else None
        if self.measure_final and last is not None and last.measured_ms is None:
            self.records[-1] = self._measured(last, model)

    def _record(self, name: str, model: Any, measure: bool) -> None:
        params, macs = _counts(model)
        rec = LatencyRecord(len(self.records), name, params, macs)
        self.records.append(self._measured(rec, model) if measure else rec)

    @staticmethod
    def _measured(rec: LatencyRecord, model: Any) -> LatencyRecord:
        import onnx

        if not isinstance(model, onnx.ModelProto):
            return rec
        from hwprune_fx.pass_infra.context import PassContext
        from hwprune_fx.targets import TimingConfig, create_backend

        ctx = PassContext.current()
        backend = create_backend(ctx.target, timing=TimingConfig(warmup=5, repeat=ctx.repeat, threads=ctx.threads),
                                 cache_dir=ctx.cache_dir, **dict(ctx.backend_options or {}))
        m = backend.measure(model)
        ctx.say(f"after {rec.pass_name}: {m.median_ms:.3f} ms on {ctx.target}")
        return LatencyRecord(rec.step, rec.pass_name, rec.params, rec.macs, m.median_ms, m.p10_ms, m.p90_ms)


@dataclass
class IRDumpInstrument(PassInstrument):
    """Write the model after every pass to ``folder/NN-passname.onnx`` (``00-input.onnx`` first).

    A model that is not ONNX is written as text (``.txt``: an fx GraphModule's code).
    """

    folder: str | os.PathLike
    written: list[Path] = field(default_factory=list)

    def enter_run(self, model: Any) -> None:
        self.written.clear()
        Path(self.folder).mkdir(parents=True, exist_ok=True)
        self._dump("input", model)

    def after_pass(self, p: PassBase, result: PassResult) -> None:
        if not self.written:  # used under a bare PassManager: no enter_run
            Path(self.folder).mkdir(parents=True, exist_ok=True)
        self._dump(p.name, result.model)

    def _dump(self, name: str, model: Any) -> None:
        import onnx

        stem = Path(self.folder) / f"{len(self.written):02d}-{name}"
        if isinstance(model, onnx.ModelProto):
            path = stem.with_suffix(".onnx")
            onnx.save(model, str(path))
        else:
            path = stem.with_suffix(".txt")
            path.write_text(str(getattr(model, "code", model)))
        self.written.append(path)
