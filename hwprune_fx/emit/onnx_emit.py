"""Turn a rewritten graph back into a checked ONNX model."""
from __future__ import annotations

import onnx
import onnx_graphsurgeon as gs

from hwprune_fx.errors import RewriteError
from hwprune_fx.frontends.onnx_io import fits_in_protobuf, infer_shapes_static
from hwprune_fx.plan import PruningPlan

__all__ = ["export_checked"]


def export_checked(graph: gs.Graph, plan: PruningPlan | None = None) -> onnx.ModelProto:
    """Export, re-infer shapes, check every channel count against the plan, run the full checker."""
    model = gs.export_onnx(graph)
    try:
        model = infer_shapes_static(model)
        if fits_in_protobuf(model):
            onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise RewriteError(f"pruned model failed the ONNX checker: {str(exc).splitlines()[0]}") from None
    if plan is not None:
        from hwprune_fx.passes.onnx_rewrite import check_channel_counts
        check_channel_counts(model, plan)
    return model
