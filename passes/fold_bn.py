"""``fold-bn``: fold an inference BatchNorm into the convolution that feeds it.

    BatchNormalization(Conv(x, W, b)) -> Conv(x, W * s, (b - mean) * s + beta)
        with s = scale / sqrt(var + epsilon), per output channel

ONNX: a ``BatchNormalization`` (one output, not in training mode, constant parameters) whose
input is the output of a ``Conv`` with constant weight (and bias) and no other consumer.
Shared weights are copied, not changed. A torch ``nn.Module`` / fx ``GraphModule`` (in eval
mode) goes through ``torch.fx.experimental.optimization.fuse`` (Conv + BatchNorm, and
Linear + BatchNorm1d). Functional: the input model is not changed; the output equals it
within float rounding. A BN that does not match says why in the pass details.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from hwprune_fx.errors import UserError
from hwprune_fx.pass_infra import PassBase, PassResult, register_pass

__all__ = ["FoldBatchNormPass", "fold_bn_onnx", "fold_bn_fx"]


def _const(t: Any) -> np.ndarray | None:
    import onnx_graphsurgeon as gs

    return np.asarray(t.values) if isinstance(t, gs.Constant) else None


def _why_not(bn: Any, graph_outputs: set[int]) -> str | None:
    """None when ``bn`` can be folded into its producer, else the reason it cannot."""
    if len(bn.outputs) != 1 or bn.attrs.get("training_mode", 0):
        return "training-mode BatchNormalization"
    x = bn.inputs[0]
    if not x.inputs:
        return "input is not produced by a node"
    conv = x.inputs[0]
    if conv.op != "Conv":
        return f"input comes from {conv.op}, not Conv"
    if len(x.outputs) != 1 or id(x) in graph_outputs:
        return "the Conv output has other consumers"
    if any(_const(t) is None for t in bn.inputs[1:5]):
        return "BatchNormalization parameters are not constant"
    if _const(conv.inputs[1]) is None or (len(conv.inputs) > 2 and _const(conv.inputs[2]) is None):
        return "Conv weight or bias is not constant"
    return None


def fold_bn_onnx(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str], dict[str, str]]:
    """(new model, names of folded BNs, {BN name: why not folded}); the input is not changed."""
    import onnx_graphsurgeon as gs

    graph = gs.import_onnx(model)
    outputs = {id(t) for t in graph.outputs}
    folded: list[str] = []
    skipped: dict[str, str] = {}
    for bn in [n for n in graph.nodes if n.op == "BatchNormalization"]:
        why = _why_not(bn, outputs)
        if why:
            skipped[bn.name] = why
            continue
        conv = bn.inputs[0].inputs[0]
        scale, beta, mean, var = (_const(t).astype(np.float64) for t in bn.inputs[1:5])
        s = scale / np.sqrt(var + float(bn.attrs.get("epsilon", 1e-5)))
        w = _const(conv.inputs[1])
        b = _const(conv.inputs[2]).astype(np.float64) if len(conv.inputs) > 2 else np.zeros(w.shape[0])
        new_w = (w.astype(np.float64) * s.reshape(-1, *([1] * (w.ndim - 1)))).astype(w.dtype)
        new_b = ((b - mean) * s + beta).astype(w.dtype)
        tag = f"{conv.name or 'conv'}_bnfold{len(folded)}"
        conv.inputs[1] = gs.Constant(f"{tag}_W", new_w)
        bias = gs.Constant(f"{tag}_B", new_b)
        if len(conv.inputs) > 2:
            conv.inputs[2] = bias
        else:
            conv.inputs.append(bias)
        y = bn.outputs[0]
        bn.outputs.clear()
        conv.outputs[0] = y
        folded.append(bn.name)
    if not folded:
        return model, folded, skipped
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    out = gs.export_onnx(graph)
    return out, folded, skipped


def _is_bn_node(node: Any, modules: dict[str, Any]) -> bool:
    from torch import nn

    return node.op == "call_module" and isinstance(modules.get(node.target), nn.modules.batchnorm._BatchNorm)


def fold_bn_fx(module: Any) -> tuple[Any, int]:
    """(fused ``GraphModule``, BatchNorms folded) via ``torch.fx.experimental.optimization.fuse``."""
    import torch.fx
    from torch.fx.experimental.optimization import fuse

    if module.training:
        raise UserError("fold-bn folds inference BatchNorm: put the module in eval mode first (module.eval())")
    traced = module if isinstance(module, torch.fx.GraphModule) else torch.fx.symbolic_trace(module)
    mods = dict(traced.named_modules())
    before = sum(_is_bn_node(n, mods) for n in traced.graph.nodes)
    fused = fuse(traced, inplace=False, no_trace=True)
    mods = dict(fused.named_modules())
    after = sum(_is_bn_node(n, mods) for n in fused.graph.nodes)
    return fused, before - after


@register_pass("fold-bn")
class FoldBatchNormPass(PassBase):
    """Fold inference BatchNorm into the preceding convolution (ONNX, or torch.fx in eval mode)."""

    in_place = False

    def __init__(self) -> None:
        """A pass without options."""

    def call(self, model: Any) -> PassResult:
        if isinstance(model, onnx.ModelProto):
            out, folded, skipped = fold_bn_onnx(model)
            return PassResult(out, bool(folded), {"folded": folded, "not_folded": skipped})
        import torch

        if isinstance(model, torch.nn.Module):
            fused, count = fold_bn_fx(model)
            return PassResult(fused if count else model, count > 0, {"folded": count})
        raise UserError(f"fold-bn works on an onnx.ModelProto or a torch module, not {type(model).__name__}")
