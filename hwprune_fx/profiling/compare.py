"""Per-layer latency of a network before and after pruning, on one backend.

    original, pruned -> profile_layers(each, same backend) -> rows matched by layer name

Both networks are profiled with :func:`~hwprune_fx.profiling.profile.profile_layers` on the
same backend object, so target, threads and repeat are the same for both sides. Pruning keeps
node names (the rewrite slices tensors, it does not rename operators), so a layer is matched by
name; a layer present on one side only gets ``None`` on the other.
"""
from __future__ import annotations

import os
from typing import Any, Callable

import onnx

from hwprune_fx.targets.base import Backend

__all__ = ["layer_latency_before_after"]


def layer_latency_before_after(original: str | os.PathLike | onnx.ModelProto,
                               pruned: str | os.PathLike | onnx.ModelProto, backend: Backend, *, input_shapes: dict | None = None,
                               progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """One row per layer of ``original`` (then layers only ``pruned`` has), in graph order.

    Args:
        original: the network before pruning (path or model).
        pruned: the network after pruning.
        backend: where both are timed (the same object for both sides).
        input_shapes: static input shapes for ``original`` (the pruned model carries its own).
        progress: one-line messages.

    Returns:
        ``[{"layer", "op", "before_ms", "after_ms", "before_channels", "after_channels"}]``;
        channels are ``[in, out]``; a side that lacks the layer has ``None``.
    """
    from hwprune_fx.pipeline import load_onnx_model
    from hwprune_fx.profiling.profile import profile_layers

    sides = []
    for label, model, shapes in (("original", original, input_shapes), ("pruned", pruned, None)):
        loaded = load_onnx_model(model, shapes)
        if progress:
            progress(f"per-layer latency of the {label} network on {backend.name}")
        sides.append(profile_layers(loaded.graph, loaded.original, backend)["layers"])
    before, after = ({r["layer"]: r for r in rows} for rows in sides)
    names = [r["layer"] for r in sides[0]] + [r["layer"] for r in sides[1] if r["layer"] not in before]
    out = []
    for name in names:
        b, a = before.get(name), after.get(name)
        out.append({"layer": name, "op": (b or a)["op"],
                    "before_ms": b["ms"] if b else None, "after_ms": a["ms"] if a else None,
                    "before_channels": [b["in_channels"], b["out_channels"]] if b else None,
                    "after_channels": [a["in_channels"], a["out_channels"]] if a else None})
    return out
