"""torch.fx ``call_module`` node -> channel-semantics kind, by module class.

Parameters of the module become constant inputs named by their qualified names, in the
order the ONNX frontend lists them (``[x, weight, bias]``; BatchNorm ``[x, scale, bias,
mean, var]``). A module class not listed here is a barrier: symbolic tracing only stops
at ``torch.nn`` modules, so everything else has already been traced through.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.fx import Node

from hwprune_fx.frontends.fx_ops import Mapped, barrier, meta_shape, norm_axis
from hwprune_fx.ir import Kind

__all__ = ["map_module"]

ModuleMapper = Callable[[Node, nn.Module, str], Mapped]

_UNARY_MODULES: tuple[type, ...] = (
    nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.LeakyReLU,
    nn.ELU, nn.SELU, nn.CELU, nn.Mish, nn.Softplus, nn.Softsign, nn.Hardtanh, nn.Tanhshrink,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout, nn.Identity,
    nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d,
    nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d,
    nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReflectionPad3d,
    nn.ReplicationPad1d, nn.ReplicationPad2d, nn.ReplicationPad3d,
)


# pools work on the axes from 2 on (N, C, spatial...): a channel axis there is pooled over
_POOL_MODULES: tuple[type, ...] = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.LPPool1d, nn.LPPool2d,
)


def _params(prefix: str, mod: nn.Module, names: Sequence[str]) -> list[tuple[str, torch.Tensor]]:
    out = []
    for n in names:
        t = getattr(mod, n, None)
        if isinstance(t, torch.Tensor):
            out.append((f"{prefix}.{n}" if prefix else n, t))
    return out


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().float().numpy()


def _conv_module(node: Node, mod: nn.Module, prefix: str) -> Mapped:
    x = meta_shape(node.args[0]) if node.args else None
    w = mod.weight
    if x is None or len(x) != w.dim():
        return barrier(node, f"{type(mod).__name__} on an unbatched or unknown input")
    group = int(mod.groups)
    if isinstance(mod, nn.modules.conv._ConvTransposeNd):  # weight [Cin, Cout/g, *k] -> out-major
        wt = _np(w)
        cin, cout_g = wt.shape[0], wt.shape[1]
        cin_g = cin // group
        out_major = wt.reshape(group, cin_g, cout_g, *wt.shape[2:]).swapaxes(1, 2) \
            .reshape(group * cout_g, cin_g, *wt.shape[2:])
        return Mapped(Kind.CONV_TRANSPOSE, {"group": group, "weight": out_major},
                      params=_params(prefix, mod, ("weight", "bias")))
    return Mapped(Kind.CONV, {"group": group, "weight": _np(w)}, params=_params(prefix, mod, ("weight", "bias")))


def _linear_module(node: Node, mod: nn.Module, prefix: str) -> Mapped:
    return Mapped(Kind.LINEAR, {"weight": _np(mod.weight)}, params=_params(prefix, mod, ("weight", "bias")))


def _per_channel_norm(node: Node, mod: nn.Module, prefix: str) -> Mapped:
    x = meta_shape(node.args[0]) if node.args else None
    if x is None or len(x) < 2:
        return barrier(node, f"{type(mod).__name__} on an input of unknown or too small rank")
    if isinstance(mod, nn.modules.instancenorm._InstanceNorm) and len(x) == mod._get_no_batch_dim():
        return barrier(node, f"{type(mod).__name__} on an unbatched input")
    scale = _np(mod.weight) if mod.weight is not None else np.ones(x[1], np.float32)
    return Mapped(Kind.CHANNELWISE, {"axis": 1, "scale": scale},
                  params=_params(prefix, mod, ("weight", "bias", "running_mean", "running_var")))


def _prelu_module(node: Node, mod: nn.Module, prefix: str) -> Mapped:
    if mod.num_parameters == 1:
        return Mapped(Kind.UNARY)
    x = meta_shape(node.args[0]) if node.args else None
    if x is None or len(x) < 2:
        return barrier(node, "PReLU with per-channel slopes on an input of rank < 2")
    return Mapped(Kind.CHANNELWISE, {"axis": 1}, params=_params(prefix, mod, ("weight",)))


def _layer_norm_module(node: Node, mod: nn.Module, prefix: str) -> Mapped:
    x = meta_shape(node.args[0]) if node.args else None
    if x is None:
        return barrier(node, "LayerNorm of an unknown shape")
    n = len(mod.normalized_shape)
    return Mapped(Kind.NORM_OVER_AXES, {"axes": list(range(len(x) - n, len(x)))},
                  params=_params(prefix, mod, ("weight", "bias")))


def _channel_mixing_norm(node: Node, mod: nn.Module, prefix: str) -> Mapped:
    return Mapped(Kind.NORM_OVER_AXES, {"axes": [1]}, params=_params(prefix, mod, ("weight", "bias")))


def _softmax_module(node: Node, mod: nn.Module, prefix: str) -> Mapped:
    x = meta_shape(node.args[0]) if node.args else None
    dim = -3 if isinstance(mod, nn.Softmax2d) else mod.dim
    if x is None or dim is None:
        return barrier(node, f"{type(mod).__name__} with an implicit dim")
    return Mapped(Kind.NORM_OVER_AXES, {"axes": [norm_axis(int(dim), len(x))]})


_MODULES: list[tuple[tuple[type, ...], ModuleMapper]] = [
    ((nn.modules.conv._ConvNd,), _conv_module),
    ((nn.Linear,), _linear_module),
    ((nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm), _per_channel_norm),
    ((nn.PReLU,), _prelu_module),
    ((nn.LayerNorm,), _layer_norm_module),
    ((nn.GroupNorm, nn.LocalResponseNorm), _channel_mixing_norm),
    ((nn.Softmax, nn.LogSoftmax, nn.Softmax2d), _softmax_module),
    ((nn.Flatten,), lambda node, mod, prefix: Mapped(Kind.RESHAPE)),
    (_POOL_MODULES, lambda node, mod, prefix: Mapped(Kind.UNARY, {"spatial_from": 2})),
    (_UNARY_MODULES, lambda node, mod, prefix: Mapped(Kind.UNARY)),
]


def map_module(node: Node, mod: nn.Module) -> Mapped:
    """Kind, attributes and parameters of a ``call_module`` node."""
    for types, fn in _MODULES:
        if isinstance(mod, types):
            return fn(node, mod, str(node.target))
    if _is_torchvision(type(mod), "StochasticDepth"):  # identity in eval mode; matched by name so
        return Mapped(Kind.UNARY)                     # that the core never imports torchvision
    return barrier(node, f"module {type(mod).__name__} is not understood")


def _is_torchvision(obj: object, name: str) -> bool:
    return getattr(obj, "__name__", "") == name and getattr(obj, "__module__", "").startswith("torchvision.")
