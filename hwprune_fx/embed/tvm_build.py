"""Pruning as the first stage of a TVM build: prune to a budget measured on ``tvm-llvm``, compile.

    model.onnx -> prune(budget, measured by tuned TVM code) -> cleanup -> Relax -> tuned build
               -> TvmBuild(executable, library .so, pruned ONNX, report)

One call, :func:`prune_and_build`, runs the pipeline ``prune(...),cleanup`` with the
``tvm-llvm`` target in its :class:`~hwprune_fx.pass_infra.PassContext` (so every latency the
search sees comes from MetaSchedule-tuned code and the same tuning database), then compiles
the pruned network with that database and optionally exports a shared library that a bare
TVM runtime loads::

    vm = tvm.relax.VirtualMachine(tvm.runtime.load_module("model.so"), tvm.cpu())
    y = vm["main"](tvm.runtime.tensor(x))

Untuned workloads are never timed (the backend refuses unless ``allow_untuned``), and the
tuning budget is ``tune_trials`` per new workload. Tuning costs minutes per workload on a
small CPU, so searches that measure few distinct networks (``flops``, ``opti-cut`` with
alignment) are the practical ones here; ``uniform`` measures eight ratios.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import onnx

from hwprune_fx.pass_infra import Pipeline, PassSpec

__all__ = ["TvmBuild", "prune_and_build", "export_library", "LIBRARY_TARGETS"]

# Targets whose backend compiles to a shared library (``Backend.export_library``).
LIBRARY_TARGETS = ("tvm-llvm",)


@dataclass
class TvmBuild:
    """What :func:`prune_and_build` produced.

    Attributes:
        model: the pruned ONNX model.
        executable: the compiled Relax VM executable (``tvm.relax.VirtualMachine(executable, tvm.cpu())``).
        library: path of the exported shared library, or None when none was asked for.
        report: the prune pass's report (baseline, budget, final latency, steps...).
        modified: whether pruning changed the network.
        passes: one record per pass (name, spec, seconds, modified, details).
    """

    model: onnx.ModelProto
    executable: Any
    library: Path | None
    report: dict[str, Any]
    modified: bool
    passes: list[dict[str, Any]] = field(default_factory=list)

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Outputs of the compiled executable on the local CPU (graph-input order)."""
        import tvm
        from tvm import relax

        from hwprune_fx.targets.tvm_relax import graph_inputs

        vm = relax.VirtualMachine(self.executable, tvm.cpu())
        out = vm["main"](*[tvm.runtime.tensor(np.ascontiguousarray(feeds[n])) for n in graph_inputs(self.model)])
        return _to_numpy(out)


def _to_numpy(out: Any) -> list[np.ndarray]:
    if hasattr(out, "numpy"):
        return [out.numpy()]
    return [arr for item in out for arr in _to_numpy(item)]


def prune_and_build(model: str | os.PathLike | onnx.ModelProto, budget: str, *, target: str = "tvm-llvm",
                    search: str = "flops", criterion: str = "l1", align: int = 8, best_effort: bool = False,
                    threads: int = 1, repeat: int = 20, tune_trials: int = 64, allow_untuned: bool = False,
                    cache_dir: str | os.PathLike | None = None, export: str | os.PathLike | None = None,
                    calib: Any = None, seed: int = 0, progress: Callable[[str], None] | None = None,
                    backend_options: Mapping[str, Any] | None = None) -> TvmBuild:
    """Prune ``model`` to ``budget`` measured on the TVM target, then compile (and export) it.

    Args:
        model: ONNX path or ``ModelProto``.
        budget: ``12ms``, ``800us``, ``60%`` (of the measured input) or ``1.8x``.
        target: a TVM target name (``tvm-llvm``).
        search: ``flops`` (default: fewest distinct networks to tune), ``opti-cut``, ``hilp``, ``uniform``.
        criterion: importance criterion.
        align: channel multiple kept by the search.
        best_effort: keep the best network found when the budget is missed (else ``UnreachableBudget``).
        threads: TVM threads for tuning, timing and the target's ``num-cores``.
        repeat: timed runs per measurement.
        tune_trials: MetaSchedule trials per workload missing from the database.
        allow_untuned: time untuned workloads anyway (never a fair cost; off by default).
        cache_dir: tuning database and measurement cache.
        export: write the compiled shared library here (atomic), or None.
        calib: calibration data for data-driven criteria.
        seed: seed of random inputs.
        progress: callback receiving one-line progress messages.
        backend_options: further ``create_backend`` options (e.g. an RPC tracker and key).
    """
    from hwprune_fx.frontends.onnx_io import load_onnx

    options = {"tune_trials": tune_trials, "allow_untuned": allow_untuned, "progress": progress,
               **dict(backend_options or {})}
    pipeline = Pipeline([PassSpec.make("prune", budget=budget, search=search, criterion=criterion, align=align,
                                       best_effort=best_effort), PassSpec.make("cleanup")])
    source = load_onnx(os.fspath(model)) if isinstance(model, (str, os.PathLike)) else model
    result = pipeline.run(source, target=target, threads=threads, repeat=repeat, cache_dir=cache_dir, calib=calib,
                          seed=seed, progress=progress, backend_options=options)
    pruned = result.model
    backend = _library_backend(target, threads, repeat, cache_dir, options)
    if progress:
        progress(f"compiling the pruned network for {target}")
    executable = backend.compile(pruned)
    library = backend.export_library(pruned, export) if export is not None else None
    report = dict(result.record("prune").details.get("report", {}))
    return TvmBuild(pruned, executable, library, report, result.modified, [r.to_dict() for r in result.records])


def export_library(model: str | os.PathLike | onnx.ModelProto, path: str | os.PathLike, *, target: str = "tvm-llvm",
                   threads: int = 1, repeat: int = 20, tune_trials: int = 64, allow_untuned: bool = False,
                   cache_dir: str | os.PathLike | None = None, progress: Callable[[str], None] | None = None,
                   backend_options: Mapping[str, Any] | None = None) -> Path:
    """Compile ``model`` for ``target`` with its tuning database and write the shared library (atomic).

    The backend is built as the pruning search built it (same ``cache_dir``, ``threads`` and
    ``tune_trials``), so workloads the search tuned are found in the same database; the ones it
    lacks are tuned first, and an untuned workload is an error unless ``allow_untuned``.

    Raises:
        UserError: ``target`` does not compile to a library (see :data:`LIBRARY_TARGETS`).
    """
    from hwprune_fx.errors import UserError
    from hwprune_fx.frontends.onnx_io import load_onnx

    if target not in LIBRARY_TARGETS:
        raise UserError(f"target {target!r} does not compile to a shared library; use {' or '.join(LIBRARY_TARGETS)}")
    options = {"tune_trials": tune_trials, "allow_untuned": allow_untuned, "progress": progress,
               **dict(backend_options or {})}
    source = load_onnx(os.fspath(model)) if isinstance(model, (str, os.PathLike)) else model
    backend = _library_backend(target, threads, repeat, cache_dir, options)
    if progress:
        progress(f"compiling {Path(path).name} for {target} (tuning database {backend.database_dir()})")
    return backend.export_library(source, path)


def _library_backend(target: str, threads: int, repeat: int, cache_dir: str | os.PathLike | None,
                     options: Mapping[str, Any]) -> Any:
    from hwprune_fx.targets import TimingConfig, create_backend

    return create_backend(target, timing=TimingConfig(warmup=5, repeat=repeat, threads=threads),
                          cache_dir=cache_dir, **options)
