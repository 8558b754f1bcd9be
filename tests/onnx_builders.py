"""Tiny torch modules exported to ONNX, for before/expected analysis tests."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def export(module: nn.Module, shape: tuple[int, ...], path: Path) -> Path:
    torch.manual_seed(0)
    module.eval()
    torch.onnx.export(module, (torch.randn(*shape),), str(path), dynamo=False, opset_version=18,
                      input_names=["input"], output_names=["out"])
    return path


class ConvBnRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.bn, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.c2(torch.relu(self.bn(self.c1(x))))


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem, self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 5, 1)

    def forward(self, x):
        y = self.stem(x)
        return self.b(torch.relu(y + self.a(y)))


class Depthwise(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pw, self.dw, self.out = nn.Conv2d(3, 6, 1), nn.Conv2d(6, 6, 3, padding=1, groups=6), nn.Conv2d(6, 2, 1)

    def forward(self, x):
        return self.out(self.dw(self.pw(x)))


class ConcatTwo(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.out = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 6, 1), nn.Conv2d(10, 2, 1)

    def forward(self, x):
        return self.out(torch.cat([self.a(x), self.b(x)], 1))


class Grouped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.g, self.out = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 12, 3, padding=1, groups=4), nn.Conv2d(12, 2, 1)

    def forward(self, x):
        return self.out(self.g(self.a(x)))


class LayerNormMix(nn.Module):
    """A conv whose output is normalised over channels: a barrier with a reason."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.ln, self.out = nn.Conv2d(3, 8, 1), nn.LayerNorm(8), nn.Conv2d(8, 2, 1)

    def forward(self, x):
        y = self.ln(self.a(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.out(y)
