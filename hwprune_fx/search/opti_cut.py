"""Opti-Cut (HFP): global greedy pruning to a measured latency budget.

Every prunable group offers its next chunk of least-important channels (a chunk is the
alignment step: on AVX2 CPUs latency moves in steps of 8 channels, so single channels
often buy nothing). ``align`` is one multiple for all groups or one per group (``--align
auto``, from the measured staircase); a group's first chunk takes it down to a multiple.
The chunk with the least importance lost per millisecond saved goes first; the cheap cost
model estimates, rescaled by whole-network measurements at intervals on the way down, and
the search stops as soon as the *measured* latency meets the budget.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from hwprune_fx.analysis import DependencyAnalysis
from hwprune_fx.cost_models.base import CostModel, LayerChannels
from hwprune_fx.search.give_back import give_back, give_back_around
from hwprune_fx.search.staircase import align_of

__all__ = ["SearchStep", "SearchResult", "opti_cut", "group_order", "group_norms", "reorder_remaining", "FILL",
           "MAX_GROUP_CUT"]

#: a first network measured under this share of the aim starts the give-back, which returns
#: chunks until a probe reaches it. 0.98 was tried (benchmarks/results/budget_fill98.md): the
#: Opti-Cut and flops rows filled their budgets better (ResNet-18, MobileNetV2 and
#: EfficientNet-B0: 2 of 18 rows under 90%, against 6 of 18 at 0.95 the same day), and
#: MobileNetV2 40% flops went over the budget in fresh processes (100.3%). Landing nearer the
#: aim leaves only the margin for the spread between processes, which on MobileNetV2 is
#: larger than the 3% margin. So 0.95 stays.
FILL = 0.95

#: the share of a group's channels the greedy may take while other groups still have chunks
#: within theirs. Without a cap, the greedy took the cheapest milliseconds wherever they were:
#: on this AVX-512 CPU the last stage of the quality benchmark's ResNet saves the most per chunk
#: (and the cheap model was right about that: within 0.08 ms of the measured saving), so Opti-Cut
#: cut all three of its 128-channel groups to 16 with l1 and with ig-mean alike, and the network
#: kept 38-46% test accuracy (scratch runs, seed 1, 60% budget; HILP kept 96.6%). Per-channel
#: scores add up to far less than losing most of a group costs: ig-mean summed to 0.0019 for
#: 112 channels of the last stage's residual group, whose joint removal measured a KL of 1.56.
#: A cap of half a group is HILP's (``max_group_cut``), and Torch-Pruning's ``max_pruning_ratio``
#: exists for the same collapse of global pruning.
MAX_GROUP_CUT = 0.5

#: how far the share rises, once every group has given its share, when the scores are per group
#: (``normalize``: l1, l2, bn, random, similarity), which cannot say which layer affords more.
#: Raised to half of what was left (75% at once), the greedy with l1 emptied the layers whose magnitudes
#: were smallest: the digits ResNet at 28% of its latency kept 39.1% test accuracy (3 seeds),
#: under uniform L1's 54.8%; raised by an eighth of a group, every group gives a little more
#: before any gives more again: 59.0%. Scores on one scale across groups (ig, ig-mean, taylor)
#: do say where to cut, and keep the rise to half of what is left: with eighths, ig-mean fell
#: from 66.6% to 52.9% there (benchmarks/results/quality_cap_step.md).
CAP_STEP = 0.125


def raised_share(cap: float, normalize: bool) -> float:
    """The share after every group has given ``cap``: see :data:`CAP_STEP`."""
    return min(1.0, cap + CAP_STEP) if normalize else (1.0 + cap) / 2.0


@dataclass(frozen=True)
class SearchStep:
    step: int
    removed_units: int
    predicted_ms: float
    measured_ms: float | None


@dataclass
class SearchResult:
    keep: np.ndarray
    reached: bool
    measured_ms: float
    history: list[SearchStep] = field(default_factory=list)


def group_order(analysis: DependencyAnalysis, scores: np.ndarray) -> dict[int, np.ndarray]:
    """Per prunable group, its units from least to most important."""
    return {g.id: g.units[np.argsort(scores[g.units], kind="stable")] for g in analysis.prunable_groups()}


def group_norms(order: Mapping[int, np.ndarray], scores: np.ndarray, normalize: bool) -> dict[int, float]:
    """What each group's scores are divided by before groups are compared: their mean when the
    criterion's scale differs per layer (``normalize``), else 1."""
    if not normalize:
        return dict.fromkeys(order, 1.0)
    return {g: float(scores[u].mean()) if scores[u].mean() > 0 else 1.0 for g, u in order.items()}


