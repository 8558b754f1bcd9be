"""``bench``: run several pass pipelines on one model and compare them in one measurement session.

    model ──► pipeline 1 ──► model 1 ┐
          ──► pipeline 2 ──► model 2 ├─► one session, interleaved rounds ─► table / JSON / PNG
          ──► ...                    ┘   (original included)

Every pipeline runs through :meth:`hwprune_fx.Pipeline.run` with the same
:class:`~hwprune_fx.pass_infra.PassContext` (target, threads, seed, calibration data) and two
instruments: :class:`~hwprune_fx.pass_infra.TimingInstrument` (time per pass) and
:class:`~hwprune_fx.pass_infra.LatencyInstrument` (params and MACs after every pass, the
predicted figures). The final latencies are then measured together: for each of ``repeat``
rounds, each model (the original first, the order rotated every round) gets one timed block,
so that machine drift over the session falls on every pipeline alike. A row's latency is the
median of its round medians, its spread the 10th/90th percentiles of those.

Fidelity is measured against the original on the same inputs (the calibration data, or
``fidelity_samples`` random draws from ``seed``): top-1 agreement and KL(softmax) over the
first output's axis 1 (the class axis of a classifier), and the max absolute error over all
outputs. A pipeline that fails (an unreachable budget, say) gives a row with its error; the
others still run.

The module is ``benchmark`` rather than ``bench`` so that importing it never replaces the
top-level function :func:`hwprune_fx.bench` with a module of the same name.
"""
from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from hwprune_fx.errors import UserError
from hwprune_fx.pass_infra.pipeline_text import Pipeline

__all__ = ["BenchRow", "BenchResult", "bench", "fidelity", "measure_interleaved", "ORIGINAL"]

#: The pipeline label of the original model's row.
ORIGINAL = "(original)"


@dataclass
class BenchRow:
    """One pipeline's outcome. ``error`` is set (and the figures are None) when it failed.

    ``predicted_from`` says where ``predicted_ms`` comes from: ``"search"`` (the prune pass's
    last predicted step) or ``"macs"`` (the original's measured latency scaled by MACs).
    """

    pipeline: str
    error: str | None = None
    modified: bool = False
    median_ms: float | None = None
    p10_ms: float | None = None
    p90_ms: float | None = None
    round_ms: list[float] = field(default_factory=list)
    speedup: float | None = None
    predicted_ms: float | None = None
    predicted_from: str | None = None
    params: int | None = None
    macs: int | None = None
    fidelity: dict[str, float] | None = None
    passes: list[dict[str, Any]] = field(default_factory=list)
    latency_records: list[dict[str, Any]] = field(default_factory=list)
    model: Any = None  # the output ModelProto; not in to_dict()

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def pass_seconds(self) -> float:
        return float(sum(p["seconds"] for p in self.passes))

    def to_dict(self) -> dict[str, Any]:
        return {"pipeline": self.pipeline, "ok": self.ok, "error": self.error, "modified": self.modified,
                "measured": {"median_ms": self.median_ms, "p10_ms": self.p10_ms, "p90_ms": self.p90_ms,
                             "round_ms": list(self.round_ms)},
                "speedup": self.speedup,
                "predicted": {"ms": self.predicted_ms, "from": self.predicted_from},
                "params": self.params, "macs": self.macs, "fidelity": self.fidelity,
                "passes": list(self.passes), "pass_seconds": self.pass_seconds if self.passes else 0.0,
                "latency_records": list(self.latency_records)}


