"""``--budget``: absolute (``12ms``, ``800us``), relative to the measured baseline (``60%``) or a
speed-up (``1.8x``). Malformed budgets are usage errors."""
from __future__ import annotations

import re
from dataclasses import dataclass

from hwprune_fx.errors import UserError

__all__ = ["Budget", "parse_budget"]

_RE = re.compile(r"^\s*(?P<num>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(?P<unit>ms|us|µs|s|%|x)\s*$")


@dataclass(frozen=True)
class Budget:
    kind: str     # "ms", "percent" or "speedup"
    value: float
    text: str

    def target_ms(self, baseline_ms: float) -> float:
        """The latency to reach, given the measured baseline."""
        if self.kind == "ms":
            return self.value
        if self.kind == "percent":
            return baseline_ms * self.value / 100.0
        return baseline_ms / self.value


def parse_budget(text: str) -> Budget:
    m = _RE.match(text or "")
    if not m:
        raise UserError(f"--budget {text!r}: expected e.g. 12ms, 800us, 60% or 1.8x")
    num, unit = float(m["num"]), m["unit"]
    if num <= 0:
        raise UserError(f"--budget {text!r}: must be positive")
    if unit == "%":
        if num >= 100:
            raise UserError(f"--budget {text!r}: a relative budget must be below 100%")
        return Budget("percent", num, text)
    if unit == "x":
        if num <= 1:
            raise UserError(f"--budget {text!r}: a speed-up must be above 1x")
        return Budget("speedup", num, text)
    ms = {"ms": num, "us": num / 1e3, "µs": num / 1e3, "s": num * 1e3}[unit]
    return Budget("ms", ms, text)
