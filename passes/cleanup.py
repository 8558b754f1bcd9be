"""``cleanup``: Identity nodes removed, dead nodes and unused initializers dropped, nodes sorted.

    Relu(Identity(x))          -> Relu(x)
    y = Identity(x), y output  -> x renamed y at its producer (when x is an inner tensor)
    Conv(x) with no use        -> (removed)

onnx-graphsurgeon's ``cleanup().toposort()`` does the dead-code and ordering part. Graph
inputs are kept (the interface does not change). Functional; when nothing changes the input
model itself is returned with ``modified=False``.
"""
from __future__ import annotations

from typing import Any

import onnx

from hwprune_fx.errors import UserError
from hwprune_fx.pass_infra import PassBase, PassResult, register_pass

__all__ = ["CleanupPass", "remove_identities"]


def remove_identities(graph: Any) -> int:
    """Bypass every removable Identity of an onnx-graphsurgeon graph; returns how many."""
    outputs = {id(t) for t in graph.outputs}
    inputs = {id(t) for t in graph.inputs}
    removed = 0
    for node in [n for n in graph.nodes if n.op == "Identity"]:
        if len(node.inputs) != 1 or len(node.outputs) != 1:
            continue
        x, y = node.inputs[0], node.outputs[0]
        if id(y) not in outputs:
            for consumer in list(y.outputs):
                for i, t in enumerate(consumer.inputs):
                    if t is y:
                        consumer.inputs[i] = x
        elif x.inputs and id(x) not in outputs and id(x) not in inputs:
            # y is a graph output: keep its name, let x's producer write it directly
            producer = x.inputs[0]
            for consumer in list(x.outputs):
                if consumer is node:
                    continue
                for i, t in enumerate(consumer.inputs):
                    if t is x:
                        consumer.inputs[i] = y
            producer.outputs[producer.outputs.index(x)] = y
        else:
            continue  # graph input or constant straight to an output: the Identity carries the name
        node.inputs.clear()
        node.outputs.clear()
        removed += 1
    return removed


@register_pass("cleanup")
class CleanupPass(PassBase):
    """Remove Identity nodes, dead nodes and unused initializers; sort nodes topologically."""

    in_place = False

    def __init__(self) -> None:
        """A pass without options."""

    def call(self, model: Any) -> PassResult:
        if not isinstance(model, onnx.ModelProto):
            raise UserError(f"cleanup works on an onnx.ModelProto, not {type(model).__name__}")
        import onnx_graphsurgeon as gs

        graph = gs.import_onnx(model)
        order = [id(n) for n in graph.nodes]
        identities = remove_identities(graph)
        graph.cleanup(remove_unused_graph_inputs=False).toposort()
        kept = [id(n) for n in graph.nodes]
        out = gs.export_onnx(graph)
        inits_removed = len({i.name for i in model.graph.initializer} - {i.name for i in out.graph.initializer})
        dead = len(order) - len(kept) - identities
        survivors = set(kept)
        reordered = kept != [i for i in order if i in survivors]
        if not identities and not dead and not inits_removed and not reordered:
            return PassResult(model, False)
        details = {"identities_removed": identities, "dead_nodes_removed": dead,
                   "initializers_removed": inits_removed, "reordered": reordered}
        return PassResult(out, True, details)
