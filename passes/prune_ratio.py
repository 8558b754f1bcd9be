"""``prune-ratio``: remove the same fraction of every prunable channel group, exactly.

    Conv(x)[C] -> Conv(x)[C - floor(ratio * C)]   and every coupled tensor with it

The plan is ``plan_by_ratio`` over the criterion's scores; the rewrite and its oracle check
are those of :func:`hwprune_fx.pipeline.prune_onnx` (a network that does not match the
oracle is a ``RewriteError``, never a result). Functional; the pass details hold the report.
"""
from __future__ import annotations

import inspect
from typing import Annotated, Any

import onnx

from hwprune_fx.criteria import available_criteria
from hwprune_fx.errors import UserError
from hwprune_fx.pass_infra import Choices, PassBase, PassContext, PassResult, Range, register_pass

__all__ = ["PruneRatioPass"]


@register_pass("prune-ratio")
class PruneRatioPass(PassBase):
    """Remove a fixed fraction of every prunable channel group (exact, oracle-checked)."""

    in_place = False

    def __init__(self, ratio: Annotated[float, Range(0.0, 1.0, low_open=True, high_open=True)],
                 criterion: Annotated[str, Choices(available_criteria)] = "l1",
                 verify: bool = True) -> None:
        """
        Args:
            ratio: fraction of each group's channels to remove, in (0, 1).
            criterion: importance criterion that picks the channels.
            verify: check the result against the oracle on random inputs.
        """
        self.ratio = ratio
        self.criterion = criterion
        self.verify = verify

    def call(self, model: Any) -> PassResult:
        if not isinstance(model, onnx.ModelProto):
            raise UserError(f"prune-ratio works on an onnx.ModelProto, not {type(model).__name__}")
        from hwprune_fx.pipeline import prune_onnx

        ctx = PassContext.current()
        shapes = dict(ctx.input_shapes) if ctx.input_shapes else None
        kwargs: dict[str, Any] = {}
        if ctx.calib is not None:  # data-driven criteria (taylor, ig) read the context's calibration data
            if "calib" not in inspect.signature(prune_onnx).parameters:
                raise UserError("prune-ratio: calibration data was given but the ratio pruning takes none yet")
            kwargs["calib"] = ctx.calib
        res = prune_onnx(model, ratio=self.ratio, criterion=self.criterion, input_shapes=shapes,
                         verify_output=self.verify, seed=ctx.seed, **kwargs)
        report = {k: v for k, v in res.report.items() if k != "removed_channels"}
        if res.plan.is_empty:
            return PassResult(model, False, {"report": report})
        return PassResult(res.model, True, {"report": report, "removed_channels": res.plan.removed_channels})
