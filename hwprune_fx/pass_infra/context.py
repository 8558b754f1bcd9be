"""PassContext: what passes and instruments may read besides the model (TVM's PassContext).

A pass keeps ``call(model) -> PassResult``; the few that need the measurement target, the
calibration data or the cache (``prune``, the latency instrument) read
:meth:`PassContext.current`. ``Pipeline.run`` enters a context; an embedding user does it
themselves::

    with PassContext(target="ort-cpu", threads=2):
        PassManager([create_pass("prune", budget="60%")])(model)

Contexts nest per thread / asyncio task (a ``contextvars.ContextVar`` holds the stack).
"""
from __future__ import annotations

import contextvars
import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from hwprune_fx.errors import UserError

__all__ = ["PassContext"]

_STACK: contextvars.ContextVar[tuple["PassContext", ...]] = contextvars.ContextVar("hwprune_fx_pass_context",
                                                                                   default=())


@dataclass(frozen=True)
class PassContext:
    """Configuration shared by every pass of a run.

    Attributes:
        target: backend that measures latency (``ort-cpu``, ``tvm-llvm``, ...).
        threads: fixed thread count for timing.
        repeat: timed runs per measurement (median).
        cache_dir: measurement / look-up-table cache (None: the backend's default).
        calib: calibration data for data-driven criteria (a ``CalibrationData``, a dict of
            arrays or a path), or None.
        input_shapes: static input shapes for models with dynamic dimensions.
        progress: callback receiving one-line progress messages.
        seed: seed of random inputs (oracle checks) and of anything else random.
        backend_options: extra keyword arguments for ``create_backend``.
    """

    target: str = "ort-cpu"
    threads: int = 1
    repeat: int = 20
    cache_dir: str | os.PathLike | None = None
    calib: Any = None
    input_shapes: Mapping[str | None, list[int]] | None = None
    progress: Callable[[str], None] | None = None
    seed: int = 0
    backend_options: Mapping[str, Any] | None = None

    @staticmethod
    def current() -> "PassContext":
        """The innermost entered context, or the defaults when none is entered."""
        stack = _STACK.get()
        return stack[-1] if stack else PassContext()

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def replace(self, **changes: Any) -> "PassContext":
        """A copy with ``changes``; an unknown field is a :class:`UserError` naming the valid ones."""
        unknown = sorted(set(changes) - set(self.field_names()))
        if unknown:
            raise UserError(f"unknown pass-context option(s) {', '.join(unknown)}; "
                            f"valid: {', '.join(self.field_names())}")
        return dataclasses.replace(self, **changes)

    def say(self, message: str) -> None:
        """Send ``message`` to the progress callback, if any."""
        if self.progress is not None:
            self.progress(message)

    def __enter__(self) -> "PassContext":
        _STACK.set(_STACK.get() + (self,))
        return self

    def __exit__(self, *exc: object) -> None:
        stack = _STACK.get()
        if not stack or stack[-1] is not self:  # pragma: no cover - misuse
            raise RuntimeError("PassContext exited out of order")
        _STACK.set(stack[:-1])
