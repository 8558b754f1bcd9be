"""Backend protocol: compile a network for a target and time it honestly.

Every backend warms up, repeats, reports the median and spread, and runs with a fixed,
recorded thread count. ``measure`` caches results on disk keyed by (model content hash,
target, settings) so that asking twice costs nothing.
"""
from __future__ import annotations

import abc
import copy
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import onnx

from hwprune_fx.errors import UserError
from hwprune_fx.targets.measurement import Measurement

__all__ = ["TimingConfig", "Backend", "register_backend", "create_backend", "available_backends",
           "model_hash", "default_cache_dir"]


def default_cache_dir() -> Path:
    return Path(os.environ.get("HWPRUNE_FX_CACHE", Path.home() / ".cache" / "hwprune-fx"))


@dataclass(frozen=True)
class TimingConfig:
    """How to time: warm-up runs, timed repeats, threads, batch of the random input."""

    warmup: int = 5
    repeat: int = 30
    threads: int = 1
    min_seconds: float = 0.0  # keep repeating until at least this much time was measured

    def key(self) -> dict[str, Any]:
        return {"warmup": self.warmup, "repeat": self.repeat, "threads": self.threads,
                "min_seconds": self.min_seconds}


def model_hash(model: onnx.ModelProto) -> str:
    """Content hash of a model (graph and weights), stable across runs."""
    h = hashlib.sha256()
    for init in model.graph.initializer:  # weights one by one: the whole graph may exceed 2 GB
        h.update(init.SerializeToString(deterministic=True))
    for node in model.graph.node:
        h.update(node.SerializeToString(deterministic=True))
    for vi in list(model.graph.input) + list(model.graph.output):
        h.update(vi.SerializeToString(deterministic=True))
    for op in model.opset_import:
        h.update(f"{op.domain}:{op.version}".encode())
    return h.hexdigest()[:32]


class Backend(abc.ABC):
    """Compile-and-time for one target. Subclasses implement :meth:`_time_onnx`."""

    name: ClassVar[str] = "backend"
    description: ClassVar[str] = ""
    requires: ClassVar[str] = ""

    def __init__(self, timing: TimingConfig | None = None, cache_dir: str | os.PathLike | None = None,
                 use_cache: bool = True) -> None:
        self.timing = timing or TimingConfig()
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.use_cache = use_cache

    def with_timing(self, timing: TimingConfig) -> "Backend":
        """The same backend (shared compile caches and database) timing with ``timing``."""
        clone = copy.copy(self)
        clone.timing = timing
        return clone

    def settings(self) -> dict[str, Any]:
        """Everything besides the model that changes the number (versions, threads, flags)."""
        return {"target": self.name, **self.timing.key()}

    def spawn_spec(self) -> dict[str, Any] | None:
        """What :func:`create_backend` needs to build this backend again in another process
        (JSON), or None where that costs more than it is worth (TVM would compile again)."""
        return None

    @abc.abstractmethod
    def _time_onnx(self, model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> Measurement:
        """Compile ``model`` and time it on ``feeds``."""

    def block_timer(self, model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> Callable[[], Measurement]:
        """A callable that times one block of ``timing.repeat`` runs, for interleaved rounds.

        The default compiles on every block; backends that can keep a compiled model warm
        between blocks (ort-cpu: one session) override it so each block is only timed runs.
        """
        return lambda: self._time_onnx(model, feeds)

    def measure(self, model: onnx.ModelProto, feeds: dict[str, np.ndarray] | None = None) -> Measurement:
        """Measured latency of ``model``, from the on-disk cache when the same question was asked."""
        from hwprune_fx.oracle import random_inputs

        settings = self.settings()
        key = hashlib.sha256(json.dumps([model_hash(model), settings], sort_keys=True).encode()).hexdigest()[:40]
        path = self.cache_dir / "measurements" / f"{key}.json"
        if self.use_cache and path.exists():
            return Measurement.from_dict(json.loads(path.read_text()))
        result = self._time_onnx(model, feeds or random_inputs(model, batch=1))
        if self.use_cache:
            from hwprune_fx.emit.files import write_json_atomic

            path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(path, result.to_dict())
        return result


_REGISTRY: dict[str, Callable[..., Backend]] = {}


def register_backend(cls: type[Backend]) -> type[Backend]:
    _REGISTRY[cls.name] = cls
    return cls


def available_backends() -> dict[str, type[Backend]]:
    from hwprune_fx.targets import ort_cpu  # noqa: F401  (registration)

    for optional in ("tvm_llvm", "torch_eager"):
        try:
            __import__(f"hwprune_fx.targets.{optional}")
        except ImportError:
            pass
    return dict(_REGISTRY)  # type: ignore[arg-type]


def create_backend(name: str, **kwargs: Any) -> Backend:
    """A backend by target name (``ort-cpu``, ``tvm-llvm``, ``torch``)."""
    backends = available_backends()
    if name not in backends:
        raise UserError(f"unknown target {name!r}; available: {', '.join(sorted(backends))}")
    return backends[name](**kwargs)
