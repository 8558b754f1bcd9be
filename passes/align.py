"""``align``: trim every prunable channel group to a multiple of its hardware step.

    Conv(x)[30] -> Conv(x)[24]        (multiple 8: the 6 least important channels go)

Latency is a staircase in the channel count (onnxruntime on AVX2 computes output channels
in blocks of 8), so the channels above the last full step cost time and buy little. The
count is rounded *down*; a group smaller than its multiple is left alone, so no group is
ever removed whole. The multiple is one int for all groups, or ``auto`` with per-group
widths (from ``search.staircase.auto_alignment`` on the same model's analysis; group ids
are those of ``analyze_dependencies`` on this model, so they match).

Functional: the input ModelProto is not changed; the result is exact by the oracle against
it (the removed channels are those of :meth:`AlignChannelsPass.plan_for`).
"""
from __future__ import annotations

from typing import Annotated, Literal, Mapping

import numpy as np
import onnx

from hwprune_fx.criteria import available_criteria
from hwprune_fx.errors import UserError
from hwprune_fx.pass_infra import PassBase, PassResult
from hwprune_fx.pass_infra.registry import Choices, Range, register_pass
from hwprune_fx.plan import PruningPlan

__all__ = ["AlignChannelsPass", "aligned_removal"]


def aligned_removal(analysis, scores: np.ndarray, multiple: int | Mapping[int, int],
                    default: int = 1) -> np.ndarray:
    """Unit ids to remove so every prunable group keeps a multiple of its own ``multiple``.

    Per group, ``size % multiple`` least important units (by ``scores``) go; groups smaller
    than their multiple, and groups whose removal would empty a tensor they share only in
    part (a split piece), are left alone. A group missing from a mapping uses ``default``.
    """
    removed = np.zeros(analysis.num_units, dtype=bool)
    for grp in analysis.prunable_groups():
        m = int(multiple) if isinstance(multiple, (int, np.integer)) else int(multiple.get(grp.id, default))
        if m <= 1 or grp.size < m or grp.size % m == 0:
            continue
        order = grp.units[np.argsort(scores[grp.units], kind="stable")]
        trial = removed.copy()
        trial[order[: grp.size % m]] = True
        if any(trial[analysis.units_of(t)].all() for t in grp.tensors if analysis.units_of(t).size):
            continue
        removed = trial
    return np.flatnonzero(removed)


@register_pass("align")
class AlignChannelsPass(PassBase):
    """Round every prunable group's channel count down to a multiple of its hardware step."""

    name = "align"
    in_place = False

    def __init__(self, multiple: Annotated[int, Range(1)] | Literal["auto"] = 8,
                 criterion: Annotated[str, Choices(available_criteria)] = "l1",
                 widths: Mapping[int, int] | None = None,
                 input_shapes: dict[str, list[int]] | None = None) -> None:
        """
        Args:
            multiple: the channel multiple of every group, or ``auto`` (per group, ``widths``).
            criterion: importance criterion; the least important extra channels go.
            widths: per group id, its step width (``search.staircase.auto_alignment``).
            input_shapes: fixed input shapes for models with dynamic dimensions.
        """
        if multiple == "auto":
            if widths is None:
                raise UserError("align auto needs the per-group step widths (search.staircase.auto_alignment)")
            self.multiple: int | dict[int, int] = {int(g): int(w) for g, w in widths.items()}
        elif isinstance(multiple, str) or int(multiple) != multiple or int(multiple) < 1:
            raise UserError(f"align: the multiple must be a positive integer or 'auto', got {multiple!r}")
        else:
            self.multiple = int(multiple)
        self.criterion = criterion
        self.input_shapes = input_shapes

    def plan_for(self, model: onnx.ModelProto) -> tuple[onnx.ModelProto, PruningPlan]:
        """(prepared copy of ``model``, the plan that aligns it): what :meth:`call` applies."""
        from hwprune_fx.analysis import analyze_dependencies
        from hwprune_fx.criteria import create_criterion
        from hwprune_fx.pipeline import load_onnx_model

        loaded = load_onnx_model(model, self.input_shapes)
        analysis = analyze_dependencies(loaded.channel_graph)
        scores = create_criterion(self.criterion).score(analysis)
        return loaded.original, PruningPlan(analysis, aligned_removal(analysis, scores, self.multiple))

    def call(self, model: onnx.ModelProto) -> PassResult:
        from hwprune_fx.pipeline import materialize

        original, plan = self.plan_for(model)
        if plan.is_empty:
            return PassResult(model, False)
        return PassResult(materialize(original, plan), True)
