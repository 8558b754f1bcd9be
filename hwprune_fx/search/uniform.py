"""``uniform``: the same ratio in every group (Torch-Pruning-style), bisected on measured latency.

A baseline: it shows what hardware awareness buys.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from hwprune_fx.analysis import DependencyAnalysis
from hwprune_fx.plan import plan_by_ratio
from hwprune_fx.search.opti_cut import SearchResult, SearchStep

__all__ = ["uniform_search"]


def uniform_search(analysis: DependencyAnalysis, scores: np.ndarray, measure: Callable[[np.ndarray], float],
                   budget_ms: float, baseline_ms: float, iterations: int = 8, round_to: int = 1,
                   progress: Callable[[str], None] | None = None) -> SearchResult:
    """Smallest uniform ratio whose measured latency meets the budget (bisection).

    ``round_to``: kept widths rounded up to its multiples (Torch-Pruning's ``round_to``; the
    CLI passes ``--align``). Unaligned widths run slower on vectorised kernels, so without it
    latency does not fall steadily with the ratio and the bisection overshoots.
    """
    lo, hi = 0.0, 0.97
    best: tuple[np.ndarray, float] | None = None
    history = [SearchStep(0, 0, baseline_ms, baseline_ms)]
    fallback = (np.ones(analysis.num_units, bool), baseline_ms)
    seen: dict[bytes, float] = {}   # rounding maps nearby ratios to one network: time it once
    for i in range(iterations):
        mid = (lo + hi) / 2
        keep = np.ones(analysis.num_units, bool)
        keep[plan_by_ratio(analysis, scores, mid, round_to).removed_units] = False
        key = np.packbits(keep).tobytes()
        ms = seen[key] if key in seen else seen.setdefault(key, measure(keep))
        history.append(SearchStep(i + 1, int((~keep).sum()), float("nan"), ms))
        if progress:
            progress(f"uniform ratio {mid:.3f}: measured {ms:.3f} ms (budget {budget_ms:.3f} ms)")
        if ms <= budget_ms:
            best, hi = (keep, ms), mid
        else:
            lo = mid
            if ms < fallback[1]:
                fallback = (keep, ms)
    if best is None:
        return SearchResult(fallback[0], False, fallback[1], history)
    return SearchResult(best[0], True, best[1], history)
