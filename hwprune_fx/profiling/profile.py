"""``hwprune-fx profile``: per-layer latency on a target beside the whole network's."""
from __future__ import annotations

from typing import Any, Callable

import onnx_graphsurgeon as gs

from hwprune_fx.errors import UserError
from hwprune_fx.profiling.layers import Layer, find_layers, layer_model
from hwprune_fx.targets.base import Backend

__all__ = ["profile_layers", "find_layer"]


def profile_layers(graph: gs.Graph, whole_model: Any, backend: Backend,
                   progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Time every layer alone and the whole network; JSON-ready result."""
    layers = find_layers(graph)
    rows = []
    for i, layer in enumerate(layers):
        m = backend.measure(layer_model(layer))
        rows.append({"layer": layer.name, "op": "+".join([layer.op_type, *layer.fused]),
                     "input_shape": list(layer.input_shape), "in_channels": layer.in_channels,
                     "out_channels": layer.out_channels, "group": layer.group, "ms": m.median_ms,
                     "spread_ms": m.spread_ms, "macs": layer.macs()})
        if progress:
            progress(i + 1, len(layers))
    whole = backend.measure(whole_model)
    total = sum(r["ms"] for r in rows)
    for r in rows:
        r["share"] = r["ms"] / whole.median_ms if whole.median_ms else 0.0
    return {"target": backend.name, "settings": backend.settings(), "whole": whole.to_dict(),
            "sum_of_layers_ms": total, "layers": rows}


def find_layer(graph: gs.Graph, query: str) -> Layer:
    """A layer by node name, or by a torch-style module path such as ``layer3.0.conv2``."""
    layers = find_layers(graph)
    exact = [layer for layer in layers if layer.name == query]
    if exact:
        return exact[0]
    q = query.strip("/").replace("/", ".")
    hits = [layer for layer in layers if f".{q}." in "." + layer.name.strip("/").replace("/", ".") + "."]
    if len(hits) == 1:
        return hits[0]
    sample = ", ".join(layer.name for layer in (hits or layers)[:5])
    what = "matches several layers" if hits else "matches no layer"
    raise UserError(f"--sweep {query!r} {what}; e.g. {sample}")
