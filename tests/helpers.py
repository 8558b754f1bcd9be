"""Small helpers shared by tests: make randomly initialised models sensitive to every channel."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["randomize_bn", "randomize_layer_scale"]


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BatchNorm running statistics and affine parameters (and other norms' affine).

    Fresh BatchNorms are the identity up to eps (mean 0, var 1, gamma 1, beta 0), which hides
    a rewrite that slices statistics and parameters inconsistently; random values expose it.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) * 0.5 + 0.75)
            if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)) \
                    and getattr(m, "weight", None) is not None:
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
    return model.eval()


def randomize_layer_scale(model: nn.Module, seed: int = 0) -> nn.Module:
    """ConvNeXt-style layer scales start at 1e-6, which makes every block almost a no-op."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layer_scale"):
                p.copy_(torch.rand(p.shape, generator=gen) * 0.5 + 0.5)
    return model
