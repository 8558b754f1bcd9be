"""The main job: prune an ONNX model until its *measured* latency on a target meets a budget.

    load -> analyze -> criterion -> baseline measured -> cost model (LUT sweeps) ->
    search (opti-cut | flops | uniform), confirmed by measurement -> rewrite -> oracle ->
    final latency measured again in a fresh session -> report
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import onnx

from hwprune_fx.analysis import analyze_dependencies
from hwprune_fx.criteria import global_scale, require_data
from hwprune_fx.errors import HwpruneError, RewriteError, UserError
from hwprune_fx.plan import PruningPlan
from hwprune_fx.search.budget import Budget, parse_budget
from hwprune_fx.search.final_check import FinalCheck, final_check
from hwprune_fx.search.opti_cut import MAX_GROUP_CUT
from hwprune_fx.search.refill import CEILING, UNDERFILL, raised_aim
from hwprune_fx.targets import TimingConfig, create_backend
from hwprune_fx.targets.side_by_side import BLOCK_SECONDS

if TYPE_CHECKING:
    from hwprune_fx.pipeline import CalibInput

__all__ = ["UnreachableBudget", "prune_to_budget", "SEARCHES"]

SEARCHES = ("opti-cut", "hilp", "flops", "uniform")
DEFAULT_MARGIN = 0.03
FINAL_ATTEMPTS = 3
#: Opti-Cut measures the whole network each time its estimate falls by this share of the
#: baseline (HFP measures "at intervals"), so the LUT's drift is corrected on the way down
RECALIBRATE_EVERY = 0.10
#: ``--rescore``: the criterion is scored again each time the search goes down this share of the baseline
RESCORE_EVERY = 0.10


class UnreachableBudget(HwpruneError):
    """No pruning the search could find meets the budget; carries the best latency reached."""

    def __init__(self, message: str, best_ms: float, result: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.best_ms = best_ms
        self.result = result


def prune_to_budget(model: str | os.PathLike | onnx.ModelProto, budget: str | Budget, *, target: str = "ort-cpu",
                    search: str = "opti-cut", criterion: str = "l1", cost_model: str = "lut", align: int | str = 8,
                    threads: int = 1, repeat: int = 20, input_shapes: dict | None = None,
                    cache_dir: str | os.PathLike | None = None, best_effort: bool = False,
                    progress: Callable[[str], None] | None = None, backend_options: dict | None = None,
                    calib: CalibInput = None, margin: float = DEFAULT_MARGIN,
                    rescore: bool | None = None, final_check_process: str = "fresh",
                    max_group_cut: float | None = None) -> dict[str, Any]:
    """Returns ``{"model": pruned ModelProto, "plan": PruningPlan, "report": {...}}``.

    The search aims ``margin`` (a fraction) under the budget: one network's latency relative to
    the original differs by a few percent from one process to the next (the in-process and
    fresh-process columns of benchmarks/results/budget.json). If the final check still
    misses (its median with half the spread of its session pairs on top, see
    :mod:`hwprune_fx.search.final_check`), the search runs again aiming lower (at most
    ``FINAL_ATTEMPTS`` searches; on the last, the median alone decides), then raises
    :class:`UnreachableBudget` unless ``best_effort``. If the first search's network passes its
    final check under ``UNDERFILL`` of the budget, the search runs once more aiming higher and
    the fuller network that passes is kept (:mod:`hwprune_fx.search.refill`).

    ``calib`` (a path, :class:`~hwprune_fx.calib.CalibrationSource` or
    :class:`~hwprune_fx.calib.CalibrationData`) feeds the data-driven criteria ``taylor`` and ``ig``.

    ``rescore``: score the data-driven criterion again at the network cut so far, each time the
    search's latency has fallen by ``RESCORE_EVERY`` of the baseline (opti-cut, hilp, flops).
    None: the criterion's own default (on for ``ig-mean``; see ``DataCriterion.rescore_default``).

    ``max_group_cut``: the share of a group's channels opti-cut and flops take while another
    group still has a chunk within its share (default
    :data:`~hwprune_fx.search.opti_cut.MAX_GROUP_CUT`, raised as
    :func:`~hwprune_fx.search.opti_cut.raised_share` says once every group is at it; 1.0: no cap).
    HILP caps each of its steps at half a group instead.

    ``final_check_process``: "fresh" (default) times the final check's session pairs in a new
    process where the target allows it (ort-cpu), as a deployment and the budget benchmark's
    judge would; "this" times them in the searching process. The search's confirmations are
    timed in a fresh process where the target allows it either way
    (:meth:`~hwprune_fx.search.candidate_meter.CandidateMeter._confirm`).

    Raises:
        UnreachableBudget: the budget cannot be met (unless ``best_effort``).
    """
    from hwprune_fx.cost_models import LayerChannels, create_cost_model
    from hwprune_fx.cost_models.lut import LutCostModel
    from hwprune_fx.cost_models.flops import count_macs, count_params
    from hwprune_fx.frontends.onnx_frontend import onnx_to_channel_graph
    from hwprune_fx.oracle import random_inputs
    from hwprune_fx.calib import model_input_specs
    from hwprune_fx.pipeline import load_onnx_model, make_criterion, materialize
    from hwprune_fx.profiling.layers import find_layers
    from hwprune_fx.search.staircase import resolve_alignment, staircase_counts
    from hwprune_fx.merge_oracle import merge_oracle
    from hwprune_fx.passes.merge_similar import applicable_merges, materialize_merged
    from hwprune_fx.search.candidate_meter import CandidateMeter, measure_baseline
    from hwprune_fx.criteria.data_driven import DataCriterion
    import onnx_graphsurgeon as gs

    say = progress or (lambda msg: None)
    budget = parse_budget(budget) if isinstance(budget, str) else budget
    if not 0.0 <= margin < 0.5:
        raise UserError(f"margin must be in [0, 0.5) (a fraction of the budget), got {margin}")
    max_group_cut = MAX_GROUP_CUT if max_group_cut is None else float(max_group_cut)
    if not 0.0 < max_group_cut <= 1.0:
        raise UserError(f"max_group_cut must be in (0, 1] (a share of a group's channels), got {max_group_cut}")
    if final_check_process not in ("fresh", "this"):
        raise UserError(f"final_check_process must be 'fresh' or 'this', got {final_check_process!r}")
    if search not in SEARCHES:
        raise UserError(f"unknown search {search!r}; choose one of: {', '.join(SEARCHES)}")
    auto_align = isinstance(align, str) and align.strip().lower() == "auto"
    if auto_align and search not in ("opti-cut", "hilp"):
        raise UserError("--align auto reads the latency staircase of the LUT: use it with --search opti-cut or hilp")
    if not auto_align:
        align, _ = resolve_alignment(align, None, None)
    require_data(criterion, calib)
    timing = TimingConfig(warmup=5, repeat=repeat, threads=threads)
    backend = create_backend(target, timing=timing, cache_dir=cache_dir, **(backend_options or {}))
    phases: dict[str, float] = {}

    t0 = time.perf_counter()
    loaded = load_onnx_model(model, input_shapes)
    analysis = analyze_dependencies(loaded.channel_graph)
    crit, calib_entry = make_criterion(criterion, loaded.original, calib, model_input_specs(loaded.original), say)
    if rescore is None:
        rescore = getattr(crit, "rescore_default", False) and search != "uniform"
    if rescore and not isinstance(crit, DataCriterion):
        raise UserError(f"--rescore re-scores a data-driven criterion (taylor, ig, ig-mean) at the network cut so "
                        f"far; {criterion!r} would give the same scores again")
    if rescore and search == "uniform":
        raise UserError("--rescore applies to the searches that cut step by step (opti-cut, hilp, flops), "
                        "not to uniform")
    scores = crit.score(analysis)
    phases["load_and_analysis"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    baseline = measure_baseline(backend, loaded.original)
    budget_ms = budget.target_ms(baseline.median_ms)
    say(f"baseline {baseline.median_ms:.3f} ms on {target} ({threads} thread); budget {budget_ms:.3f} ms")
    phases["baseline"] = time.perf_counter() - t0

    channels = LayerChannels.build(analysis, find_layers(loaded.graph))
    t0 = time.perf_counter()
    cost = None   # uniform bisects on measurements alone
    if search == "flops":
        cost = create_cost_model("flops", channels=channels)
    elif search in ("opti-cut", "hilp"):
        if cost_model != "lut":
            raise UserError(f"{search} estimates with the lut cost model in this version (--cost-model lut)")
        cost = LutCostModel.profile(channels, backend, progress=say, counts=staircase_counts if auto_align else None)
    edges = None
    if auto_align:
        align, edges = resolve_alignment("auto", cost, analysis)
        say(f"--align auto: step widths {sorted(set(align.values())) if isinstance(align, dict) else align}")
    phases["profiling"] = time.perf_counter() - t0

    # interleaved rounds of short blocks, so every model sees every machine state: a third of
    # --repeat runs per block in the probes and confirmations, a quarter in the final check
    # (a few seconds on ResNet-50), and never under BLOCK_SECONDS (a fast network's short block
    # reads it slow: see side_by_side)
    confirm = create_backend(target, timing=TimingConfig(warmup=3, repeat=max(5, repeat // 3), threads=threads,
                                                         min_seconds=BLOCK_SECONDS),
                             use_cache=False, **(backend_options or {}))
    fresh = create_backend(target, timing=TimingConfig(warmup=3, repeat=max(3, repeat // 4), threads=threads,
                                                       min_seconds=BLOCK_SECONDS),
                           use_cache=False, **(backend_options or {}))
    build = lambda keep: materialize(loaded.original, PruningPlan(analysis, np.flatnonzero(~keep)))  # noqa: E731

    def rewrite_checked(plan: PruningPlan):
        """The pruned (and merged) network, checked by its oracle before anything measures it."""
        t0 = time.perf_counter()
        merges = applicable_merges(plan, getattr(crit, "twins", {}))
        pruned = materialize_merged(loaded.original, plan, merges) if not plan.is_empty else loaded.original
        res = merge_oracle(loaded.original, pruned, plan.removed_channels, merges, random_inputs(loaded.original))
        if not res.exact:
            raise RewriteError(f"the pruned network does not match the oracle ({res.max_rel_error:.3g})")
        phases["rewrite_and_oracle"] = phases.get("rewrite_and_oracle", 0.0) + time.perf_counter() - t0
        return pruned, merges, res

    def check_final(pruned: onnx.ModelProto) -> tuple[FinalCheck, float]:
        """The final check (timed side by side now, uncached) and the budget in its terms (ms)."""
        t0 = time.perf_counter()
        check = final_check(fresh, loaded.original, pruned, process=final_check_process)
        phases["final_measurement"] = phases.get("final_measurement", 0.0) + time.perf_counter() - t0
        final_budget_ms = budget.target_ms(check.base.median_ms)
        say(f"final check ({len(check.ratios)} session pairs, {check.process} process): {check.final.median_ms:.3f} ms "
            f"beside the original at {check.base.median_ms:.3f} ms, {check.final.median_ms / final_budget_ms:.1%} "
            f"of the budget")
        return check, final_budget_ms

    rescores: list[int] = []

    def rescorer(keep: np.ndarray) -> np.ndarray:
        """The criterion at ``keep``: one progress line per re-score, not the first scoring's batch lines."""
        t0 = time.perf_counter()
        lines, crit.progress = crit.progress, lambda msg: None
        try:
            out = crit.score(analysis, keep)
        finally:
            crit.progress = lines
        seconds = time.perf_counter() - t0
        phases["rescore"] = phases.get("rescore", 0.0) + seconds
        rescores.append(int(keep.sum()))
        say(f"{criterion}: scored again at {int(keep.sum())} of {keep.size} units in {seconds:.1f} s")
        return out
    # no margin when the original already meets the budget: then there is nothing to prune
    aim_ms = budget_ms if budget_ms >= baseline.median_ms else budget_ms * (1.0 - margin)
    attempts: list[dict[str, Any]] = []
    confirmations: list[dict[str, float]] = []
    kept: _Outcome | None = None   # an under-filled first network, the answer unless a fuller one passes
    why = "first"
    for attempt in range(1, FINAL_ATTEMPTS + 1):   # after the loop, ``attempt`` counts the searches run
        rescores.clear()   # the report's steps and re-scores are the last search's
        meter = CandidateMeter(loaded.original, build, backend, confirm, budget, aim_ms, baseline.median_ms, say)
        t0 = time.perf_counter()
        result = _search(search, analysis, scores, cost, channels, meter, aim_ms, baseline.median_ms, align, edges,
                         not global_scale(crit), say, rescorer if rescore else None, max_group_cut)
        phases["search"] = phases.get("search", 0.0) + time.perf_counter() - t0
        confirmations += meter.confirmations
        plan = PruningPlan(analysis, np.flatnonzero(~result.keep))
        if kept is not None and (not result.reached or np.array_equal(result.keep, kept.result.keep)):
            say("the search aiming higher found no other network: keeping the first")
            break
        if not result.reached:
            break

        pruned, merges, res = rewrite_checked(plan)
        check, final_budget_ms = check_final(pruned)
        attempts.append({"aim_ms": aim_ms, "why": why, "removed_units": int(plan.removed_units.size),
                         "final_budget_ms": final_budget_ms, **check.to_dict()})
        within = check.upper_ms <= final_budget_ms
        if kept is not None:
            break   # the fuller of the two is chosen below
        fuller_ms = min((h.measured_ms for h in result.history if h.measured_ms > aim_ms), default=None)
        higher = (raised_aim(aim_ms, budget_ms, result.measured_ms, baseline.median_ms, check, final_budget_ms,
                             fuller_ms=fuller_ms) if within and attempt == 1 and not plan.is_empty else None)
        if higher is not None:
            kept = _Outcome(result, plan, pruned, merges, res, check, final_budget_ms, aim_ms, list(rescores))
            seen = (f"it timed a fuller network at {fuller_ms:.3f} ms, within the budget"
                    if fuller_ms is not None and higher == CEILING * budget_ms >= fuller_ms else
                    f"the search read the network {result.measured_ms / aim_ms:.1%} of its aim")
            say(f"final check {check.final.median_ms / final_budget_ms:.1%} of the budget, under "
                f"{UNDERFILL:.0%}; {seen}: searching again aiming at {higher:.3f} ms "
                f"(attempt {attempt + 1}/{FINAL_ATTEMPTS})")
            aim_ms, why = higher, "aim higher"
            continue
        # accepted with half the spread of its session pairs on top, so that a re-measurement in
        # another process does not tip it over; on the last search, the median alone decides
        if within or plan.is_empty or attempt == FINAL_ATTEMPTS:
            break
        # the search's confirmation passed but the final check did not: the machine's state
        # moved between them, the fresh process times the pair apart from the searching one, or
        # the pairs disagree by more than the room left under the budget.
        # Aim lower by the overshoot (of the upper bound) and 1% more, and search again
        # (the margin is in the aim already: taking it off again made second searches over-prune).
        aim_ms *= final_budget_ms / check.upper_ms * 0.99
        why = "aim lower"
        over = (f"{check.final.median_ms:.3f} ms" if check.final.median_ms > final_budget_ms else
                f"{check.final.median_ms:.3f} ms + {check.pair_spread_ms:.3f} ms (half the spread of its "
                f"{len(check.ratios)} session pairs)")
        say(f"final check {over} is over the budget {final_budget_ms:.3f} ms: searching again "
            f"aiming at {aim_ms:.3f} ms (attempt {attempt + 1}/{FINAL_ATTEMPTS})")
    kept_attempt = len(attempts)
    if kept is not None and not (result.reached and len(attempts) == 2 and _fuller(check, final_budget_ms, kept)):
        result, plan, pruned, merges, res = kept.result, kept.plan, kept.pruned, kept.merges, kept.res
        check, final_budget_ms, aim_ms, rescores[:] = kept.check, kept.final_budget_ms, kept.aim_ms, kept.rescores
        kept_attempt = 1
        if len(attempts) == 2:
            say("keeping the first network: the one aimed higher did not pass its final check fuller")

    history = [{"step": h.step, "removed_units": h.removed_units, "predicted_ms": h.predicted_ms,
                "measured_ms": h.measured_ms} for h in result.history]
    if not result.reached and not best_effort:
        raise UnreachableBudget(
            f"budget {budget_ms:.3f} ms not reachable with search {search}: best measured latency "
            f"{result.measured_ms:.3f} ms (baseline {baseline.median_ms:.3f} ms); use --best-effort to "
            f"write that network anyway", result.measured_ms)
    if not result.reached:  # best effort: the best network found, checked and measured like any other
        pruned, merges, res = rewrite_checked(plan)
        check, final_budget_ms = check_final(pruned)
    base_again, final = check.base, check.final
    if final.median_ms > final_budget_ms and not best_effort:
        raise UnreachableBudget(
            f"the final measurement, {final.median_ms:.3f} ms beside the original at {base_again.median_ms:.3f} ms, "
            f"is over the budget {final_budget_ms:.3f} ms after {len(attempts)} searches (this machine's timings "
            f"are moving): rerun, raise --margin, or use --best-effort to write it anyway", final.median_ms)
    pruned_cg = onnx_to_channel_graph(gs.import_onnx(pruned))
    report = {
        "input": loaded.path, "target": target, "settings": backend.settings(), "search": search,
        "criterion": criterion, "align": "auto" if auto_align else align,
        "align_per_group": {str(g): w for g, w in align.items()} if isinstance(align, dict) else None,
        "budget": budget.text, "budget_ms": budget_ms, "final_budget_ms": final_budget_ms,
        "reached": bool(final.median_ms <= final_budget_ms), "search_reached": result.reached,
        "search_measured_ms": result.measured_ms,
        "baseline": baseline.to_dict(), "baseline_fresh": base_again.to_dict(), "final": final.to_dict(),
        "final_check_process": check.process,
        "speedup": base_again.median_ms / final.median_ms if final.median_ms else None,
        "budget_used": final.median_ms / final_budget_ms if final_budget_ms else None,
        "margin": margin, "max_group_cut": max_group_cut if search in ("opti-cut", "flops") else None,
        "aim_ms": aim_ms, "attempts": attempts, "kept_attempt": kept_attempt,
        "searches": attempt,
        "rescore": bool(rescore), "rescored_at_units_left": rescores,
        "scores_normalized_per_group": not global_scale(crit),
        "confirmations": confirmations, "merged_channels": len(merges),
        "merges": [m._asdict() for m in merges],
        "steps": history, "params_before": count_params(loaded.channel_graph), "params_after": count_params(pruned_cg),
        "macs_before": count_macs(loaded.channel_graph), "macs_after": count_macs(pruned_cg),
        "group_sizes": plan.group_sizes(), "removed_units": int(plan.removed_units.size),
        "oracle": {"max_rel_error": res.max_rel_error, "tolerance": res.tolerance},
        "seconds": phases, "removed_channels": plan.removed_channels,
    }
    if calib_entry:
        report["calibration"] = calib_entry
    return {"model": pruned, "plan": plan, "report": report}


