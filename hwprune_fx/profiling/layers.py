"""Per-layer units: each conv/linear with what a runtime fuses into it, as its own ONNX model.

    Conv -> [BatchNormalization] -> [Add(bias)] -> [Relu|Clip|HardSwish|...]   one layer

A layer is extracted at its real input shape so that it can be timed on a target, and
rebuilt at other channel counts (random weights) for the latency staircase sweep.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import TensorProto, helper, numpy_helper

__all__ = ["Layer", "find_layers", "layer_model", "synthetic_layer_model"]

_ANCHORS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
_FUSIBLE = {"BatchNormalization", "Relu", "Clip", "HardSwish", "HardSigmoid", "Sigmoid", "LeakyRelu",
            "Add", "Mul", "Tanh", "Gelu", "PRelu"}
_ACT = {"Relu", "Clip", "HardSwish", "HardSigmoid", "Sigmoid", "LeakyRelu", "Tanh", "Gelu", "PRelu"}


@dataclass
class Layer:
    """An anchor operator and the operators fused behind it."""

    name: str
    op_type: str
    nodes: list[gs.Node]
    input: gs.Variable
    output: gs.Tensor
    in_channels: int
    out_channels: int
    group: int
    attrs: dict = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.input.shape)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.output.shape)

    @property
    def fused(self) -> list[str]:
        return [n.op for n in self.nodes[1:]]

    def macs(self, cin: int | None = None, cout: int | None = None) -> int:
        cin = cin or self.in_channels
        cout = cout or self.out_channels
        w = self.nodes[0].inputs[1].values.shape
        if self.op_type in ("Conv", "ConvTranspose"):
            spatial = int(np.prod(self.output_shape[2:] if self.op_type == "Conv" else self.input_shape[2:]))
            return int(self.input_shape[0] * spatial * cout * (cin // self.group) * int(np.prod(w[2:])))
        rows = int(np.prod(self.input_shape[:-1]))
        return rows * cin * cout

    def signature(self) -> str:
        """Operator signature for caching sweeps: types, attributes, shapes (not weights)."""
        desc = {"ops": [n.op for n in self.nodes], "attrs": _jsonable(self.nodes[0].attrs),
                "in": list(self.input_shape), "w": list(self.nodes[0].inputs[1].values.shape),
                "group": self.group}
        return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:24]


def _jsonable(attrs: dict) -> dict:
    out = {}
    for k, v in attrs.items():
        if isinstance(v, (int, float, str)):
            out[k] = v
        elif isinstance(v, (list, tuple)):
            out[k] = [x if isinstance(x, (int, float, str)) else str(x) for x in v]
        else:
            out[k] = str(v)
    return out


def _single_consumer(t: gs.Tensor, outputs: set[str]) -> gs.Node | None:
    if t.name in outputs or len(t.outputs) != 1:
        return None
    return t.outputs[0]


def _is_fusible(n: gs.Node, prev: gs.Tensor) -> bool:
    if n.op not in _FUSIBLE:
        return False
    others = [t for t in n.inputs if t is not prev and t is not None and t.name]
    return all(isinstance(t, gs.Constant) for t in others)


def find_layers(graph: gs.Graph) -> list[Layer]:
    """Every conv/gemm/linear-matmul with a constant weight and static shapes, with its fused tail."""
    outputs = {t.name for t in graph.outputs}
    layers: list[Layer] = []
    for n in graph.nodes:
        if n.op not in _ANCHORS or len(n.inputs) < 2 or not isinstance(n.inputs[1], gs.Constant):
            continue
        x = n.inputs[0]
        if not isinstance(x, gs.Variable) or x.shape is None or any(not isinstance(d, int) for d in x.shape):
            continue
        if n.op == "MatMul" and n.inputs[1].values.ndim != 2:
            continue
        if n.op == "Gemm" and int(n.attrs.get("transA", 0)):
            continue
        nodes = [n]
        out = n.outputs[0]
        seen_act = False
        while True:
            nxt = _single_consumer(out, outputs)
            if nxt is None or not _is_fusible(nxt, out) or seen_act:
                break
            seen_act = nxt.op in _ACT
            nodes.append(nxt)
            out = nxt.outputs[0]
        if out.shape is None:
            continue
        w = n.inputs[1].values.shape
        group = int(n.attrs.get("group", 1))
        if n.op == "Conv":
            cin, cout = int(x.shape[1]), int(w[0])
        elif n.op == "ConvTranspose":
            cin, cout = int(x.shape[1]), int(w[1]) * group
        elif n.op == "Gemm":
            cin, cout = int(x.shape[-1]), int(w[0] if int(n.attrs.get("transB", 0)) else w[1])
        else:
            cin, cout = int(w[0]), int(w[1])
        layers.append(Layer(n.name, n.op, nodes, x, out, cin, cout, group))
    return layers


def layer_model(layer: Layer, opset: int = 18) -> onnx.ModelProto:
    """The layer alone, at its real shapes and weights (the source graph is only read)."""
    x = gs.Variable(layer.input.name, dtype=np.float32, shape=list(layer.input_shape))
    y = gs.Variable(layer.output.name, dtype=np.float32, shape=list(layer.output_shape))
    nodes = []
    for n in layer.nodes:
        ins = [x if (t is not None and t.name == x.name) else t for t in n.inputs]
        outs = [y if t.name == y.name else gs.Variable(t.name, dtype=np.float32) for t in n.outputs]
        nodes.append(gs.Node(op=n.op, name=n.name, attrs=dict(n.attrs), inputs=ins, outputs=outs))
    for a, b in zip(nodes, nodes[1:]):  # chain through the fresh intermediate tensors
        b.inputs = [a.outputs[0] if (t is not None and t.name == a.outputs[0].name) else t for t in b.inputs]
    return gs.export_onnx(gs.Graph(nodes=nodes, inputs=[x], outputs=[y], opset=opset))


def synthetic_layer_model(layer: Layer, cin: int, cout: int, seed: int = 0, opset: int = 18) -> onnx.ModelProto:
    """The same layer type and fused tail at ``cin`` input and ``cout`` output channels, random weights.

    Depthwise layers (group == channels) change both together: ``cin`` is used for both.
    """
    rng = np.random.default_rng(seed)
    anchor = layer.nodes[0]
    in_shape = list(layer.input_shape)
    depthwise = layer.group > 1 and layer.group == layer.in_channels
    group = layer.group
    if depthwise:
        cout = cin * (layer.out_channels // layer.in_channels)
        group = cin
    elif group > 1:
        cin = max(group, cin - cin % group)
        cout = max(group, cout - cout % group)
    ch_axis = len(in_shape) - 1 if layer.op_type in ("Gemm", "MatMul") else 1
    in_shape[ch_axis] = cin
    inits: list[onnx.TensorProto] = []
    w_shape = list(anchor.inputs[1].values.shape)
    if layer.op_type == "Conv":
        w_shape[0], w_shape[1] = cout, cin // group
    elif layer.op_type == "ConvTranspose":
        w_shape[0], w_shape[1] = cin, cout // group
    elif layer.op_type == "Gemm":
        w_shape = [cout, cin] if int(anchor.attrs.get("transB", 0)) else [cin, cout]
    else:
        w_shape = [cin, cout]
    inits.append(numpy_helper.from_array(rng.standard_normal(w_shape).astype(np.float32) * 0.05, "W"))
    inputs = ["x", "W"]
    if len(anchor.inputs) > 2 and anchor.inputs[2] is not None and anchor.inputs[2].name:
        inits.append(numpy_helper.from_array(rng.standard_normal([cout]).astype(np.float32), "B"))
        inputs.append("B")
    nodes = [helper.make_node(anchor.op, inputs, ["y0"], **anchor.attrs)]
    if "group" in anchor.attrs:
        nodes[0] = helper.make_node(anchor.op, inputs, ["y0"], **{**anchor.attrs, "group": group})
    prev = "y0"
    for i, n in enumerate(layer.nodes[1:], start=1):
        ins = [prev]
        for j, t in enumerate(n.inputs):
            if t is None or t is layer.nodes[i - 1].outputs[0] or t.name == layer.nodes[i - 1].outputs[0].name:
                continue
            v = np.asarray(t.values)
            if v.ndim and v.size > 1:  # per-channel constant: resize to cout on its channel axis
                axis = v.ndim - (len(in_shape) - ch_axis) if n.op != "BatchNormalization" else 0
                axis = max(axis, 0)
                v = np.take(v, np.arange(cout) % v.shape[axis], axis=axis)
            name = f"c{i}_{j}"
            inits.append(numpy_helper.from_array(v.astype(v.dtype), name))
            ins.append(name)
        out = f"y{i}"
        nodes.append(helper.make_node(n.op, ins, [out], **n.attrs))
        prev = out
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)
    y = helper.make_tensor_value_info(prev, TensorProto.FLOAT, None)
    g = helper.make_graph(nodes, "layer", [x], [y], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
