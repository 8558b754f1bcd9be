"""HILP: hardware-in-the-loop, layer-wise progressive pruning.

Each step considers, per group, cutting down to the next edge of its latency staircase: the
next plateau right end below its current width where ``edges`` (``search.staircase``) lists
them, else the next multiple of the group's ``align``; the ``candidates`` most promising cuts
by the look-up table are compiled and *measured* whole, and the cut with the best measured
latency gain per importance lost is taken. Steps repeat until the measured latency meets
the budget.
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from hwprune_fx.analysis import DependencyAnalysis
from hwprune_fx.cost_models.base import CostModel
from hwprune_fx.search.opti_cut import SearchResult, SearchStep, group_norms, group_order, reorder_remaining
from hwprune_fx.search.staircase import align_of

__all__ = ["hilp_search"]


def hilp_search(analysis: DependencyAnalysis, scores: np.ndarray, cost: CostModel,
                measure: Callable[[np.ndarray], float], budget_ms: float, baseline_ms: float,
                align: int | Mapping[int, int] = 8, candidates: int = 3, max_steps: int = 200,
                progress: Callable[[str], None] | None = None,
                edges: Mapping[int, list[int]] | None = None,
                measure_many: Callable[[list[np.ndarray]], list[float]] | None = None,
                normalize: bool = True, step_fraction: float = 0.25, max_group_cut: float = 0.5,
                rescore: Callable[[np.ndarray], np.ndarray] | None = None,
                rescore_every: float = 0.10) -> SearchResult:
    """Layer-wise measured steps until the measured latency is within ``budget_ms``.

    Args:
        align: the channel multiple, for every group or per group id (missing: 8).
        edges: per group id, the good kept counts (plateau right ends of its measured
            latency staircase); the next cut goes to the largest edge below the current
            width, or to the next multiple of ``align`` when no edge is below.
        measure_many: times a step's candidates together (side by side with the original, in
            interleaved rounds) so that machine drift cannot pick the winner; by default each
            candidate is one ``measure`` call.
        normalize: divide each group's scores by their mean (see ``opti_cut``).
        step_fraction: far from the budget a step may cut past several edges of a group: it
            goes edge by edge until the estimated saving reaches this fraction of the distance
            still to go (0: one edge per step). Near the budget that is one edge, as HILP's
            progressive steps are; far from it, a deep network needs tens of measured steps
            instead of hundreds.
        max_group_cut: such a multi-edge cut stops before it would take more than this share of
            the group's remaining channels (the first edge is always taken). Without it, a group
            whose edges each save little went on edge by edge to one channel in a single step
            (a 128-channel conv of the quality benchmark's network, 128 -> 1), and the network
            never recovered from it.
        rescore: the criterion at the network cut so far; called after a step once the measured
            latency has fallen by ``rescore_every`` of the baseline since the last scores, and
            the remaining units of every group are re-ordered (see ``opti_cut``).
    """
    keep = np.ones(analysis.num_units, dtype=bool)
    order = group_order(analysis, scores)
    norm = group_norms(order, scores, normalize)
    removed = dict.fromkeys(order, 0)
    current = scored_at = baseline_ms
    history = [SearchStep(0, 0, baseline_ms, baseline_ms)]

    def next_edge(g: int, width: int) -> int:
        below = [e for e in (edges or {}).get(g, ()) if 1 <= e < width]
        a = align_of(align, g)
        return max(max(below) if below else ((width - 1) // a) * a if width > a else width - 1, 1)

    def cut(g: int, want_ms: float) -> np.ndarray:
        """Units of group ``g`` down to its next edge, and on edge by edge while the estimated
        saving is under ``want_ms`` and no more than ``max_group_cut`` of the group is gone."""
        full = width = order[g].size - removed[g]
        floor = (1.0 - max_group_cut) * full
        while True:
            edge = next_edge(g, width)
            if edge >= width or (width < full and edge < floor):
                break
            width = edge
            c = order[g][removed[g]: removed[g] + full - width]
            if want_ms <= 0 or width <= 1 or -cost.delta(keep, c) >= want_ms:
                break
        return order[g][removed[g]: removed[g] + full - width]

    for step in range(1, max_steps + 1):
        options = []
        want_ms = step_fraction * (current - budget_ms)
        for g in order:
            c = cut(g, want_ms)
            if c.size == 0:
                continue
            est = -cost.delta(keep, c)
            options.append((float(scores[c].sum() / norm[g]) / max(est, 1e-9), g, c, est))
        if not options:
            return SearchResult(keep, False, current, history)
        options.sort(key=lambda o: o[0])
        best = None
        trials = []
        for _, g, c, est in options[:candidates]:
            trial = keep.copy()
            trial[c] = False
            trials.append(trial)
        timed = measure_many(trials) if measure_many else [measure(t) for t in trials]
        for (_, g, c, est), ms in zip(options[:candidates], timed):
            gain = current - ms
            value = float(scores[c].sum() / norm[g]) / max(gain, 1e-9) if gain > 0 else np.inf
            if best is None or value < best[0] or (not np.isfinite(best[0]) and ms < best[3]):
                best = (value, g, c, ms, est)
        _, g, c, ms, est = best
        keep[c] = False
        removed[g] += c.size
        current = ms
        history.append(SearchStep(step, int((~keep).sum()), float("nan"), ms))
        if progress:
            progress(f"hilp step {step}: cut {c.size} channels of group {g}, measured {ms:.3f} ms "
                     f"(budget {budget_ms:.3f} ms)")
        if ms <= budget_ms:
            return SearchResult(keep, True, ms, history)
        if rescore is not None and ms <= scored_at - rescore_every * baseline_ms:
            scores = np.asarray(rescore(keep.copy()), dtype=np.float64)
            order, norm = reorder_remaining(order, removed, scores, normalize)
            scored_at = ms
            if progress:
                progress(f"hilp step {step}: re-scored {int(keep.sum())} remaining units")
    return SearchResult(keep, False, current, history)
