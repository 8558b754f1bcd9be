"""Latency vs kept channels for one layer: the staircase (HILP), cached on disk.

Cache key: (target settings incl. runtime version and threads, layer signature, axis,
channel counts), so that a second run is instant and a new runtime re-measures.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from hwprune_fx.profiling.layers import Layer, synthetic_layer_model
from hwprune_fx.targets.base import Backend

__all__ = ["Sweep", "sweep_layer", "default_counts"]


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


def _axis_for(layer: Layer, axis: str) -> str:
    if layer.group > 1 and layer.group == layer.in_channels:
        return "both"
    return axis


def sweep_layer(layer: Layer, backend: Backend, axis: str = "out", counts: Sequence[int] | None = None,
                progress: Callable[[int, int], None] | None = None) -> Sweep:
    """Time ``layer`` rebuilt at each count of output (or input) channels; the other stays full."""
    axis = _axis_for(layer, axis)
    full = layer.in_channels if axis in ("in", "both") else layer.out_channels
    counts = list(counts) if counts is not None else default_counts(full)
    key = hashlib.sha256(json.dumps([backend.settings(), layer.signature(), axis, counts],
                                    sort_keys=True).encode()).hexdigest()[:40]
    path = backend.cache_dir / "sweeps" / f"{key}.json"
    if backend.use_cache and path.exists():
        d = json.loads(path.read_text())
        return Sweep(d["layer"], d["axis"], tuple(d["counts"]), tuple(d["ms"]))
    ms = []
    for i, c in enumerate(counts):
        cin = c if axis in ("in", "both") else layer.in_channels
        cout = c if axis == "out" else layer.out_channels
        ms.append(backend.measure(synthetic_layer_model(layer, cin, cout)).median_ms)
        if progress:
            progress(i + 1, len(counts))
    result = Sweep(layer.name, axis, tuple(counts), tuple(ms))
    if backend.use_cache:
        from hwprune_fx.emit.files import write_json_atomic

        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, result.to_dict())
    return result
