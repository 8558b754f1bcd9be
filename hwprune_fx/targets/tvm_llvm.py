"""``tvm-llvm``: TVM Relax + MetaSchedule on the CPU, timed locally or on an RPC device.

``ONNX -> Relax -> tune the workloads the database lacks -> compile_relax -> VM timing``.
A workload left untuned compiles to naive loops 30-80x slower than tuned code, so timing
it would score a layer by a compiler gap, not by its shape: that is an error unless
``allow_untuned=True`` says otherwise, and then the count travels with the number.

With an RPC tracker, the model is compiled here for the CPU detected here and run on
the server registered under ``rpc_key``: the remote device must execute that code (same
ISA and features). Tuning candidates are then measured on the remote device too.

Importing this module does not import TVM (the CLI must start without it); TVM is
imported when a backend first needs it.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import types
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import onnx

from hwprune_fx.errors import BackendError, UserError
from hwprune_fx.targets.base import Backend, TimingConfig, model_hash, register_backend
from hwprune_fx.targets.measurement import Measurement, summarize
from hwprune_fx.targets.tvm_relax import CONV_LAYOUT
from hwprune_fx.targets.tvm_tune import TuningReport

__all__ = ["TvmLlvmBackend"]

# Executables kept in memory: measure/run/export of one model compile once, while a
# pruning loop over hundreds of candidates does not hold every executable it made.
_KEEP_COMPILED = 4


@dataclass(frozen=True)
class _Compiled:
    """An executable and what tuning it cost."""

    executable: Any
    report: TuningReport


@register_backend
class TvmLlvmBackend(Backend):
    """Tuned TVM code for this CPU (or a remote one), timed with the Relax VM's evaluator."""

    name = "tvm-llvm"
    description = "TVM Relax + MetaSchedule, LLVM CPU target (tuned; optional RPC device)"
    requires = "apache-tvm (pip install 'hwprune-fx[tvm]')"

    def __init__(self, timing: TimingConfig | None = None, cache_dir: str | os.PathLike | None = None,
                 use_cache: bool = True, *, tune_trials: int = 64, rpc_tracker: str | None = None,
                 rpc_key: str | None = None, allow_untuned: bool = False,
                 progress: Callable[[str], None] | None = None, tune_batch: int | None = None,
                 conv_layout: tuple[str, str] | None = CONV_LAYOUT) -> None:
        super().__init__(timing, cache_dir, use_cache)
        from hwprune_fx.targets.tvm_tune import TRIALS_PER_BATCH
        from hwprune_fx.targets.tvm_rpc import parse_tracker

        if tune_trials < 0:
            raise UserError(f"tune_trials must be >= 0, got {tune_trials}")
        if tune_batch is not None and tune_batch < 1:
            raise UserError(f"tune_batch must be >= 1, got {tune_batch}")
        if rpc_tracker is not None:
            parse_tracker(rpc_tracker)
            if not rpc_key:
                raise UserError("an RPC tracker needs a device key (rpc_key)")
        elif rpc_key is not None:
            raise UserError("rpc_key given without rpc_tracker")
        self.tune_trials = tune_trials
        self.tune_batch = tune_batch or TRIALS_PER_BATCH   # trials measured before the cost model is refitted
        self.conv_layout = tuple(conv_layout) if conv_layout else None   # None: NCHW, as imported
        self.rpc_tracker = rpc_tracker
        self.rpc_key = rpc_key
        self.allow_untuned = allow_untuned
        self.progress = progress   # a line per workload as tuning starts it
        self._tvm_module: types.ModuleType | None = None
        self._target: dict[str, Any] | None = None
        self._compiled: OrderedDict[str, _Compiled] = OrderedDict()
        self._last_report: TuningReport | None = None

    # -- environment -------------------------------------------------------------------

    @property
    def _tvm(self) -> types.ModuleType:
        if self._tvm_module is None:
            from hwprune_fx.targets.tvm_env import import_tvm

            self._tvm_module = import_tvm(self.timing.threads)
        return self._tvm_module

    def target_dict(self) -> dict[str, Any]:
        """The LLVM target: the detected CPU, with ``num-cores`` = the timing thread count.

        Why ``num-cores`` = threads: MetaSchedule sizes parallel loops by it, and the
        schedules it keeps are the fastest at the thread count they are measured with.
        """
        if self._target is None:
            from hwprune_fx.targets.tvm_env import detect_target

            self._target = detect_target(self._tvm, num_cores=self.timing.threads)
        return dict(self._target)

    def database_dir(self) -> Path:
        from hwprune_fx.targets.tvm_tune import database_dir

        return database_dir(self.cache_dir, self.target_dict())

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "tvm": str(self._tvm.__version__), "llvm_target": self.target_dict(),
                "tvm_num_threads": int(os.environ["TVM_NUM_THREADS"]),
                "tvm_bind_threads": os.environ.get("TVM_BIND_THREADS", "1"), "tune_trials": self.tune_trials,
                "tune_batch": self.tune_batch,
                "conv_layout": "/".join(self.conv_layout) if self.conv_layout else "NCHW/OIHW",
                "allow_untuned": self.allow_untuned,
                "rpc": f"{self.rpc_key}@{self.rpc_tracker}" if self.rpc_tracker else None}

    def tuning_report(self) -> TuningReport | None:
        """Tuning cost of the model compiled last (``None`` before any compile)."""
        return self._last_report

    # -- compile -------------------------------------------------------------------------

    def compile(self, model: onnx.ModelProto, feeds: dict[str, np.ndarray] | None = None) -> Any:
        """A Relax VM executable for ``model``, tuning the workloads the database lacks."""
        from hwprune_fx.oracle import random_inputs
        from hwprune_fx.targets import tvm_relax, tvm_tune

        feeds = feeds or random_inputs(model, batch=1)
        shapes = sorted((name, tuple(arr.shape), str(arr.dtype)) for name, arr in feeds.items())
        key = hashlib.sha256(repr((model_hash(model), shapes)).encode()).hexdigest()[:32]
        if key not in self._compiled:
            tvm = self._tvm
            target = tvm.target.Target(self.target_dict())
            modules = tvm_relax.import_onnx(tvm, model, feeds, target, self.conv_layout)
            db_dir = self.database_dir()
            database = tvm_tune.open_database(tvm, db_dir, self.target_dict())
            tasks = tvm_tune.extract_tasks(tvm, modules.legalized, target)
            report = tvm_tune.tune_missing(tvm, tasks, database, target, self.tune_trials,
                                           db_dir, make_runner=self._rpc_runner if self.rpc_tracker else None,
                                           progress=self.progress, batch=self.tune_batch)
            self._last_report = report
            self._check_untuned(report)
            self._compiled[key] = _Compiled(tvm_relax.compile_tuned(tvm, modules, database, target), report)
            while len(self._compiled) > _KEEP_COMPILED:
                self._compiled.popitem(last=False)
        self._compiled.move_to_end(key)
        self._last_report = self._compiled[key].report
        return self._compiled[key].executable

    def _rpc_runner(self) -> Any:
        """Tuning candidates measured on the RPC device, so the kept schedules are its best."""
        from hwprune_fx.targets.tvm_env import worker_initializer
        from hwprune_fx.targets.tvm_rpc import rpc_runner

        return rpc_runner(self._tvm, str(self.rpc_tracker), str(self.rpc_key), worker_initializer())

    def _check_untuned(self, report: TuningReport) -> None:
        if not report.still_untuned:
            return
        msg = (f"{report.still_untuned} of {report.workloads_total} TVM workloads have no tuned "
               f"schedule (tune_trials={self.tune_trials}); they would compile to naive loops")
        if not self.allow_untuned:
            raise BackendError(msg + "; raise tune_trials or pass allow_untuned=True")
        warnings.warn(msg + "; timing anyway (allow_untuned=True)", RuntimeWarning, stacklevel=3)

    # -- run and time --------------------------------------------------------------------

    def run(self, model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Outputs of the compiled model (on the RPC device when one is configured)."""
        executable = self.compile(model, feeds)
        with self._vm(executable, model) as (vm, dev, _):
            out = vm["main"](*self._inputs(model, feeds, dev))
            return _to_numpy(out)

    def _time_onnx(self, model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> Measurement:
        executable = self.compile(model, feeds)
        return self._time_executable(executable, model, feeds, self._last_report)

    def block_timer(self, model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> Callable[[], Measurement]:
        """Compiled once here; each block only times (the compile cache keeps a few models, and
        interleaved rounds over more would compile every block again)."""
        executable = self.compile(model, feeds)
        report = self._last_report
        return lambda: self._time_executable(executable, model, feeds, report)

    def _time_executable(self, executable: Any, model: onnx.ModelProto, feeds: dict[str, np.ndarray],
                         report: Any) -> Measurement:
        untuned = report.still_untuned if report else 0
        with self._vm(executable, model) as (vm, dev, threads):
            vm.set_input("main", *self._inputs(model, feeds, dev))
            samples = _time_vm(vm, dev, self.timing)
        if threads != self.timing.threads:
            warnings.warn(f"the RPC device runs {threads} TVM threads, {self.timing.threads} requested",
                          RuntimeWarning, stacklevel=2)
        settings = {**self.settings(), "untuned_workloads": untuned, "device_threads": threads}
        return summarize(self.name, samples, self.timing.warmup, threads, settings)

    def _inputs(self, model: onnx.ModelProto, feeds: dict[str, np.ndarray], dev: Any) -> list[Any]:
        from hwprune_fx.targets.tvm_relax import graph_inputs

        return [self._tvm.runtime.tensor(np.ascontiguousarray(feeds[name]), dev)
                for name in graph_inputs(model)]

    @contextlib.contextmanager
    def _vm(self, executable: Any, model: onnx.ModelProto) -> Iterator[tuple[Any, Any, int]]:
        """A Relax VM with its device and thread count: local, or on a fresh RPC session."""
        from tvm import relax

        tvm = self._tvm
        if self.rpc_tracker is None:
            yield relax.VirtualMachine(executable, tvm.cpu()), tvm.cpu(), int(tvm.runtime.num_threads())
            return
        from hwprune_fx.targets import tvm_rpc

        session = tvm_rpc.open_session(tvm, self.rpc_tracker, str(self.rpc_key))
        vm, dev = tvm_rpc.load_remote_vm(tvm, session, executable, f"hwprune_{model_hash(model)}")
        try:
            yield vm, dev, tvm_rpc.remote_threads(session)
        finally:
            del vm, session  # the last reference closes the remote session

    # -- deploy --------------------------------------------------------------------------

    def export_library(self, model: onnx.ModelProto, path: str | os.PathLike,
                       feeds: dict[str, np.ndarray] | None = None) -> Path:
        """Write the tuned model as a shared library a bare TVM runtime can load (atomic)."""
        executable = self.compile(model, feeds)
        dest = Path(path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.stem}.{os.getpid()}.tmp{dest.suffix or '.so'}")
        try:
            executable.export_library(str(tmp))
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return dest


def _time_vm(vm: Any, dev: Any, timing: TimingConfig) -> list[float]:
    """Per-run latencies in ms of the VM's stateful ``main`` (inputs already set).

    ``time_evaluator`` runs on the device itself (so an RPC round trip is not timed);
    ``number=1`` makes each repeat one run, and ``min_seconds`` stretches every repeat
    so that all of them together cover at least that long.
    """
    min_repeat_ms = int(np.ceil(timing.min_seconds * 1e3 / max(1, timing.repeat))) if timing.min_seconds else 0
    if timing.warmup:
        vm.time_evaluator("invoke_stateful", dev, number=1, repeat=timing.warmup)("main")
    result = vm.time_evaluator("invoke_stateful", dev, number=1, repeat=timing.repeat,
                               min_repeat_ms=min_repeat_ms)("main")
    return [float(sec) * 1e3 for sec in result.results]


def _to_numpy(out: Any) -> list[np.ndarray]:
    if hasattr(out, "numpy"):
        return [out.numpy()]
    return [arr for item in out for arr in _to_numpy(item)]
