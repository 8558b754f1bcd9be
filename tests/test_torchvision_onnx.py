"""The representative torchvision subset, through ONNX, at ratio 0.3: exact by the oracle.

The whole zoo (80 models at full size) runs in ``benchmarks/coverage.py``.
"""
from __future__ import annotations

import pytest

from hwprune_fx.pipeline import prune_onnx

SUBSET = {
    "resnet18": 64, "resnet50": 64, "mobilenet_v2": 64, "mobilenet_v3_small": 64, "efficientnet_b0": 64,
    "densenet121": 64, "googlenet": 96, "shufflenet_v2_x1_0": 64, "regnet_y_400mf": 64,
    "resnext50_32x4d": 64, "squeezenet1_0": 64, "vgg11_bn": 64, "convnext_tiny": 64,
}


@pytest.mark.parametrize("name", sorted(SUBSET))
def test_prune_is_exact(torchvision_onnx, name: str) -> None:
    path = torchvision_onnx(name, SUBSET[name])
    res = prune_onnx(path, ratio=0.3)
    rep = res.report
    assert rep["oracle"]["max_rel_error"] < 1e-3
    assert rep["removed_units"] > 0
    assert rep["macs_after"] < rep["macs_before"]
    assert rep["params_after"] < rep["params_before"]
