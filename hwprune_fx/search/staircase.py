"""The latency staircase per channel group: which kept counts buy time, and its step width.

On a CPU whose kernels block output channels (onnxruntime's NCHWc on AVX2: blocks of 8),
latency is a staircase in the channel count: removing channels saves nothing until a whole
block goes. The good counts are the *right ends of plateaus* — the largest count that still
has the lower latency (HILP's "edge of a latency step"); the step width is what
``--align auto`` snaps each group to.

Latency need not rise monotonically: onnxruntime also pays a reorder for input channel
counts off the block, so an *input* sweep is a sawtooth whose dips sit at the multiples.
The rule, on one sampled curve (counts ascending, latency in ms), covers both:

1. noise: a robust sigma of the timing noise from the median absolute residual of the
   running median of 3 (single-sample dips and steps barely move it);
2. a count is an *edge* when its latency is below that of *every* larger count and below
   the larger of its next two samples (a step can be split over two by noise), both by
   more than ``max(rel_step x its latency, noise_k x noise)``: going down to it buys time,
   and going any further up does not pay off. The last (full) count is always an edge;
   a smooth ramp has none, since no sample is far below its neighbours;
3. the step width is the most frequent distance between consecutive detected edges whose
   whole interval was sampled at the sweep's finest spacing and holds at least two samples
   (ties go to the smaller width); the distance from the last detected edge to the full
   count does not vote (the full width need not be aligned).

A curve with no step at all, sampled densely (spacing 1), is smooth: every channel buys
time, width 1. A curve too sparse to show a plateau (the LUT's default 8 points) has no
visible staircase: the width falls back to ``fallback`` (8, the AVX2 block). Dense sweeps
come from ``LutCostModel.profile(..., counts=staircase_counts)``.

A group's curve is the sum of the latencies of every layer it touches (as producer's
output channels and consumer's input channels), sampled at the group counts some of those
layers were measured at, the rest of the network full.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from hwprune_fx.analysis import ChannelGroup, DependencyAnalysis
from hwprune_fx.errors import UserError

__all__ = ["Staircase", "find_staircase", "group_curve", "staircase_edges", "auto_alignment",
           "staircase_counts", "resolve_alignment", "align_of", "DEFAULT_FALLBACK"]

DEFAULT_FALLBACK = 8   # the AVX2 block of onnxruntime's NCHWc kernels (benchmarks/results/staircase.md)
REL_STEP = 0.02        # a step buys at least 2% of the latency of the layers the group touches
NOISE_K = 3.0          # ... and at least 3 sigma of the timing noise
_SIGMA_PER_MAD = 3.55  # Gaussian noise: sigma = 3.55 x median |y - running median of 3| (simulated)


@dataclass(frozen=True)
class Staircase:
    """What one latency curve shows: plateau right ends and the dominant step width."""

    edges: tuple[int, ...]     # right ends of plateaus, ascending; the last is the full count
    width: int | None          # dominant step width; None when no staircase is visible
    smooth: bool               # densely sampled and no step: latency moves with every channel


def _median3(y: np.ndarray) -> np.ndarray:
    if y.size < 3:
        return y.copy()
    padded = np.concatenate([y[:1], y, y[-1:]])
    return np.median(np.stack([padded[:-2], padded[1:-1], padded[2:]]), axis=0)


def find_staircase(counts: Sequence[int], ms: Sequence[float], rel_step: float = REL_STEP,
                   noise_k: float = NOISE_K) -> Staircase:
    """Plateau right ends and step width of one latency curve (see the module docstring)."""
    c = np.asarray(counts, dtype=np.int64)
    y = np.asarray(ms, dtype=np.float64)
    order = np.argsort(c, kind="stable")
    c, y = c[order], y[order]
    if c.size < 2:
        return Staircase(tuple(int(v) for v in c), None, False)
    noise = _SIGMA_PER_MAD * float(np.median(np.abs(y - _median3(y))))
    above = np.minimum.accumulate(y[::-1])[::-1]           # above[i] = min(y[i:])
    detected = []
    for i in range(c.size - 1):
        margin = max(rel_step * y[i], noise_k * noise)
        if above[i + 1] - y[i] > margin and y[i + 1: i + 3].max() - y[i] > margin:
            detected.append(i)
    edges = tuple(int(c[i]) for i in detected) + (int(c[-1]),)
    gaps = np.diff(c)
    finest = int(gaps.min())
    votes = [int(c[b] - c[a]) for a, b in zip(detected[:-1], detected[1:])
             if (gaps[a:b] == finest).all() and c[b] - c[a] >= 2 * finest]
    width = None
    if votes:
        tally = Counter(votes)
        top = max(tally.values())
        width = min(w for w, n in tally.items() if n == top)
    return Staircase(edges, width, smooth=not detected and finest == 1)


def _group_counts(cost, group: ChannelGroup) -> tuple[list[int], list[int]]:
    """Layers the group touches, and the group counts at which one of them was measured."""
    ch = cost.channels
    layers = ch.touched(group.units)
    ks: set[int] = set()
    for i in layers:
        s_out, s_in = cost.sweeps_out[i], cost.sweeps_in[i]
        pairs = [(s_out, ch.in_units[i] if s_out.axis == "both" else ch.out_units[i]), (s_in, ch.in_units[i])]
        for sweep, units in pairs:
            if sweep is None or units.size == 0:
                continue
            mine = int(np.isin(units, group.units).sum())
            if mine == 0:
                continue
            for count in sweep.counts:   # the tensor keeps ``count`` when the group keeps k
                k = int(count) - (units.size - mine)
                if 1 <= k <= group.size:
                    ks.add(k)
    return layers, sorted(ks)


def group_curve(cost, analysis: DependencyAnalysis, group: ChannelGroup) -> tuple[np.ndarray, np.ndarray]:
    """(group counts, ms of the layers it touches) at the counts the LUT measured."""
    layers, ks = _group_counts(cost, group)
    ms = []
    for k in ks:
        keep = np.ones(analysis.num_units, bool)
        keep[group.units[: group.size - k]] = False
        ms.append(sum(cost.layer_ms(keep, i) for i in layers))
    return np.asarray(ks, dtype=np.int64), np.asarray(ms, dtype=np.float64)


def _staircases(cost, analysis: DependencyAnalysis, rel_step: float, noise_k: float) -> dict[int, Staircase]:
    out = {}
    for g in analysis.prunable_groups():
        counts, ms = group_curve(cost, analysis, g)
        out[g.id] = find_staircase(counts, ms, rel_step, noise_k)
    return out


def staircase_edges(cost, analysis: DependencyAnalysis, rel_step: float = REL_STEP,
                    noise_k: float = NOISE_K) -> dict[int, list[int]]:
    """Per prunable group, the good kept counts (plateau right ends), ascending.

    ``cost`` is a :class:`~hwprune_fx.cost_models.lut.LutCostModel` built on ``analysis``.
    A group no measured layer touches gets no entry.
    """
    return {g: list(s.edges) for g, s in _staircases(cost, analysis, rel_step, noise_k).items() if s.edges}


def auto_alignment(cost, analysis: DependencyAnalysis, fallback: int = DEFAULT_FALLBACK,
                   rel_step: float = REL_STEP, noise_k: float = NOISE_K) -> dict[int, int]:
    """Per prunable group, the dominant step width of its latency staircase.

    1 where a dense sweep shows no step (latency is smooth), ``fallback`` where the sweep
    cannot show one (too sparse, or the group touches no measured layer).
    """
    found = _staircases(cost, analysis, rel_step, noise_k)
    out = {}
    for g in analysis.prunable_groups():
        s = found.get(g.id)
        out[g.id] = s.width if s is not None and s.width else 1 if s is not None and s.smooth else fallback
    return out


def staircase_counts(full: int, axis: str = "out", span: int = 32, points: int = 8) -> list[int]:
    """Sweep counts that show the staircase: every count in the top ``span``, sparse below.

    The search only walks down from the full width, so the top of the range is where the
    step width matters; the sparse points keep the LUT's broad shape for deeper cuts.
    Usable as ``LutCostModel.profile(..., counts=staircase_counts)`` (every axis alike).
    """
    from hwprune_fx.profiling.sweep import default_counts

    dense = range(max(1, full - span), full + 1)
    return sorted(set(default_counts(full, points)) | set(dense))


def resolve_alignment(align: int | str, cost, analysis: DependencyAnalysis, fallback: int = DEFAULT_FALLBACK
                      ) -> tuple[int | dict[int, int], dict[int, list[int]] | None]:
    """``--align N|auto`` -> (alignment for the searches, staircase edges for HILP or None).

    ``N`` (an int or its text) is the same multiple for every group. ``auto`` needs the LUT
    (profiled with :func:`staircase_counts` to see the steps) and gives every prunable
    group its own step width, and HILP its plateau edges.

    Raises:
        UserError: ``align`` is neither a positive integer nor ``auto``, or ``auto`` without a LUT.
    """
    if isinstance(align, str) and align.strip().lower() == "auto":
        if cost is None or not hasattr(cost, "sweeps_out"):
            raise UserError("--align auto reads the latency staircase from the lut cost model "
                            "(--search opti-cut or hilp with --cost-model lut)")
        return auto_alignment(cost, analysis, fallback), staircase_edges(cost, analysis)
    try:
        n = int(align)
    except (TypeError, ValueError):
        raise UserError(f"--align must be a positive integer or 'auto', got {align!r}") from None
    if n < 1 or (isinstance(align, float) and align != n):
        raise UserError(f"--align must be a positive integer or 'auto', got {align!r}")
    return n, None


def align_of(align: int | Mapping[int, int], group: int, default: int = DEFAULT_FALLBACK) -> int:
    """The multiple for ``group``: ``align`` itself, or its entry (``default`` if missing)."""
    n = int(align) if isinstance(align, (int, np.integer)) else int(align.get(group, default))
    return max(1, n)
