"""Latency vs kept channels for one layer: the staircase (HILP), cached on disk.

The counts are timed in interleaved rounds (each round times every count once, in a rotating
order) and each point is the median of its round medians. Timed one after another, a point
that met a moment of machine noise stayed in the look-up table, and Opti-Cut, which divides
importance by the milliseconds the table says a cut saves, cut the misjudged layer first:
on the digits ResNet of ``benchmarks/quality.py`` one busy-machine profile read a conv at
full width far slower than its identically shaped twin, and the plan Opti-Cut built on it
lost accuracy for no speed (a one-off check, not a benchmark).

Cache key: (target settings incl. runtime version and threads, how the points are timed,
layer signature, axis, channel counts), so that a second run is instant and a new runtime
re-measures.
"""
from __future__ import annotations

import hashlib
import json
import statistics
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np

from hwprune_fx.profiling.layers import Layer, synthetic_layer_model
from hwprune_fx.targets.base import Backend, TimingConfig

__all__ = ["Sweep", "sweep_layer", "default_counts", "class_counts", "SWEEP_ROUNDS", "DEPTHWISE_MULTIPLE"]

#: rounds over all counts; each block runs a third of the backend's repeats (so a sweep costs
#: about what one block per count did) and at least ``MIN_BLOCK_SECONDS``: a 20 us layer timed
#: 20 times is a 0.4 ms window, which one interruption fills
SWEEP_ROUNDS = 3
MIN_BLOCK_SECONDS = 0.003
#: above this many weight bytes over all counts (full width x counts), the counts are not all
#: held at once (VGG's 25088x4096 classifier is 400 MB per count)
KEEP_OPEN_BYTES = 512 << 20
#: depthwise widths are swept on and off this multiple, and looked up within their own class:
#: ort-cpu ran the depthwise convs of MobileNetV2 and EfficientNet-B0 2-7x slower one channel
#: off a multiple of 4 (``benchmarks/results/depthwise_comb.md``), so a curve through points
#: of both classes is wrong for either
DEPTHWISE_MULTIPLE = 4


@dataclass(frozen=True)
class Sweep:
    """Measured median latency (ms) of a layer at each kept channel count along one axis."""

    layer: str
    axis: str                  # "out", "in" or "both" (depthwise: in and out together)
    counts: tuple[int, ...]
    ms: tuple[float, ...]

    def at(self, count: float) -> float:
        """Piecewise-linear interpolation (flat beyond the ends)."""
        return float(np.interp(count, self.counts, self.ms))

    def at_in_class(self, count: int, multiple: int) -> float:
        """Interpolation between the points on ``multiple`` if ``count`` is on it, else between
        the points off it (all points when its class was not measured)."""
        points = self._class_points(multiple)[int(count) % multiple == 0]
        return self.at(count) if points is None else float(np.interp(count, *points))

    def _class_points(self, multiple: int) -> tuple[tuple[np.ndarray, np.ndarray] | None, ...]:
        """(counts, ms) off and on ``multiple`` (None: none measured), split once per multiple:
        the look-up sits in the searches' inner loop."""
        cache = self.__dict__.setdefault("_classes", {})   # not a field: equality and hashing ignore it
        if multiple not in cache:
            counts, ms = np.asarray(self.counts), np.asarray(self.ms)
            on = counts % multiple == 0
            cache[multiple] = tuple((counts[m], ms[m]) if m.any() else None for m in (~on, on))
        return cache[multiple]

    def steps(self, min_jump: float = 0.05) -> list[int]:
        """Counts where latency jumps by more than ``min_jump`` (relative) from the previous count."""
        out = []
        for (c0, m0), (c1, m1) in zip(zip(self.counts, self.ms), zip(self.counts[1:], self.ms[1:])):
            if m0 > 0 and (m1 - m0) / m0 > min_jump:
                out.append(c1)
        return out

    def to_dict(self) -> dict:
        return {"layer": self.layer, "axis": self.axis, "counts": list(self.counts), "ms": list(self.ms)}


