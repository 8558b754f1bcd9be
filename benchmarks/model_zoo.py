"""Torchvision classifiers for the coverage benchmark: random but informative weights, ONNX export.

``hwprune_fx.zoo`` already randomises BatchNorm affine parameters and replaces all-zero
parameters (ViT/RegNet heads, LayerNorm biases). A whole-zoo oracle run needs four things more:

* BatchNorm statistics that match the activations. Statistics drawn blindly (mean ~ 0,
  var ~ 1) do not normalise a Kaiming-initialised network: in MobileNetV2 the signal shrinks
  ~10x per stage until the output differs by 1e-7 between two inputs, so the oracle compares
  constants. The statistics are measured on one random batch (as training would set them)
  and then perturbed with seeded noise, so they stay random but well conditioned;

* the input size each builder *needs* with ``weights=None`` (ViT and MaxViT assert their
  size; Inception and Swin V2 are run at their native resolution);
* tiny constant parameters raised: ConvNeXt's layer scale is ``1e-6 * ones``, so a residual
  branch adds a millionth to the stream and a wrong rewrite inside it stays below the
  oracle's 1e-3 tolerance;
* a check that the output varies with the input, so "exact" never means "constant".

Export uses the TorchScript exporter (fast; it writes external data by itself above 2 GB)
and falls back to the dynamo exporter.
"""
from __future__ import annotations

import os
from typing import Any

from hwprune_fx.zoo import build_model as _build_randomized

__all__ = ["INPUT_SIZE", "input_shape", "build_model", "calibrate_batchnorm", "raise_tiny_constants",
           "check_output_varies", "export_onnx"]

# Side length per model where 224 is not the right choice; the reason is in the comment.
INPUT_SIZE: dict[str, int] = {
    "inception_v3": 299,   # native size; the builder accepts >= 75 but 299 is what it is built for
    "swin_v2_t": 256,      # V2 recipes train at 256 (window 8: 256/32 = 8 windows, no padding)
    "swin_v2_s": 256,
    "swin_v2_b": 256,
    # vit_*: image_size is fixed at construction; weights=None keeps the builder default of 224
    # (vit_h_14 at 518 only when loading SWAG weights). maxvit_t: input_size defaults to 224.
}

_TINY = 1e-3  # a constant parameter smaller than this hides its branch from the oracle


def input_shape(name: str) -> tuple[int, int, int, int]:
    """Batch-1 NCHW input the model needs."""
    side = INPUT_SIZE.get(name, 224)
    return (1, 3, side, side)


def raise_tiny_constants(model: Any, seed: int = 0) -> list[str]:
    """Replace every constant, nonzero parameter below ``_TINY`` (layer scales) by U(0.05, 0.25).

    Returns the names of the parameters changed, so the benchmark can report them.
    """
    import torch

    gen = torch.Generator().manual_seed(seed + 1)
    changed = []
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if p.numel() < 2:
                continue
            first = p.flatten()[0]
            if 0 < abs(float(first)) < _TINY and bool(torch.all(p == first)):
                p.copy_(torch.rand(p.shape, generator=gen) * 0.2 + 0.05)
                changed.append(pname)
    return changed


def calibrate_batchnorm(model: Any, shape: tuple[int, ...], seed: int = 0, batch: int = 2) -> int:
    """Set BatchNorm running statistics from one random batch, then perturb them (seeded).

    Only the BatchNorm layers run in training mode, so dropout and stochastic depth do not
    distort the measured statistics. Returns the number of BatchNorm layers calibrated.
    """
    import torch

    bns = [m for m in model.modules()
           if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns:
        return 0
    gen = torch.Generator().manual_seed(seed + 2)
    momenta = [bn.momentum for bn in bns]
    model.eval()
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: after one batch, the batch's own statistics
        bn.train()
    with torch.no_grad():
        model(torch.randn((batch, *shape[1:]), generator=gen))
        for bn, momentum in zip(bns, momenta):
            bn.momentum = momentum
            std = bn.running_var.sqrt()
            bn.running_mean.add_(torch.randn(bn.running_mean.shape, generator=gen) * 0.1 * std)
            bn.running_var.mul_(torch.rand(bn.running_var.shape, generator=gen) * 0.45 + 0.8)
    model.eval()
    return len(bns)


def build_model(name: str, seed: int = 0) -> tuple[Any, list[str]]:
    """A randomised, calibrated torchvision classifier (eval mode) and the tiny constants it raised."""
    model = _build_randomized(name, seed)
    raised = raise_tiny_constants(model, seed)
    calibrate_batchnorm(model, input_shape(name), seed)
    return model, raised


def check_output_varies(model: Any, shape: tuple[int, ...], seed: int = 0, min_rel: float = 1e-3) -> float:
    """Relative output difference of two random inputs; raises if tiny or not finite.

    A network whose output does not depend on its input would pass any oracle.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    xs = torch.randn((2, *shape[1:]), generator=gen)
    with torch.no_grad():
        y = model(xs)
    if not torch.isfinite(y).all():
        raise ValueError("model output is not finite")
    rel = float((y[0] - y[1]).abs().max() / y.abs().max().clamp_min(1e-12))
    if rel < min_rel:
        raise ValueError(f"model output hardly depends on the input (relative difference {rel:.2e})")
    return rel


def export_onnx(model: Any, shape: tuple[int, ...], path: str | os.PathLike, opset: int = 18) -> str:
    """Export to ``path``; returns the exporter used (``torchscript`` or ``dynamo``)."""
    import torch

    x = torch.randn(*shape)
    path = os.fspath(path)
    names = {"input_names": ["input"], "output_names": ["logits"]}
    try:
        torch.onnx.export(model, (x,), path, dynamo=False, opset_version=opset, **names)
        return "torchscript"
    except Exception as first:  # noqa: BLE001 - some models only export through torch.export
        try:
            torch.onnx.export(model, (x,), path, dynamo=True, opset_version=opset, external_data=True, **names)
        except Exception as second:
            raise RuntimeError(f"both exporters failed: torchscript: {first!r}; dynamo: {second!r}") from second
        return "dynamo"
