"""A pool whose window runs over the tracked channel axis mixes channels: a barrier, not a group."""
from __future__ import annotations

import torch
from torch import nn

from hwprune_fx.pipeline import analyze, prune_onnx


class PoolOverChannels(nn.Module):
    """x: [1, 5, 4]; the linear layer's features (last axis) are pooled by MaxPool1d."""

    def __init__(self) -> None:
        super().__init__()
        self.lin, self.pool, self.out = nn.Linear(4, 8), nn.MaxPool1d(3, 1, 1), nn.Linear(8, 2)

    def forward(self, x):
        return self.out(self.pool(self.lin(x)))


def test_pool_over_channels_is_pinned_in_both_frontends(tmp_path) -> None:
    torch.manual_seed(0)
    m = PoolOverChannels().eval()
    x = torch.randn(1, 5, 4)
    path = tmp_path / "m.onnx"
    torch.onnx.export(m, (x,), str(path), dynamo=False, opset_version=18)
    onnx_groups = analyze(path)
    assert not onnx_groups.prunable_groups()
    assert any("pools over the channel axis" in r for g in onnx_groups.groups for r in g.reasons)
    assert not analyze(m, example_inputs=(x,)).prunable_groups()
    # nothing prunable: a ratio run removes nothing and the result is still exact
    res = prune_onnx(path, ratio=0.5)
    assert res.report["removed_units"] == 0