def default_counts(full: int, points: int = 8, minimum: int = 1) -> list[int]:
    """``points`` counts spread over [full/8, full], always including ``full``."""
    lo = max(minimum, full // 8)
    return sorted({int(round(c)) for c in np.linspace(lo, full, points)} | {full})


def class_counts(full: int, points: int = 8, multiple: int = DEPTHWISE_MULTIPLE) -> list[int]:
    """``points`` counts on ``multiple`` spread over [full/8, full], each with its neighbour one
    below (off the multiple), and ``full``: a curve for each class of :meth:`Sweep.at_in_class`."""
    if full < 2 * multiple:
        return default_counts(full, points)
    on = {max(multiple, multiple * round(c / multiple)) for c in default_counts(full, points)}
    on = {c for c in on if c <= full}
    return sorted(on | {c - 1 for c in on} | {full})


def _axis_for(layer: Layer, axis: str) -> str:
    if layer.group > 1 and layer.group == layer.in_channels:
        return "both"
    return axis


def sweep_layer(layer: Layer, backend: Backend, axis: str = "out", counts: Sequence[int] | None = None,
                progress: Callable[[int, int], None] | None = None, rounds: int = SWEEP_ROUNDS) -> Sweep:
    """Time ``layer`` rebuilt at each count of output (or input) channels; the other stays full.

    ``progress(done, total)`` is called as each count is compiled (a TVM target may tune
    then) and after each round.
    """
    axis = _axis_for(layer, axis)
    full = layer.in_channels if axis in ("in", "both") else layer.out_channels
    counts = [int(c) for c in counts] if counts is not None else default_counts(full)
    block = block_timing(backend.timing, rounds)
    key = hashlib.sha256(json.dumps([backend.settings(), {"rounds": rounds, "block": block.key()},
                                     layer.signature(), axis, counts], sort_keys=True).encode()).hexdigest()[:40]
    path = backend.cache_dir / "sweeps" / f"{key}.json"
    if backend.use_cache and path.exists():
        d = json.loads(path.read_text())
        return Sweep(d["layer"], d["axis"], tuple(d["counts"]), tuple(d["ms"]))

    def build(c: int):
        return synthetic_layer_model(layer, c if axis in ("in", "both") else layer.in_channels,
                                     c if axis == "out" else layer.out_channels)

    timer = backend.with_timing(block)
    if np.asarray(layer.nodes[0].inputs[1].values).nbytes * len(counts) <= KEEP_OPEN_BYTES:
        ms = _interleaved_medians(timer, [build(c) for c in counts], rounds, progress)
    else:  # one count at a time, its blocks in a row: bounded memory, less drift-proof
        ms = []
        for i, c in enumerate(counts):
            ms.append(_interleaved_medians(timer, [build(c)], rounds, None)[0])
            if progress:
                progress(i + 1, len(counts))
    result = Sweep(layer.name, axis, tuple(counts), tuple(ms))
    if backend.use_cache:
        from hwprune_fx.emit.files import write_json_atomic

        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, result.to_dict())
    return result


def block_timing(timing: TimingConfig, rounds: int) -> TimingConfig:
    """One round's block: ``timing.repeat / rounds`` runs (at least 3) covering at least
    ``MIN_BLOCK_SECONDS``."""
    if rounds < 1:
        raise ValueError("rounds must be >= 1")
    return replace(timing, repeat=max(3, -(-timing.repeat // rounds)),
                   min_seconds=max(timing.min_seconds, MIN_BLOCK_SECONDS))


def _interleaved_medians(backend: Backend, models: list, rounds: int,
                         progress: Callable[[int, int], None] | None) -> list[float]:
    """Per model, the median of its ``rounds`` block medians, blocks interleaved across models."""
    from hwprune_fx.targets.side_by_side import round_medians

    total = len(models) + rounds
    done = iter(range(1, total + 1))
    tick = (lambda *_: progress(next(done), total)) if progress else None
    per_model, _ = round_medians(_Compiling(backend, tick) if tick else backend, models, rounds, progress=tick)
    return [statistics.median(blocks) for blocks in per_model]


class _Compiling:
    """``backend`` that reports each model it compiles for a block timer."""

    def __init__(self, backend: Backend, tick: Callable[[], None]) -> None:
        self.backend, self.tick = backend, tick

    def block_timer(self, model, feeds):
        timer = self.backend.block_timer(model, feeds)
        self.tick()
        return timer
