"""Random networks from the building blocks the analysis must handle, for property tests."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, groups: int = 1, act: str = "relu") -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups)
        self.bn = nn.BatchNorm2d(cout)
        self.act = {"relu": nn.ReLU(), "hswish": nn.Hardswish(), "silu": nn.SiLU(), "none": nn.Identity(),
                    "prelu": nn.PReLU(cout), "gelu": nn.GELU()}[act]

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Residual(nn.Module):
    def __init__(self, c: int, mid: int) -> None:
        super().__init__()
        self.a, self.b = ConvBlock(c, mid, 1), ConvBlock(mid, c, 3, act="none")

    def forward(self, x):
        return torch.relu(x + self.b(self.a(x)))


class TwoBranchConcat(nn.Module):
    def __init__(self, c: int, c1: int, c2: int) -> None:
        super().__init__()
        self.a, self.b = ConvBlock(c, c1, 1), ConvBlock(c, c2, 3)

    def forward(self, x):
        return torch.cat([self.a(x), self.b(x)], 1)


class SplitHalf(nn.Module):
    """ShuffleNet-style: keep one half, transform the other, concatenate, shuffle."""

    def __init__(self, c: int, shuffle: bool) -> None:
        super().__init__()
        self.f = ConvBlock(c // 2, c // 2, 3)
        self.shuffle = shuffle

    def forward(self, x):
        a, b = x.chunk(2, dim=1)
        y = torch.cat([a, self.f(b)], 1)
        if self.shuffle:
            n, c, h, w = y.shape
            y = y.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)
        return y


class SqueezeExcite(nn.Module):
    def __init__(self, c: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, hidden, 1), nn.Conv2d(hidden, c, 1)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))


class ChannelScale(nn.Module):
    """A per-channel constant (like ConvNeXt's layer scale)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.rand(c, 1, 1) + 0.5)

    def forward(self, x):
        return x * self.gamma


class RandomNet(nn.Module):
    def __init__(self, blocks: Sequence[nn.Module], c_last: int, head: str, hw: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*blocks)
        self.head = head
        self.fc = nn.Linear(c_last * (hw * hw if head == "flatten" else 1), 5)

    def forward(self, x):
        y = self.blocks(x)
        y = torch.flatten(y, 1) if self.head == "flatten" else y.mean((2, 3))
        return self.fc(y)


def build_random_net(choices: Sequence[tuple[str, int]], head: str, hw: int = 6) -> RandomNet:
    """``choices`` is a list of (block kind, size parameter); channel counts are kept even."""
    blocks: list[nn.Module] = [ConvBlock(3, 8, 3)]
    c = 8
    for kind, p in choices:
        if kind == "conv":
            cout = 2 * p + 2
            blocks.append(ConvBlock(c, cout, 3 if p % 2 else 1, act=["relu", "hswish", "silu", "prelu", "gelu"][p % 5]))
            c = cout
        elif kind == "depthwise":
            blocks.append(ConvBlock(c, c, 3, groups=c))
        elif kind == "grouped":
            g = 2
            cout = 2 * (p + 1) * g
            blocks.append(ConvBlock(c, cout, 3, groups=g))
            c = cout
        elif kind == "residual":
            blocks.append(Residual(c, p + 2))
        elif kind == "concat":
            blocks.append(TwoBranchConcat(c, p + 2, 4))
            c = p + 2 + 4
            if c % 2:
                blocks.append(ConvBlock(c, c + 1, 1))
                c += 1
        elif kind == "split":
            blocks.append(SplitHalf(c, shuffle=bool(p % 2)))
        elif kind == "se":
            blocks.append(SqueezeExcite(c, p + 2))
        elif kind == "scale":
            blocks.append(ChannelScale(c))
    net = RandomNet(blocks, c, head, hw)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    return net.eval()


BLOCK_KINDS = ["conv", "depthwise", "grouped", "residual", "concat", "split", "se", "scale"]
