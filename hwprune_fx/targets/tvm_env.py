"""The environment TVM runs in: the LLVM target for this CPU, threads, and a lazy import.

Importing TVM costs seconds (it imports torch when torch is installed), so nothing here
imports it at module level: the CLI must start without it. The LLVM target names the CPU
explicitly because ``mcpu=native`` is refused or falls back to generic x86-64 (no AVX2)
in TVM 0.27, and ``num-cores`` is required by MetaSchedule. The thread count is set
through ``TVM_NUM_THREADS`` before the runtime's thread pool starts, since the runtime
otherwise picks half the reported CPUs and never changes its mind afterwards. The other
``tvm_*`` modules take the module :func:`import_tvm` returns as their first argument, so
nothing reaches TVM before its threads are fixed.
"""
from __future__ import annotations

import functools
import os
import sys
import types
from pathlib import Path
from typing import Any, Callable

from hwprune_fx.errors import BackendError

__all__ = ["import_tvm", "set_threads", "detect_target", "detect_mcpu", "cpu_flags", "process_cpus",
           "available_cores", "worker_initializer", "init_worker",
           "load_cpu_tensor_intrin", "UNUSED_TENSOR_INTRIN"]

# Tensor-intrinsic submodules a CPU build never uses. Importing them in every MetaSchedule
# build worker takes ~40 s here (27 s of it CUDA), past the builder's time-out.
UNUSED_TENSOR_INTRIN = ("cuda", "rocm", "hexagon", "riscv_cpu", "arm_cpu", "metal")

