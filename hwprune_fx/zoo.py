"""Example models the project builds itself: torchvision definitions, random weights, no download.

Random weights alone make a weak test: BatchNorm statistics stay at (0, 1) and some heads
are zero-initialised, so the output hardly depends on the channels. ``build_model``
randomises both so that a wrong rewrite shows up in the oracle.
"""
from __future__ import annotations

import os
from typing import Any

__all__ = ["build_model", "input_shape_for", "export_onnx", "randomize_model"]

_INPUT_SIZE = {"inception_v3": 299}


def input_shape_for(name: str, size: int | None = None) -> tuple[int, int, int, int]:
    """Batch-1 NCHW input the model accepts (its native size unless ``size`` is given)."""
    side = size or _INPUT_SIZE.get(name, 224)
    return (1, 3, side, side)


def randomize_model(model: Any, seed: int = 0) -> Any:
    """Random BatchNorm statistics/affine and small random values for all-zero parameters."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) * 0.5 + 0.75)
                if m.affine:
                    m.weight.copy_(torch.rand(m.weight.shape, generator=gen) * 0.5 + 0.75)
                    m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
        for p in model.parameters():
            if p.numel() and not torch.any(p != 0):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    return model.eval()


def build_model(name: str, seed: int = 0) -> Any:
    """A torchvision classifier by name with ``weights=None``, randomised, in eval mode."""
    import torch
    import torchvision

    torch.manual_seed(seed)
    kwargs = {"aux_logits": False, "init_weights": False} if name in ("googlenet", "inception_v3") else {}
    model = torchvision.models.get_model(name, weights=None, **kwargs)
    return randomize_model(model, seed)


def export_onnx(model: Any, shape: tuple[int, ...], path: str | os.PathLike, opset: int = 18) -> str:
    """Export with the TorchScript-based exporter (fast); the dynamo exporter as a fallback."""
    import torch

    x = torch.randn(*shape)
    path = os.fspath(path)
    try:
        torch.onnx.export(model, (x,), path, dynamo=False, opset_version=opset,
                          input_names=["input"], output_names=["logits"])
    except Exception:  # noqa: BLE001 - some models only export through torch.export
        torch.onnx.export(model, (x,), path, dynamo=True, input_names=["input"], output_names=["logits"])
    return path
