"""Depthwise layers in the LUT: swept on and off a multiple of 4, looked up within the count's class.

A scripted backend stands in for the clock with the comb ort-cpu shows on depthwise convs (a
width off a multiple of 4 three times slower); a curve through points of both classes would
be wrong for either.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from hwprune_fx.analysis import analyze_dependencies
from hwprune_fx.cost_models import LayerChannels
from hwprune_fx.cost_models.lut import LutCostModel
from hwprune_fx.pipeline import load_onnx_model
from hwprune_fx.profiling.layers import find_layers
from hwprune_fx.profiling.sweep import DEPTHWISE_MULTIPLE, Sweep, class_counts
from hwprune_fx.targets.base import Backend
from hwprune_fx.targets.measurement import summarize
from hwprune_fx.zoo import export_onnx


class CombBackend(Backend):
    """A model whose first weight has ``c`` output channels reads ``c / 100`` ms, three times that
    when ``c`` is off a multiple of 4."""

    name = "scripted-comb"

    def _time_onnx(self, model, feeds):
        raise AssertionError("sweeps time through block timers")

    def block_timer(self, model, feeds):
        width = int(model.graph.initializer[0].dims[0])
        ms = width / 100 * (1.0 if width % DEPTHWISE_MULTIPLE == 0 else 3.0)
        return lambda: summarize(self.name, [ms], 0, 1, {})


class DepthwiseNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.expand, self.bn1 = nn.Conv2d(3, 24, 1), nn.BatchNorm2d(24)
        self.dw, self.bn2 = nn.Conv2d(24, 24, 3, padding=1, groups=24), nn.BatchNorm2d(24)
        self.project = nn.Conv2d(24, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.relu(self.bn2(self.dw(torch.relu(self.bn1(self.expand(x)))))))


@pytest.fixture(scope="module")
def depthwise_lut(tmp_path_factory: pytest.TempPathFactory):
    path = Path(tmp_path_factory.mktemp("dw")) / "dw.onnx"
    export_onnx(DepthwiseNet().eval(), (1, 3, 8, 8), path)
    loaded = load_onnx_model(str(path))
    analysis = analyze_dependencies(loaded.channel_graph)
    channels = LayerChannels.build(analysis, find_layers(loaded.graph))
    lut = LutCostModel.profile(channels, CombBackend(use_cache=False))
    dw = next(i for i, layer in enumerate(channels.layers) if layer.group == layer.in_channels > 1)
    return analysis, channels, lut, dw


def _keep_width(analysis, channels: LayerChannels, layer: int, width: int) -> np.ndarray:
    keep = np.ones(analysis.num_units, bool)
    units = channels.in_units[layer]
    keep[units[: units.size - width]] = False
    assert channels.counts(keep, layer)[0] == width
    return keep


def test_class_counts_pair_each_multiple_with_its_neighbour() -> None:
    counts = class_counts(144)
    on = [c for c in counts if c % 4 == 0]
    assert 144 in counts and len(on) >= 6
    assert all(c - 1 in counts for c in on)
    assert all(c % 4 == 0 or c + 1 in counts for c in counts)   # every off point is a neighbour
    assert class_counts(5) == sorted(set(class_counts(5)))      # too narrow for classes: plain counts


def test_lookup_stays_within_the_class() -> None:
    sweep = Sweep("dw", "both", (7, 8, 15, 16), (0.21, 0.08, 0.45, 0.16))
    assert sweep.at_in_class(12, 4) == pytest.approx(0.12)   # between 8 and 16, the aligned points
    assert sweep.at_in_class(11, 4) == pytest.approx(0.33)   # between 7 and 15, the unaligned points
    assert sweep.at(12) != pytest.approx(0.12)               # a curve through all points is not
    only_on = Sweep("dw", "both", (8, 16), (0.08, 0.16))
    assert only_on.at_in_class(11, 4) == pytest.approx(only_on.at(11))


@pytest.mark.parametrize("width", [24, 20, 16, 12, 23, 21, 17, 13, 10])
def test_depthwise_lut_reads_the_comb(depthwise_lut, width: int) -> None:
    analysis, channels, lut, dw = depthwise_lut
    sweep = lut.sweeps_out[dw]
    assert sweep.axis == "both"
    assert any(c % 4 for c in sweep.counts) and any(c % 4 == 0 for c in sweep.counts[:-1])
    expected = width / 100 * (1.0 if width % 4 == 0 else 3.0)
    assert lut.layer_ms(_keep_width(analysis, channels, dw, width), dw) == pytest.approx(expected)


def test_one_curve_through_mixed_points_misreads_the_comb(depthwise_lut) -> None:
    """The LUT before classes (kept for the ablation benchmark): aligned widths read too slow."""
    analysis, channels, _, dw = depthwise_lut
    mixed = LutCostModel.profile(channels, CombBackend(use_cache=False), depthwise_classes=False)
    keep = _keep_width(analysis, channels, dw, 20)
    assert mixed.layer_ms(keep, dw) > 1.5 * 0.20
