"""Opti-Cut's give-back: chunks returned to a network that met its budget with room to spare.

The greedy cut takes chunks on the cheap model's word and asks the hardware at intervals, so
the first network it finds within the budget can be well under it. :func:`give_back` bisects
over the chunks taken since the hardware last said "over budget" for the fewest that must go.

That is not enough where latency moves in big steps. On this AVX-512 CPU onnxruntime's blocked
(NCHWc) conv kernels pad a conv's channels to a multiple of 16 (a 24-channel conv runs with
32-channel weights), so a group at 24 channels runs as slowly as at 32, and the one 8-channel
chunk that takes it to 16 saves the whole step, for every conv the group spans. On the digits
ResNet of ``benchmarks/quality.py`` (60%, ``ig-mean``) one chunk moved the network from 0.851 ms,
over the 0.819 ms aim, to 0.625 ms; the give-back could only return that chunk, which crossed
the budget again, and the network was written at 73% of its budget with 42% of its MACs left.
:func:`give_back_around` keeps that chunk's group as it is and returns the chunks of the other
groups instead, bisected the same way, the last taken (the most important per millisecond) first.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

__all__ = ["give_back", "give_back_around"]

Timing = Callable[[np.ndarray], float]
Progress = Callable[[str], None] | None


def give_back(keep: np.ndarray, chunks: Sequence[np.ndarray], probe: Timing, measure: Timing, budget_ms: float,
              fill: float, record: Callable[[np.ndarray, float], None], progress: Progress = None,
              max_probes: int | None = None, max_confirms: int = 3, all_over: bool = True,
              label: str = "give back") -> tuple[np.ndarray, float] | None:
    """Bisect for the longest tail of ``chunks`` that can be returned to ``keep`` (all of
    ``chunks`` removed there) with the network still within ``budget_ms``.

    Returning none is ``keep`` itself; returning every chunk is taken to fail where ``all_over``
    (the caller timed that network over the budget), else it is tried too. ``max_probes``
    (default: enough to bisect the range down to one chunk, at least 6): the bisection stops
    earlier once a probe reaches ``fill`` of the budget. With a fixed 6, EfficientNet-B0's flops
    search to 40% ended at 85% of its budget: its cost model saw nothing to gain and cut 1345
    chunks unmeasured, and 6 halvings of those still left 21 chunks, 5.4 ms to 7.2 ms, between
    the last two probes (aim 6.7 ms).

    With a separate ``probe``, the probes that met the budget are confirmed with ``measure``
    from the least pruned on (at most ``max_confirms``); the first confirmed one is returned,
    else None. Bisecting on after a failed confirmation was tried: it filled budgets no better and
    every new probe is an uncached measurement, which doubled a warm ResNet-50 run. ``record``
    gets every timing taken (for the search's history).
    """
    def timed(how: Timing, trial: np.ndarray, what: str) -> float:
        ms = how(trial)
        record(trial, ms)
        if progress:
            progress(f"{label}: {what} {ms:.3f} ms (budget {budget_ms:.3f} ms)")
        return ms

    lo, hi = (0 if all_over else -1), len(chunks)
    if max_probes is None:
        max_probes = max(6, math.ceil(math.log2(max(hi - lo, 1))))
    passed: list[tuple[np.ndarray, float]] = []   # probes within the budget, least pruned last
    for _ in range(max_probes):
        if hi - lo <= 1 or (passed and passed[-1][1] >= fill * budget_ms):
            break
        mid = (lo + hi) // 2
        trial = keep.copy()
        for c in chunks[mid:]:
            trial[c] = True
        ms = timed(probe, trial, f"the last {len(chunks) - mid} chunks kept, measured")
        if ms <= budget_ms:
            hi = mid
            passed.append((trial, ms))
        else:
            lo = mid
    if probe is measure:
        return passed[-1] if passed else None
    for trial, _ in reversed(passed[-max_confirms:]):
        ms = timed(measure, trial, f"{int((~trial).sum())} channels removed, confirmed at")
        if ms <= budget_ms:
            return trial, ms
    return None


def give_back_around(keep: np.ndarray, taken: Sequence[np.ndarray], groups: Sequence[int], probe: Timing,
                     measure: Timing, budget_ms: float, fill: float, record: Callable[[np.ndarray, float], None],
                     progress: Progress = None) -> tuple[np.ndarray, float] | None:
    """A fuller network than ``keep`` within the budget, or None.

    ``taken``: the chunks in the order they went, ``groups`` the group of each. The last chunk
    ``keep`` still lacks is the one whose return crossed the budget (:func:`give_back` returns
    the chunks after it; when it did not run, it is the last chunk cut). It stays out, and so
    do the other chunks of its group: returning one would put that group back on the width it
    was cut from. Every other chunk ``keep`` lacks is a candidate, the last taken (the most
    important per millisecond) first, bisected by :func:`give_back`.
    """
    removed = [i for i, c in enumerate(taken) if not keep[c].any()]
    if not removed:
        return None
    crossing = groups[removed[-1]]
    others = [taken[i] for i in removed if groups[i] != crossing]
    if not others:
        return None
    return give_back(keep, others, probe, measure, budget_ms, fill, record, progress, all_over=False,
                     label="give back around the last cut")