@dataclasses.dataclass
class _Outcome:
    """One search's network with its final check: what a later search may be measured against."""

    result: Any
    plan: PruningPlan
    pruned: onnx.ModelProto
    merges: list
    res: Any
    check: FinalCheck
    final_budget_ms: float
    aim_ms: float
    rescores: list[int]


def _fuller(check: FinalCheck, final_budget_ms: float, first: _Outcome) -> bool:
    """Whether ``check``'s network passes its final check (half its pairs' spread on top) and
    uses more of the budget than the first network did of its own."""
    return (check.upper_ms <= final_budget_ms
            and check.final.median_ms / final_budget_ms > first.check.final.median_ms / first.final_budget_ms)


def _search(search: str, analysis, scores, cost, channels, meter, aim_ms: float, baseline_ms: float,
            align, edges, normalize: bool, say: Callable[[str], None],
            rescore: Callable[[np.ndarray], np.ndarray] | None = None, max_group_cut: float = MAX_GROUP_CUT):
    """One run of the chosen search towards ``aim_ms``; candidates timed by ``meter``."""
    from hwprune_fx.search.hilp import hilp_search
    from hwprune_fx.search.opti_cut import SearchResult, SearchStep, opti_cut
    from hwprune_fx.search.uniform import uniform_search

    if aim_ms >= baseline_ms:
        say("the baseline already meets the budget: nothing to prune")
        return SearchResult(np.ones(analysis.num_units, bool), True, baseline_ms,
                            [SearchStep(0, 0, baseline_ms, baseline_ms)])
    if search == "hilp":
        return hilp_search(analysis, scores, cost, meter.measure, aim_ms, baseline_ms, align=align, edges=edges,
                           progress=say, measure_many=meter.measure_many, normalize=normalize,
                           rescore=rescore, rescore_every=RESCORE_EVERY)
    if search == "uniform":
        return uniform_search(analysis, scores, meter.measure, aim_ms, baseline_ms, round_to=align, progress=say,
                              recheck=meter.recheck)
    return opti_cut(analysis, scores, cost, channels, meter.measure, aim_ms, baseline_ms, align=align, progress=say,
                    normalize=normalize, probe=meter.probe, recalibrate_every=RECALIBRATE_EVERY,
                    rescore=rescore, rescore_every=RESCORE_EVERY, max_group_cut=max_group_cut)