@dataclass
class BenchResult:
    """All rows (the original first) and how they were measured."""

    model: str
    target: str
    threads: int
    repeat: int
    runs_per_round: int
    seed: int
    fidelity_inputs: str
    rows: list[BenchRow]
    measure_seconds: float = 0.0

    @property
    def original(self) -> BenchRow:
        return self.rows[0]

    @property
    def pipelines(self) -> list[BenchRow]:
        """The pipeline rows, without the original."""
        return self.rows[1:]

    def row(self, pipeline: str | Pipeline) -> BenchRow:
        key = str(pipeline)
        for r in self.rows:
            if r.pipeline == key:
                return r
        raise KeyError(key)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "target": self.target, "threads": self.threads, "repeat": self.repeat,
                "runs_per_round": self.runs_per_round, "seed": self.seed, "fidelity_inputs": self.fidelity_inputs,
                "measure_seconds": self.measure_seconds, "rows": [r.to_dict() for r in self.rows]}

    def table(self) -> str:
        """The human-readable table (see :func:`hwprune_fx.emit.bench_report.bench_table`)."""
        from hwprune_fx.emit.bench_report import bench_table

        return bench_table(self.to_dict())


# ---------------------------------------------------------------------------- fidelity

def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fidelity(reference: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> dict[str, float]:
    """Top-1 agreement, max absolute error and mean KL(softmax(ref) || softmax(out)).

    Top-1 and KL are taken over axis 1 of the first output (classes of an ``(N, C)``
    classifier; channels per position of an ``(N, C, ...)`` map); an output with fewer than
    two dimensions is one row. Max abs error covers every output.
    """
    if len(reference) != len(outputs):
        raise ValueError(f"{len(reference)} reference outputs but {len(outputs)} outputs")
    max_abs = 0.0
    for a, b in zip(reference, outputs):
        if a.shape != b.shape:
            raise ValueError(f"output shape {b.shape} differs from the original's {a.shape}")
        if a.size:
            max_abs = max(max_abs, float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))))
    ref, out = (np.asarray(t, dtype=np.float64) for t in (reference[0], outputs[0]))
    if ref.ndim < 2:
        ref, out = ref.reshape(1, -1), out.reshape(1, -1)
    ref, out = (t.reshape(t.shape[0], t.shape[1], -1) for t in (ref, out))
    top1 = float(np.mean(ref.argmax(axis=1) == out.argmax(axis=1)))
    p, q = _softmax(ref), _softmax(out)
    kl = np.sum(p * (np.log(np.clip(p, 1e-30, None)) - np.log(np.clip(q, 1e-30, None))), axis=1)
    return {"top1_agreement": top1, "max_abs_error": max_abs, "kl_div": float(max(0.0, np.mean(kl)))}


def _fidelity_feeds(model: Any, calib: Any, seed: int, samples: int) -> tuple[list[dict[str, np.ndarray]], str]:
    """Feed dicts for the fidelity check and a description of where they come from."""
    from hwprune_fx.calib import model_input_specs, resolve_calibration
    from hwprune_fx.oracle import random_inputs

    specs = model_input_specs(model)
    if calib is not None:
        data = resolve_calibration(calib, specs)
        batch = {s[0] for s in specs.values() if s and s[0] is not None}
        size = batch.pop() if len(batch) == 1 else 8
        return list(data.batches(size)), f"calibration data {data.source} ({data.num_samples} samples)"
    return ([random_inputs(model, seed=seed + i, batch=1) for i in range(samples)],
            f"{samples} random normal draws (seed {seed})")


def _run_all(model: Any, feeds: Sequence[dict[str, np.ndarray]]) -> list[np.ndarray]:
    """Outputs on every feed, concatenated on the batch axis (one onnxruntime session, no graph rewrites)."""
    import onnxruntime as ort

    from hwprune_fx.frontends.onnx_io import runtime_source

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    with runtime_source(model) as src:
        sess = ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])
        runs = [sess.run(None, f) for f in feeds]
    return [np.concatenate([r[i] for r in runs], axis=0) if runs[0][i].ndim else runs[0][i]
            for i in range(len(runs[0]))]


# ---------------------------------------------------------------------------- measurement

