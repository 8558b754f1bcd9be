"""The main job: prune an ONNX model until its *measured* latency on a target meets a budget.

    load -> analyze -> criterion -> baseline measured -> cost model (LUT sweeps) ->
    search (opti-cut | flops | uniform), confirmed by measurement -> rewrite -> oracle ->
    final latency measured again in a fresh session -> report
"""
from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import onnx

from hwprune_fx.analysis import analyze_dependencies
from hwprune_fx.criteria import require_data
from hwprune_fx.errors import HwpruneError, RewriteError, UserError
from hwprune_fx.plan import PruningPlan
from hwprune_fx.search.budget import Budget, parse_budget
from hwprune_fx.targets import TimingConfig, create_backend

if TYPE_CHECKING:
    from hwprune_fx.pipeline import CalibInput

__all__ = ["UnreachableBudget", "prune_to_budget", "SEARCHES"]

SEARCHES = ("opti-cut", "hilp", "flops", "uniform")


class UnreachableBudget(HwpruneError):
    """No pruning the search could find meets the budget; carries the best latency reached."""

    def __init__(self, message: str, best_ms: float, result: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.best_ms = best_ms
        self.result = result


def prune_to_budget(model: str | os.PathLike | onnx.ModelProto, budget: str | Budget, *, target: str = "ort-cpu",
                    search: str = "opti-cut", criterion: str = "l1", cost_model: str = "lut", align: int = 8,
                    threads: int = 1, repeat: int = 20, input_shapes: dict | None = None,
                    cache_dir: str | os.PathLike | None = None, best_effort: bool = False,
                    progress: Callable[[str], None] | None = None, backend_options: dict | None = None,
                    calib: CalibInput = None) -> dict[str, Any]:
    """Returns ``{"model": pruned ModelProto, "plan": PruningPlan, "report": {...}}``.

    ``calib`` (a path, :class:`~hwprune_fx.calib.CalibrationSource` or
    :class:`~hwprune_fx.calib.CalibrationData`) feeds the data-driven criteria ``taylor`` and ``ig``.

    Raises:
        UnreachableBudget: the budget cannot be met (unless ``best_effort``).
    """
    from hwprune_fx.cost_models import LayerChannels, create_cost_model
    from hwprune_fx.cost_models.lut import LutCostModel
    from hwprune_fx.cost_models.flops import count_macs, count_params
    from hwprune_fx.frontends.onnx_frontend import onnx_to_channel_graph
    from hwprune_fx.oracle import onnx_oracle, random_inputs
    from hwprune_fx.calib import model_input_specs
    from hwprune_fx.pipeline import load_onnx_model, make_criterion, materialize
    from hwprune_fx.profiling.layers import find_layers
    from hwprune_fx.search.hilp import hilp_search
    from hwprune_fx.search.opti_cut import opti_cut
    from hwprune_fx.search.uniform import uniform_search
    import onnx_graphsurgeon as gs

    say = progress or (lambda msg: None)
    budget = parse_budget(budget) if isinstance(budget, str) else budget
    if search not in SEARCHES:
        raise UserError(f"unknown search {search!r}; choose one of: {', '.join(SEARCHES)}")
    if align < 1:
        raise UserError("--align must be >= 1")
    require_data(criterion, calib)
    timing = TimingConfig(warmup=5, repeat=repeat, threads=threads)
    backend = create_backend(target, timing=timing, cache_dir=cache_dir, **(backend_options or {}))
    phases: dict[str, float] = {}

    t0 = time.perf_counter()
    loaded = load_onnx_model(model, input_shapes)
    analysis = analyze_dependencies(loaded.channel_graph)
    crit, calib_entry = make_criterion(criterion, loaded.original, calib, model_input_specs(loaded.original), say)
    scores = crit.score(analysis)
    phases["load_and_analysis"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    baseline = backend.measure(loaded.original)
    budget_ms = budget.target_ms(baseline.median_ms)
    say(f"baseline {baseline.median_ms:.3f} ms on {target} ({threads} thread); budget {budget_ms:.3f} ms")
    phases["baseline"] = time.perf_counter() - t0

    channels = LayerChannels.build(analysis, find_layers(loaded.graph))
    t0 = time.perf_counter()
    if search == "flops":
        cost = create_cost_model("flops", channels=channels)
    elif search in ("opti-cut", "hilp"):
        if cost_model != "lut":
            raise UserError(f"{search} estimates with the lut cost model in this version (--cost-model lut)")
        cost = LutCostModel.profile(channels, backend, progress=say)
    phases["profiling"] = time.perf_counter() - t0

    def measure(keep: np.ndarray) -> float:
        return backend.measure(materialize(loaded.original, PruningPlan(analysis, np.flatnonzero(~keep)))).median_ms

    t0 = time.perf_counter()
    if budget_ms >= baseline.median_ms:
        say("the baseline already meets the budget: nothing to prune")
        from hwprune_fx.search.opti_cut import SearchResult, SearchStep

        result = SearchResult(np.ones(analysis.num_units, bool), True, baseline.median_ms,
                              [SearchStep(0, 0, baseline.median_ms, baseline.median_ms)])
    elif search == "hilp":
        result = hilp_search(analysis, scores, cost, measure, budget_ms, baseline.median_ms, align=align,
                             progress=say)
    elif search == "uniform":
        result = uniform_search(analysis, scores, measure, budget_ms, baseline.median_ms, progress=say)
    else:
        result = opti_cut(analysis, scores, cost, channels, measure, budget_ms, baseline.median_ms,
                          align=align, progress=say)
    phases["search"] = time.perf_counter() - t0

    plan = PruningPlan(analysis, np.flatnonzero(~result.keep))
    history = [{"step": h.step, "removed_units": h.removed_units, "predicted_ms": h.predicted_ms,
                "measured_ms": h.measured_ms} for h in result.history]
    if not result.reached and not best_effort:
        raise UnreachableBudget(
            f"budget {budget_ms:.3f} ms not reachable with search {search}: best measured latency "
            f"{result.measured_ms:.3f} ms (baseline {baseline.median_ms:.3f} ms); use --best-effort to "
            f"write that network anyway", result.measured_ms)

    t0 = time.perf_counter()
    pruned = materialize(loaded.original, plan) if not plan.is_empty else loaded.original
    res = onnx_oracle(loaded.original, pruned, plan.removed_channels, random_inputs(loaded.original))
    if not res.exact:
        raise RewriteError(f"the pruned network does not match the oracle ({res.max_rel_error:.3g})")
    phases["rewrite_and_oracle"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    fresh = create_backend(target, timing=timing, use_cache=False, **(backend_options or {}))
    final = fresh.measure(pruned)
    base_again = fresh.measure(loaded.original)
    phases["final_measurement"] = time.perf_counter() - t0
    pruned_cg = onnx_to_channel_graph(gs.import_onnx(pruned))
    report = {
        "input": loaded.path, "target": target, "settings": backend.settings(), "search": search,
        "criterion": criterion, "align": align, "budget": budget.text, "budget_ms": budget_ms,
        "reached": bool(final.median_ms <= budget_ms), "search_reached": result.reached,
        "search_measured_ms": result.measured_ms,
        "baseline": baseline.to_dict(), "baseline_fresh": base_again.to_dict(), "final": final.to_dict(),
        "speedup": base_again.median_ms / final.median_ms if final.median_ms else None,
        "budget_used": final.median_ms / budget_ms if budget_ms else None,
        "steps": history, "params_before": count_params(loaded.channel_graph), "params_after": count_params(pruned_cg),
        "macs_before": count_macs(loaded.channel_graph), "macs_after": count_macs(pruned_cg),
        "group_sizes": plan.group_sizes(), "removed_units": int(plan.removed_units.size),
        "oracle": {"max_rel_error": res.max_rel_error, "tolerance": res.tolerance},
        "seconds": phases, "removed_channels": plan.removed_channels,
    }
    if calib_entry:
        report["calibration"] = calib_entry
    return {"model": pruned, "plan": plan, "report": report}
