"""``prune-channels``: apply a PruningPlan to the concrete IR (ONNX graph or fx module).

    Conv(x)[C] -> Conv(x)[C - removed]   and every coupled tensor with it

The plan comes from the dependency analysis of the same model, so every coupled tensor
loses the same channels and the result is exact by the oracle.
"""
from __future__ import annotations

from typing import Any

import onnx_graphsurgeon as gs

from hwprune_fx.pass_infra import PassBase, PassResult
from hwprune_fx.plan import PruningPlan

__all__ = ["PruneChannelsPass"]


class PruneChannelsPass(PassBase):
    """Remove the plan's channels from an onnx-graphsurgeon graph or a torch.fx GraphModule."""

    name = "prune-channels"
    in_place = True

    def __init__(self, plan: PruningPlan) -> None:
        self.plan = plan

    def call(self, model: Any) -> PassResult:
        if self.plan.is_empty:
            return PassResult(model, False)
        if isinstance(model, gs.Graph):
            from hwprune_fx.passes.onnx_rewrite import rewrite_onnx_graph
            rewrite_onnx_graph(model, self.plan)
        else:
            from hwprune_fx.passes.fx_rewrite import rewrite_graph_module
            rewrite_graph_module(model, self.plan)
        return PassResult(model, True)
