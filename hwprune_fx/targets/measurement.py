"""A timing result, honest about how it was taken."""
from __future__ import annotations

import math
import statistics
import time
from typing import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Measurement", "summarize", "time_calls"]


@dataclass(frozen=True)
class Measurement:
    """Median latency with its spread and the settings that produced it."""

    target: str
    median_ms: float
    p10_ms: float
    p90_ms: float
    repeats: int
    warmup: int
    threads: int
    settings: dict[str, Any] = field(default_factory=dict)

    median_se_ms: float = 0.0   # the median's standard error, if the samples are independent

    @property
    def spread_ms(self) -> float:
        return self.p90_ms - self.p10_ms

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["spread_ms"] = self.spread_ms
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Measurement":
        """The inverse of :meth:`to_dict` (its derived ``spread_ms`` dropped): caches and other processes."""
        return cls(**{k: v for k, v in data.items() if k != "spread_ms"})


def _quantile(sorted_vals: list[float], q: float) -> float:
    if len(sorted_vals) == 1:
        return sorted_vals[0]
    pos = q * (len(sorted_vals) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (pos - lo)


def summarize(target: str, samples_ms: list[float], warmup: int, threads: int,
              settings: dict[str, Any] | None = None) -> Measurement:
    """Median and 10th/90th percentiles of per-run times in milliseconds, and the median's
    standard error (sqrt(pi/2) x sd / sqrt(n), for a normal sample): the uncertainty a
    confirmation puts on top of per-round medians, which shrinks as rounds are added where the
    spread over rounds does not (it is the rounds' own noise, not the median's)."""
    vals = sorted(samples_ms)
    se = 1.2533 * statistics.stdev(vals) / math.sqrt(len(vals)) if len(vals) > 1 else 0.0
    return Measurement(target=target, median_ms=statistics.median(vals), p10_ms=_quantile(vals, 0.1),
                       p90_ms=_quantile(vals, 0.9), repeats=len(vals), warmup=warmup, threads=threads,
                       settings=dict(settings or {}), median_se_ms=se)


def time_calls(fn: Callable[[], object], warmup: int, repeat: int, min_seconds: float = 0.0) -> list[float]:
    """Milliseconds of each timed call of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < repeat or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return samples
