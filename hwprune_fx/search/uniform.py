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
                   progress: Callable[[str], None] | None = None,
                   recheck: Callable[[np.ndarray], float] | None = None, fill: float = 0.95,
                   rechecks: int = 2) -> SearchResult:
    """Smallest uniform ratio whose measured latency meets the budget (bisection).

    ``round_to``: kept widths rounded up to its multiples (Torch-Pruning's ``round_to``; the
    CLI passes ``--align``). Unaligned widths run slower on vectorised kernels, so without it
    latency does not fall steadily with the ratio and the bisection overshoots.

    ``recheck``: times a network again, independently of ``measure``. One noisy reading over
    the budget sends a bisection to more pruned networks for good (ResNet-18 at 80% ended at
    56% of its baseline in one benchmark run, 77% in a hand run). So when it ends under
    ``fill`` of the budget, the tightest failing ratio is timed again (at most ``rechecks``
    times); if it now meets the budget, it becomes the best and the bisection goes on below it.
    """
    history = [SearchStep(0, 0, baseline_ms, baseline_ms)]
    say = progress or (lambda msg: None)
    seen: dict[bytes, float] = {}   # rounding maps nearby ratios to one network: time it once
    points: dict[float, np.ndarray] = {}
    best: tuple[np.ndarray, float] | None = None
    fallback = (np.ones(analysis.num_units, bool), baseline_ms)

    def timed(ratio: float) -> tuple[np.ndarray, float]:
        keep = np.ones(analysis.num_units, bool)
        keep[plan_by_ratio(analysis, scores, ratio, round_to).removed_units] = False
        key = np.packbits(keep).tobytes()
        ms = seen[key] if key in seen else seen.setdefault(key, measure(keep))
        points[ratio] = keep
        history.append(SearchStep(len(history), int((~keep).sum()), float("nan"), ms))
        say(f"uniform ratio {ratio:.3f}: measured {ms:.3f} ms (budget {budget_ms:.3f} ms)")
        return keep, ms

    lo, hi, steps, doubts = 0.0, 0.97, iterations, 0
    while True:
        for _ in range(steps):
            mid = (lo + hi) / 2
            keep, ms = timed(mid)
            if ms <= budget_ms:
                best, hi = (keep, ms), mid
            else:
                lo = mid
                if ms < fallback[1]:
                    fallback = (keep, ms)
        if best is None or recheck is None or doubts >= rechecks or best[1] >= fill * budget_ms or lo <= 0.0:
            break
        doubts += 1
        suspect = points[lo]
        ms = recheck(suspect)
        seen[np.packbits(suspect).tobytes()] = ms
        history.append(SearchStep(len(history), int((~suspect).sum()), float("nan"), ms))
        say(f"uniform ratio {lo:.3f} timed again: {ms:.3f} ms (best so far {best[1]:.3f} ms, "
            f"{100 * best[1] / budget_ms:.0f}% of the budget)")
        if ms > budget_ms:
            break
        best, hi = (suspect, ms), lo
        lo = max((r for r, k in points.items() if r < hi and seen[np.packbits(k).tobytes()] > budget_ms), default=0.0)
        steps = max(1, iterations // 2)
    if best is None:
        return SearchResult(fallback[0], False, fallback[1], history)
    return SearchResult(best[0], True, best[1], history)