def measure_interleaved(models: Sequence[Any], *, target: str = "ort-cpu", threads: int = 1, rounds: int = 3,
                        runs_per_round: int = 10, warmup: int = 5, feeds: dict[str, np.ndarray] | None = None,
                        cache_dir: str | os.PathLike | None = None, backend_options: Mapping[str, Any] | None = None,
                        progress: Callable[[str], None] | None = None) -> list[list[float]]:
    """Round medians (ms) per model: ``rounds`` rounds, one timed block per model each round.

    The model order rotates every round, so no model is always timed first or last. On
    ``ort-cpu`` every model gets one session for the whole run (warmed up before round 1);
    other targets time each block as one uncached compile-and-run (``Backend.block_timer``).
    """
    from hwprune_fx.oracle import random_inputs
    from hwprune_fx.targets import TimingConfig, create_backend
    from hwprune_fx.targets.side_by_side import round_medians

    if rounds < 1 or runs_per_round < 1:
        raise UserError("repeat (rounds) and runs per round must be >= 1")
    feeds = feeds if feeds is not None else random_inputs(models[0], batch=1)
    backend = create_backend(target, timing=TimingConfig(warmup=warmup, repeat=runs_per_round, threads=threads),
                             cache_dir=cache_dir, use_cache=False, **dict(backend_options or {}))
    return round_medians(backend, models, rounds, [feeds] * len(models), progress)[0]


def _quantile(vals: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(vals, dtype=np.float64), 100.0 * q))


# ---------------------------------------------------------------------------- the benchmark

def _predicted(records: Sequence[Any]) -> float | None:
    """The prune pass's last predicted latency (ms), if a prune pass ran and predicted one."""
    value = None
    for rec in records:
        report = rec.details.get("report") if isinstance(rec.details, Mapping) else None
        if rec.name == "prune" and isinstance(report, Mapping):
            for step in report.get("steps") or ():
                predicted = step.get("predicted_ms")
                if predicted is not None and math.isfinite(predicted):  # HILP/uniform steps are measured only
                    value = float(predicted)
    return value


def _error_text(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0] if msg else ''}".rstrip(": ")


