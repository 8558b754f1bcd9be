"""Instruments wrap every pass (TVM's PassInstrument): timing, verification, records.

Passes stay pure; what is measured about them lives here, and the same instruments feed
the reports.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from hwprune_fx.pass_infra.base import PassBase, PassResult

__all__ = ["PassInstrument", "TimingInstrument", "VerifyInstrument"]


class PassInstrument:
    """Hooks called around each pass; override what you need."""

    def before_pass(self, p: PassBase, model: Any) -> None:  # noqa: D401 - hook
        pass

    def after_pass(self, p: PassBase, result: PassResult) -> None:
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


@dataclass
class VerifyInstrument(PassInstrument):
    """Run a verifier (e.g. ONNX checker, ``verify``) on the model after every pass."""

    verifier: Callable[[Any], None]

    def after_pass(self, p: PassBase, result: PassResult) -> None:
        self.verifier(result.model)
