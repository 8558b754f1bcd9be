"""``prune``: prune until the latency *measured on the context's target* meets a budget.

    model -> analysis -> criterion -> search (opti-cut | hilp | flops | uniform), measured
          -> exact rewrite -> oracle -> model within the budget

A thin pass over :func:`hwprune_fx.prune_budget.prune_to_budget`: the options are the
search's; where and how latency is measured (target, threads, repeat, cache, calibration
data, input shapes, progress) comes from the :class:`PassContext`. The full report is in the
pass details (``report``). A budget the search cannot reach raises ``UnreachableBudget``
unless ``best_effort``.
"""
from __future__ import annotations

import inspect
from typing import Annotated, Any, Literal

import onnx

from hwprune_fx.criteria import available_criteria
from hwprune_fx.errors import UserError
from hwprune_fx.pass_infra import Choices, PassBase, PassContext, PassResult, Range, register_pass
from hwprune_fx.search.budget import Budget

__all__ = ["PruneToBudgetPass"]

_SEARCHES = ("opti-cut", "hilp", "flops", "uniform")


@register_pass("prune")
class PruneToBudgetPass(PassBase):
    """Prune to a latency budget measured on the target (hardware-aware search, exact rewrite)."""

    in_place = False

    def __init__(self, budget: Budget,
                 search: Annotated[str, Choices(_SEARCHES)] = "opti-cut",
                 criterion: Annotated[str, Choices(available_criteria)] = "l1",
                 align: Annotated[int, Range(1)] | Literal["auto"] = 8,
                 cost_model: Annotated[str, Choices(("lut", "flops"))] = "lut",
                 best_effort: bool = False,
                 margin: Annotated[float, Range(0.0, 0.5, high_open=True)] = 0.03,
                 rescore: bool | None = None) -> None:
        """
        Args:
            budget: latency to reach: 12ms, 800us, 60% (of the measured input) or 1.8x.
            search: how channels are chosen (opti-cut, hilp, flops, uniform).
            criterion: importance criterion.
            align: channel multiple the search keeps groups at (1: none; auto: per group, measured).
            cost_model: cheap latency estimate the search confirms by measurement.
            best_effort: return the best network found when the budget is missed.
            margin: fraction under the budget the search aims at (timing spread between processes).
            rescore: score a data-driven criterion again on the network cut so far as the search
                goes down (none: the criterion's default, on for ig-mean).
        """
        self.budget = budget
        self.search = search
        self.criterion = criterion
        self.align = align
        self.cost_model = cost_model
        self.best_effort = best_effort
        self.margin = margin
        self.rescore = rescore

    def call(self, model: Any) -> PassResult:
        if not isinstance(model, onnx.ModelProto):
            raise UserError(f"prune works on an onnx.ModelProto, not {type(model).__name__}")
        from hwprune_fx.prune_budget import prune_to_budget

        ctx = PassContext.current()
        kwargs: dict[str, Any] = dict(
            target=ctx.target, search=self.search, criterion=self.criterion, cost_model=self.cost_model,
            align=self.align, threads=ctx.threads, repeat=ctx.repeat,
            input_shapes=dict(ctx.input_shapes) if ctx.input_shapes else None, cache_dir=ctx.cache_dir,
            best_effort=self.best_effort, margin=self.margin, rescore=self.rescore, progress=ctx.progress,
            backend_options=dict(ctx.backend_options) if ctx.backend_options else None)
        accepted = inspect.signature(prune_to_budget).parameters
        if ctx.calib is not None:
            if "calib" not in accepted:
                raise UserError("prune: calibration data was given but the budget search takes none yet")
            kwargs["calib"] = ctx.calib
        out = prune_to_budget(model, self.budget, **kwargs)
        report = out["report"]
        if out["plan"].is_empty:
            return PassResult(model, False, {"report": report})
        return PassResult(out["model"], True, {"report": report})
