"""Channel-semantics kinds: how an operator relates the channels of its inputs and outputs.

Frontends map their concrete operators (ONNX ``Conv``, ``torch.nn.Conv2d``...) onto one of
these kinds; the dependency analysis only ever looks at the kind and normalised attributes.
"""
from __future__ import annotations

from enum import Enum

__all__ = ["Kind"]


class Kind(str, Enum):
    CONV = "conv"                 # attrs: group; params: weight [Cout, Cin/g, *k]
    CONV_TRANSPOSE = "conv_transpose"  # attrs: group; weight [Cin, Cout/g, *k]
    LINEAR = "linear"             # x[..., K] @ W[K, M] (+ b[M]); attrs: in_features, out_features
    MATMUL = "matmul"             # two activations: numpy matmul semantics
    ELEMENTWISE = "elementwise"   # numpy broadcasting over all inputs; constant inputs are sliced
    CHANNELWISE = "channelwise"   # per-channel parameters on attr ``axis`` (BatchNorm, InstanceNorm)
    UNARY = "unary"               # output channels == input channels, same axis (Relu, pools);
                                  # attrs: spatial_from (pools mix axes >= it; channels must lie before)
    REDUCE = "reduce"             # attrs: axes, keepdims, channel_safe (sum-like over channels)
    CONCAT = "concat"             # attrs: axis
    SPLIT = "split"               # attrs: axis, sizes
    SLICE = "slice"               # attrs: axis -> (start, stop, step) for every sliced axis
    RESHAPE = "reshape"           # pure re-view: Reshape, Flatten, Squeeze, Unsqueeze
    TRANSPOSE = "transpose"       # attrs: perm
    GATHER = "gather"             # attrs: axis; constant indices
    NORM_OVER_AXES = "norm_over_axes"  # LayerNorm/Softmax-like: mixes the listed axes
    BARRIER = "barrier"           # not understood: every channel it touches is pinned