def bench(model: Any, pipelines: Sequence[str | Pipeline], *, target: str = "ort-cpu", calib: Any = None,
          repeat: int = 3, threads: int = 1, seed: int = 0, runs_per_round: int = 10, warmup: int = 5,
          search_repeat: int = 20, fidelity_samples: int = 8, cache_dir: str | os.PathLike | None = None,
          input_shapes: Mapping[str | None, list[int]] | None = None,
          backend_options: Mapping[str, Any] | None = None,
          progress: Callable[[str], None] | None = None) -> BenchResult:
    """Run each pipeline on ``model`` and measure every output (and the original) together.

    Args:
        model: an ONNX path or ``onnx.ModelProto``.
        pipelines: pipeline texts or :class:`Pipeline` objects; all are parsed before any work,
            so a typo fails at once (:class:`UserError`).
        target: where latency is measured (the passes' context and the final session).
        calib: calibration data (path or ``CalibrationData``) for data-driven criteria; also the
            fidelity inputs when given.
        repeat: interleaved measurement rounds.
        threads: fixed thread count for every measurement.
        seed: seed of the random inputs and of the passes' context.
        runs_per_round: timed runs in each model's block of a round (their median is the round's).
        warmup: untimed runs before timing.
        search_repeat: timed runs per measurement inside passes (``PassContext.repeat``).
        fidelity_samples: random input draws for the fidelity check (without ``calib``).
        cache_dir: measurement / look-up-table cache for the passes.
        input_shapes: static input shapes for models with dynamic dimensions.
        backend_options: extra ``create_backend`` keyword arguments (e.g. TVM's ``tune_trials``).
        progress: callback receiving one-line progress messages.
    """
    import onnx

    from hwprune_fx.oracle import random_inputs
    from hwprune_fx.pass_infra import LatencyInstrument, PassContext, TimingInstrument
    from hwprune_fx.pass_infra.registry import pass_info
    from hwprune_fx.frontends.onnx_io import load_onnx

    if repeat < 1 or threads < 1 or runs_per_round < 1:
        raise UserError("repeat, threads and runs_per_round must be >= 1")
    parsed = [p if isinstance(p, Pipeline) else Pipeline.parse(p) for p in pipelines]
    if not parsed:
        raise UserError("give at least one pipeline")
    say = progress or (lambda msg: None)
    name = os.fspath(model) if isinstance(model, (str, os.PathLike)) else (getattr(model.graph, "name", "") or "model")
    original = load_onnx(os.fspath(model)) if isinstance(model, (str, os.PathLike)) else model
    if not isinstance(original, onnx.ModelProto):
        raise UserError(f"bench takes an ONNX path or ModelProto, not {type(original).__name__}")
    ctx = PassContext(target=target, threads=threads, repeat=search_repeat, cache_dir=cache_dir, calib=calib,
                      input_shapes=input_shapes, progress=progress, seed=seed,
                      backend_options=backend_options)

    base = BenchRow(ORIGINAL, model=original)
    with ctx:
        base_lat = LatencyInstrument(measure_final=False)
        base_lat.enter_run(original)
    base.params, base.macs = base_lat.records[0].params, base_lat.records[0].macs
    base.latency_records = [r.to_dict() for r in base_lat.records]
    rows = [base]
    run_records: list[list[Any]] = [[]]
    for i, pipe in enumerate(parsed):
        row = BenchRow(str(pipe))
        rows.append(row)
        run_records.append([])
        say(f"pipeline {i + 1}/{len(parsed)}: {pipe}")
        timing, latency = TimingInstrument(), LatencyInstrument(measure_final=False)
        source = original
        if any(pass_info(s.name).cls.in_place for s in pipe.specs):  # every run starts from the same model
            source = onnx.ModelProto()
            source.CopyFrom(original)
        try:
            result = pipe.run(source, context=ctx, instruments=[timing, latency])
        except Exception as exc:  # noqa: BLE001 - one failing pipeline must not stop the others
            row.error = _error_text(exc)
            say(f"pipeline {i + 1} failed: {row.error}")
            continue
        if not isinstance(result.model, onnx.ModelProto):
            row.error = f"the pipeline produced a {type(result.model).__name__}, not an ONNX model"
            continue
        row.model, row.modified = result.model, result.modified
        row.passes = [{"name": n, "spec": str(s), "seconds": sec, "modified": mod}
                      for (n, sec, mod), s in zip(timing.records, pipe.specs)]
        row.latency_records = [r.to_dict() for r in latency.records]
        last = latency.records[-1]
        row.params, row.macs = last.params, last.macs
        run_records[-1] = result.records

    ok = [r for r in rows if r.ok]
    feeds = random_inputs(original, seed=seed, batch=1)
    say(f"measuring {len(ok)} models on {target}: {repeat} interleaved rounds x {runs_per_round} runs")
    t0 = time.perf_counter()
    rounds = measure_interleaved([r.model for r in ok], target=target, threads=threads, rounds=repeat,
                                 runs_per_round=runs_per_round, warmup=warmup, feeds=feeds, cache_dir=cache_dir,
                                 backend_options=backend_options, progress=progress)
    measure_seconds = time.perf_counter() - t0
    for r, ms in zip(ok, rounds):
        r.round_ms = ms
        r.median_ms = statistics.median(ms)
        r.p10_ms, r.p90_ms = _quantile(ms, 0.1), _quantile(ms, 0.9)

    fid_feeds, fid_source = _fidelity_feeds(original, calib, seed, fidelity_samples)
    reference = _run_all(original, fid_feeds)
    base_ms = base.median_ms
    for r, records in zip(rows, run_records):
        if not r.ok:
            continue
        r.speedup = base_ms / r.median_ms if base_ms and r.median_ms else None
        r.fidelity = fidelity(reference, reference if r is base else _run_all(r.model, fid_feeds))
        searched = _predicted(records)
        if searched is not None:
            r.predicted_ms, r.predicted_from = searched, "search"
        elif base_ms is not None and r.macs and base.macs:
            r.predicted_ms, r.predicted_from = base_ms * r.macs / base.macs, "macs"
    return BenchResult(name, target, threads, repeat, runs_per_round, seed, fid_source, rows, measure_seconds)
