"""``merge-similar``: remove the channels that are near-scaled copies of a kept twin, merged into it.

    T[c] ~= alpha * T[k]   ->   W_next[:, k] += alpha * W_next[:, c];  channel c removed

AFCP's *similar* choice on its own: only channels whose relative residual against their best
twin is at most ``max_residual`` go, so the network barely changes. The result is exact by the
merge oracle (the original with ``T[c]`` replaced by ``alpha * T[k]``). Needs calibration data
(the pass context's ``calib``). Functional; the pass details hold the merges.
"""
from __future__ import annotations

from typing import Annotated, Any

import numpy as np
import onnx

from hwprune_fx.errors import RewriteError, UserError
from hwprune_fx.pass_infra import PassBase, PassContext, PassResult, Range, register_pass

__all__ = ["MergeSimilarChannelsPass"]


@register_pass("merge-similar")
class MergeSimilarChannelsPass(PassBase):
    """Merge channels that are near-scaled copies of a kept channel into it (exact by the merge oracle)."""

    in_place = False

    def __init__(self, max_residual: Annotated[float, Range(0.0, 1.0, low_open=True)] = 0.02,
                 max_fraction: Annotated[float, Range(0.0, 1.0, low_open=True, high_open=True)] = 0.5) -> None:
        """
        Args:
            max_residual: largest relative residual ||a_c - alpha a_k||^2 / ||a_c||^2 merged.
            max_fraction: at most this fraction of a group's channels is merged away.
        """
        self.max_residual = max_residual
        self.max_fraction = max_fraction

    def call(self, model: Any) -> PassResult:
        if not isinstance(model, onnx.ModelProto):
            raise UserError(f"merge-similar works on an onnx.ModelProto, not {type(model).__name__}")
        from hwprune_fx.analysis import analyze_dependencies
        from hwprune_fx.calib import model_input_specs
        from hwprune_fx.merge_oracle import merge_oracle
        from hwprune_fx.oracle import random_inputs
        from hwprune_fx.passes.merge_similar import applicable_merges, materialize_merged
        from hwprune_fx.pipeline import load_onnx_model, make_criterion
        from hwprune_fx.plan import PruningPlan

        ctx = PassContext.current()
        loaded = load_onnx_model(model, dict(ctx.input_shapes) if ctx.input_shapes else None)
        analysis = analyze_dependencies(loaded.channel_graph)
        crit, _ = make_criterion("similarity", loaded.original, ctx.calib, model_input_specs(loaded.original),
                                 ctx.progress)
        crit.max_residual = self.max_residual
        scores = crit.score(analysis)  # fills crit.twins
        removed = self._choose(analysis, crit.twins, scores)
        if not removed:
            return PassResult(model, False, {"merges": []})
        plan = PruningPlan(analysis, np.asarray(removed, np.int64))
        merges = applicable_merges(plan, crit.twins)
        pruned = materialize_merged(loaded.original, plan, merges)
        res = merge_oracle(loaded.original, pruned, plan.removed_channels, merges,
                           random_inputs(loaded.original, seed=ctx.seed))
        if not res.exact:
            raise RewriteError(f"merge-similar: the merged network does not match the merge oracle "
                               f"({res.max_rel_error:.3g})")
        return PassResult(pruned, True, {"merges": [m._asdict() for m in merges],
                                         "removed_channels": plan.removed_channels,
                                         "oracle_max_rel_error": res.max_rel_error})

    def _choose(self, analysis: Any, twins: dict, scores: np.ndarray) -> list[int]:
        """Per group, merge the cheapest twins first, up to ``max_fraction`` of its channels;
        a twin that is itself merged away keeps its own channel instead."""
        group_of = {int(u): g for g in analysis.prunable_groups() for u in g.units.tolist()}
        budget = {g.id: int(np.floor(self.max_fraction * g.size)) for g in analysis.prunable_groups()}
        removed: set[int] = set()
        for unit, merge in sorted(twins.items(), key=lambda kv: scores[kv[0]]):
            g = group_of.get(int(unit))
            if g is None or budget[g.id] <= 0 or merge.twin in removed:
                continue
            removed.add(int(unit))
            budget[g.id] -= 1
        return sorted(removed)