# LLVM feature name -> /proc/cpuinfo flag, for the x86 features that change code generation.
_X86_FEATURES = {
    "avx": "avx", "avx2": "avx2", "fma": "fma", "f16c": "f16c", "bmi2": "bmi2",
    "sse4.1": "sse4_1", "sse4.2": "sse4_2", "avx512f": "avx512f", "avx512bw": "avx512bw",
    "avx512vl": "avx512vl", "avx512dq": "avx512dq", "avx512vnni": "avx512_vnni",
    "avxvnni": "avx_vnni", "amx-tile": "amx_tile",
}
# Generic x86-64 micro-architecture levels, best first, with the flags each one needs.
_X86_LEVELS = (
    ("x86-64-v4", {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx2", "fma"}),
    ("x86-64-v3", {"avx2", "fma", "bmi2", "f16c"}),
    ("x86-64-v2", {"sse4_2", "popcnt"}),
)


# The CPUs this process could use before TVM's thread pool (when binding) pinned it.
_CPUS_BEFORE_TVM: frozenset[int] | None = None


def import_tvm(threads: int) -> types.ModuleType:
    """Import TVM with its runtime fixed to ``threads`` threads.

    Why: ``TVM_NUM_THREADS`` is read once, when the thread pool starts; a process that
    already runs TVM with another count cannot be changed, and timing it would report
    numbers taken with threads nobody asked for.
    """
    set_threads(threads)
    global _CPUS_BEFORE_TVM
    if _CPUS_BEFORE_TVM is None and hasattr(os, "sched_getaffinity"):
        _CPUS_BEFORE_TVM = frozenset(os.sched_getaffinity(0))
    try:
        import tvm
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError("the tvm-llvm target needs apache-tvm: pip install 'hwprune-fx[tvm]'") from exc
    actual = int(tvm.runtime.num_threads())
    if actual != threads:
        raise BackendError(f"TVM runtime already runs {actual} threads in this process; "
                           f"{threads} requested (TVM_NUM_THREADS is fixed once TVM starts)")
    return tvm


def set_threads(threads: int) -> None:
    """Export ``TVM_NUM_THREADS`` so this process and its tuning workers use ``threads``.

    Also ``TVM_BIND_THREADS=0`` unless the user chose otherwise: when TVM's pool starts it
    pins the *calling* thread to one core, which in a library call is the host program's
    main thread -- every later computation and every child process of that program would
    be confined to a single core.
    """
    if threads < 1:
        raise BackendError(f"thread count must be >= 1, got {threads}")
    os.environ["TVM_NUM_THREADS"] = str(threads)
    os.environ.setdefault("TVM_BIND_THREADS", "0")


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU feature flags from ``/proc/cpuinfo`` (x86 ``flags`` or Arm ``Features``)."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text() if path.exists() else ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def _llvm_cpu_features(tvm: types.ModuleType, mcpu: str) -> set[str]:
    features = tvm.get_global_func("target.llvm_get_cpu_features")(
        tvm.target.Target({"kind": "llvm", "mcpu": mcpu}))
    return {str(name) for name in features.keys()}


def _missing_x86_features(tvm: types.ModuleType, mcpu: str, flags: set[str]) -> list[str]:
    implied = _llvm_cpu_features(tvm, mcpu)
    return sorted(feat for feat, flag in _X86_FEATURES.items() if feat in implied and flag not in flags)


def detect_mcpu(tvm: types.ModuleType, flags: set[str] | None = None) -> str:
    """The ``mcpu`` LLVM should compile for on this machine.

    Why: LLVM's host-CPU name comes from CPUID, but a hypervisor may hide features the
    model nominally has (AVX-512 on a cloud VM); code using them would crash. The name is
    kept only if every feature it implies is listed in ``/proc/cpuinfo``; otherwise the
    best generic x86-64 level the flags support is used.
    """
    flags = cpu_flags() if flags is None else flags
    host = str(tvm.get_global_func("target.llvm_get_system_cpu")())
    is_valid = tvm.get_global_func("target.llvm_is_valid_cpu")
    is_x86 = "sse2" in flags or "avx" in flags
    if host and host != "generic" and is_valid(host, ""):
        if not is_x86 or not _missing_x86_features(tvm, host, flags):
            return host
    if is_x86:
        for level, needs in _X86_LEVELS:
            if needs <= flags and is_valid(level, ""):
                return level
        return "x86-64"
    if host and is_valid(host, ""):
        return host
    raise BackendError(f"LLVM does not know this CPU ({host or 'unknown'}); pass an explicit target")


def detect_target(tvm: types.ModuleType, num_cores: int | None = None) -> dict[str, Any]:
    """The LLVM target dict for this machine: ``{"kind": "llvm", "mcpu": ..., "num-cores": N}``."""
    return {"kind": "llvm", "mcpu": detect_mcpu(tvm), "num-cores": int(num_cores or available_cores())}


def process_cpus() -> frozenset[int]:
    """CPUs this process may run on, as they were before TVM could pin the main thread.

    Why: with ``TVM_BIND_THREADS`` on, TVM's thread pool binds the calling thread to one
    core when it starts; the affinity mask would then report a single core, and worker
    processes spawned from that thread would inherit it.
    """
    if _CPUS_BEFORE_TVM is not None:
        return _CPUS_BEFORE_TVM
    if hasattr(os, "sched_getaffinity"):
        return frozenset(os.sched_getaffinity(0))
    return frozenset(range(os.cpu_count() or 1))


def available_cores() -> int:
    """How many CPUs this process may use (the affinity mask, not the machine's total)."""
    return len(process_cpus())


def worker_initializer() -> Callable[[], None]:
    """The ``initializer`` to give MetaSchedule's ``LocalBuilder`` and ``LocalRunner``."""
    return functools.partial(init_worker, tuple(sorted(process_cpus())))


def init_worker(cpus: tuple[int, ...] = ()) -> None:
    """Run in every MetaSchedule build/run worker before it builds anything.

    Why: the worker's build function imports every tensor intrinsic (see
    :func:`load_cpu_tensor_intrin`), and it gets back the CPUs TVM's pinning took from the
    process that spawned it, so builds run in parallel.
    """
    if cpus and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, cpus)
        except OSError:
            pass  # a narrower cgroup than the parent's: keep what the worker was given
    load_cpu_tensor_intrin()


def load_cpu_tensor_intrin() -> None:
    """Import ``tvm.s_tir.tensor_intrin`` without the intrinsics a CPU build never uses.

    Why: importing it registers CUDA, ROCm, Hexagon, RISC-V, Arm and Metal intrinsics too,
    ~35-45 s on this machine; MetaSchedule does it in the tuning process and in every build
    worker, where it exceeds the 30 s build time-out and every trial fails. Empty modules
    stand in for the unused submodules during the import and are removed afterwards, so a
    later explicit ``import tvm.s_tir.tensor_intrin.cuda`` still loads the real one.
    """
    base = "tvm.s_tir.tensor_intrin"
    if base in sys.modules:
        return
    stubs = {}
    for name in UNUSED_TENSOR_INTRIN:
        full = f"{base}.{name}"
        if full not in sys.modules:
            stubs[name] = sys.modules[full] = types.ModuleType(full)
    try:
        import tvm.s_tir.tensor_intrin as package  # registers the x86 intrinsics once
    finally:
        for name, stub in stubs.items():
            if sys.modules.get(f"{base}.{name}") is stub:
                del sys.modules[f"{base}.{name}"]
    for name, stub in stubs.items():
        if getattr(package, name, None) is stub:
            delattr(package, name)