def opti_cut(analysis: DependencyAnalysis, scores: np.ndarray, cost: CostModel, channels: LayerChannels,
             measure: Callable[[np.ndarray], float], budget_ms: float, baseline_ms: float,
             align: int | Mapping[int, int] = 8, measure_every: int = 0,
             progress: Callable[[str], None] | None = None, fill: float = FILL,
             normalize: bool = True, probe: Callable[[np.ndarray], float] | None = None,
             recalibrate_every: float = 0.0,
             rescore: Callable[[np.ndarray], np.ndarray] | None = None,
             rescore_every: float = 0.10, max_group_cut: float = MAX_GROUP_CUT) -> SearchResult:
    """Remove chunks until the measured latency is within ``budget_ms``.

    Whole-network checks use ``probe`` (a cheaper measurement, e.g. one that may come from a
    cache; default ``measure``). A first check under ``fill * budget_ms`` means the cheap model
    overshot: the last chunks are given back (bisected with probes) while the budget still
    holds; if the network is still under ``fill`` (the chunk that brought it under the budget
    saved a whole staircase step and must stay out), chunks of the other groups are given back
    instead (:mod:`hwprune_fx.search.give_back`). Nothing is accepted before ``measure``
    confirms it: the give-back's probes that met the budget, least pruned first; if none holds,
    the network first found within the budget; if that fails too, the search goes on cutting.
    (One confirmation per stop, not one for the first network and more for the give-back: each
    is seconds of uncached timing.)

    ``align``: the channel multiple, for every group or per group id (a group missing from
    the mapping uses 8). A chunk takes the group down to the next multiple of its own.

    ``normalize``: divide each group's scores by their mean (for criteria whose scale differs
    per layer; see :func:`hwprune_fx.criteria.global_scale`).

    ``recalibrate_every``: also measure (with ``probe``) whenever the estimate has fallen by
    this fraction of the baseline since the last measurement, and rescale the cheap model by
    what the hardware said. Without it the cheap model's error grows unchecked down to the
    first check: on MobileNetV2 at 40% the LUT's estimate there was far above the measured
    latency, and the give-back had most of the cut to undo (benchmarks/results/budget.md,
    session-9 notes). With it, each measurement sets the model's scale to the measured saving
    so far over the saving the model estimated for the same chunks (a scale of the deltas,
    which is what the search spends); without it, to the measured over the estimated latency.

    ``rescore``: the criterion again, at the network cut so far (``keep``), each time the
    latency (the estimate, or the measurement where there is one) has fallen by
    ``rescore_every`` of the baseline since the last scores. The remaining units of every group
    are re-ordered by the new scores. Scores taken once at the original say what removing one
    unit from the *original* costs; after a third of the network is gone, which of the rest
    matter has changed (HFP re-evaluates between its cuts). A plateau's step-by-step
    measurements do not each re-score: only the latency fallen counts.

    ``max_group_cut``: no group gives more than this share of its channels while another group
    still has a chunk within the share; once none has, the share rises until one has: by an
    eighth of a group with per-group scores (0.5, 0.625, 0.75, ... 1.0), else to half of what is
    left (0.5, 0.75, 0.875, ...). See :data:`MAX_GROUP_CUT` and :data:`CAP_STEP` for why.
    1.0: no cap.
    """
    keep = np.ones(analysis.num_units, dtype=bool)
    order = group_order(analysis, scores)
    norm = group_norms(order, scores, normalize)
    removed = dict.fromkeys(order, 0)
    layers_of = {g: set(channels.touched(order[g])) for g in order}
    neighbours = {g: [h for h in order if layers_of[g] & layers_of[h]] for g in order}

    def chunk(g: int) -> np.ndarray:
        left = order[g].size - removed[g]
        n = (left - 1) % align_of(align, g) + 1   # down to the next multiple below ``left``
        return order[g][removed[g]: removed[g] + max(0, min(n, left - 1))]

    cap = max_group_cut   # the share of a group that may be gone: rises when every group is at it

    def capped(g: int, c: np.ndarray) -> bool:
        """Whether taking chunk ``c`` would take group ``g`` past the share ``cap``."""
        return removed[g] + c.size > cap * order[g].size

    def open_chunk(g: int) -> bool:
        """Whether group ``g`` has a chunk left within its share."""
        c = chunk(g)
        return c.size > 0 and not capped(g, c)

    def value(g: int) -> tuple[float, float]:
        c = chunk(g)
        if c.size == 0 or capped(g, c):
            return np.inf, 0.0
        saved = -cost.delta(keep, c)
        if saved <= 0:
            return np.inf, saved
        return float(scores[c].sum() / norm[g]) / saved, saved

    values = {g: value(g) for g in order}
    calib = baseline_ms / max(cost.predict(keep), 1e-12)
    estimated_saving = 0.0         # what the cheap model said the chunks taken so far save
    predicted = baseline_ms
    history = [SearchStep(0, 0, predicted, baseline_ms)]
    step = 0
    last_measured = baseline_ms
    stalled = False
    taken: list[np.ndarray] = []   # chunks in the order they went
    taken_from: list[int] = []     # the group of each
    above = 0                      # chunks taken when the hardware last said "over budget"
    scored_at = baseline_ms        # the latency when the scores were last taken
    measured_at = 0                # the step of the last measurement

    def record(trial: np.ndarray, ms: float) -> None:
        """A give-back's timing, in the history (no prediction: the cheap model did not steer it)."""
        history.append(SearchStep(history[-1].step, int((~trial).sum()), float("nan"), ms))

    while True:
        due = recalibrate_every > 0 and predicted <= last_measured - recalibrate_every * baseline_ms
        if predicted <= budget_ms or stalled or due or (measure_every and step and step % measure_every == 0):
            stalled = False
            # the cheap (cacheable) number first; a network that seems to meet the budget is
            # confirmed with ``measure`` only if the give-back does not settle on another one
            measured = (probe or measure)(keep)
            measured_at = step
            history.append(SearchStep(step, int((~keep).sum()), predicted, measured))
            if progress:
                progress(f"step {step}: predicted {predicted:.3f} ms, measured {measured:.3f} ms "
                         f"(budget {budget_ms:.3f} ms)")
            if measured <= budget_ms:
                settled = None
                if measured < fill * budget_ms and len(taken) - above > 1:
                    settled = give_back(keep, taken[above:], probe or measure, measure, budget_ms, fill, record,
                                        progress)
                if settled is None and probe is not None and probe is not measure:
                    measured = measure(keep)
                    history.append(SearchStep(step, int((~keep).sum()), predicted, measured))
                    if progress:
                        progress(f"step {step}: confirmed at {measured:.3f} ms (budget {budget_ms:.3f} ms)")
                if settled is None and measured <= budget_ms:
                    settled = (keep, measured)
                if settled is not None:
                    if settled[1] < fill * budget_ms:
                        settled = give_back_around(settled[0], taken, taken_from, probe or measure, measure, budget_ms,
                                                   fill, record, progress) or settled
                    return SearchResult(settled[0], True, settled[1], history)
            last_measured = measured
            above = len(taken)
            if recalibrate_every > 0 and estimated_saving > 0 and measured < baseline_ms:
                calib = (baseline_ms - measured) / estimated_saving
            else:
                calib *= measured / max(predicted, 1e-12)
            predicted = measured
        if rescore is not None and predicted <= scored_at - rescore_every * baseline_ms:
            scores = np.asarray(rescore(keep.copy()), dtype=np.float64)
            order, norm = reorder_remaining(order, removed, scores, normalize)
            values = {g: value(g) for g in order}
            scored_at = predicted
            if progress:
                progress(f"step {step}: re-scored {int(keep.sum())} remaining units")
        best = min(values, key=lambda g: values[g][0], default=None)
        if best is None or not np.isfinite(values[best][0]):
            # plateaus everywhere: take any chunk that is left, least important first
            left = [g for g in order if open_chunk(g)]
            if not left and any(chunk(g).size for g in order):
                # every group has given its share: each may now give more of its channels
                while not any(open_chunk(g) for g in order):
                    cap = raised_share(cap, normalize)
                if progress:
                    progress(f"step {step}: every group at its share; a group may now lose {cap:.1%} of its channels")
                values = {g: value(g) for g in order}
                continue
            if not left and measured_at < step:
                # nothing left to cut, but cut since the hardware last spoke: one reading that
                # came out near the baseline sets the rescale so low that the estimate never
                # falls far enough to ask again, and every chunk went unmeasured. Ask now.
                stalled = True
                continue
            if not left:
                return SearchResult(keep, False, last_measured, history)
            best = min(left, key=lambda g: scores[chunk(g)].sum() / norm[g])
            values[best] = (np.inf, 0.0)
            stalled = True  # the model sees no gain: ask the hardware after this step
        c = chunk(best)
        predicted -= calib * max(values[best][1], 0.0)
        estimated_saving += max(values[best][1], 0.0)
        keep[c] = False
        taken.append(c)
        taken_from.append(best)
        removed[best] += c.size
        step += 1
        for h in neighbours[best]:
            values[h] = value(h)


def reorder_remaining(order: Mapping[int, np.ndarray], removed: Mapping[int, int], scores: np.ndarray,
                      normalize: bool) -> tuple[dict[int, np.ndarray], dict[int, float]]:
    """After a re-score: each group's removed units first (as taken), then the rest from least to
    most important by ``scores``; and the group norms (:func:`group_norms`) of what remains."""
    out = {}
    for g, units in order.items():
        rest = units[removed[g]:]
        out[g] = np.concatenate([units[:removed[g]], rest[np.argsort(scores[rest], kind="stable")]])
    return out, group_norms({g: u[removed[g]:] for g, u in out.items()}, scores, normalize)
