"""``lut`` (HFP): sum of per-layer latencies looked up in measured channel sweeps.

Each layer is swept along its output channels (inputs full) and its input channels
(outputs full); a configuration's latency is ``L_out(cout) * L_in(cin) / L_in(full)`` —
separable in the two counts, as a conv's work is — interpolated between measured points.
The input sweep contributes only a ratio within itself: its points were timed side by side,
while its full-width point and the output sweep's were not.

A depthwise layer is swept at counts on and off a multiple of 4 and looked up within the
count's own class (:meth:`~hwprune_fx.profiling.sweep.Sweep.at_in_class`): on ort-cpu a
width one channel off the multiple runs several times slower, a comb no curve through
mixed points can follow.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from hwprune_fx.cost_models.base import LayerChannels, register_cost_model
from hwprune_fx.profiling.sweep import DEPTHWISE_MULTIPLE, Sweep, class_counts, sweep_layer
from hwprune_fx.targets.base import Backend

__all__ = ["LutCostModel"]


@register_cost_model("lut")
class LutCostModel:
    name = "lut"

    def __init__(self, channels: LayerChannels, sweeps_out: list[Sweep], sweeps_in: list[Sweep | None],
                 depthwise_classes: bool = True) -> None:
        self.channels = channels
        self.sweeps_out = sweeps_out
        self.sweeps_in = sweeps_in
        self.depthwise_classes = depthwise_classes

    @classmethod
    def profile(cls, channels: LayerChannels, backend: Backend, points: int = 8,
                progress: Callable[[str], None] | None = None,
                counts: Callable[[int, str], Sequence[int]] | None = None,
                depthwise_classes: bool = True) -> "LutCostModel":
        """Measure the sweeps of every layer (cached on disk by the sweep itself).

        Args:
            counts: ``counts(full, axis)`` -> the channel counts to measure along ``axis``
                ("out", "in" or "both"); default ``points`` counts spread over the range. A
                dense tail (``search.staircase.staircase_counts``) lets ``--align auto`` see
                the latency staircase.
            depthwise_classes: sweep depthwise layers on and off the multiple and look them up
                within their class; off only to measure what that buys (the LUT before it).
        """
        from hwprune_fx.profiling.sweep import default_counts

        def grid(full: int, axis: str) -> list[int]:
            return list(counts(full, axis)) if counts is not None else default_counts(full, points)

        outs, ins = [], []
        for i, layer in enumerate(channels.layers):
            if progress:
                progress(f"sweep {i + 1}/{len(channels.layers)} {layer.name}")
            depthwise = layer.group > 1 and layer.group == layer.in_channels
            if depthwise and not depthwise_classes:
                s_out = sweep_layer(layer, backend, "out", grid(layer.in_channels, "both") if counts is not None
                                    else None)
            elif depthwise:   # both classes of widths, plus the caller's counts (a staircase's dense top)
                both = class_counts(layer.in_channels, points)
                s_out = sweep_layer(layer, backend, "out", sorted(set(both) | set(grid(layer.in_channels, "both")))
                                    if counts is not None else both)
            else:
                s_out = sweep_layer(layer, backend, "out", grid(layer.out_channels, "out"))
            outs.append(s_out)
            tied = s_out.axis == "both"
            ins.append(None if tied or channels.in_units[i].size == 0
                       else sweep_layer(layer, backend, "in", grid(layer.in_channels, "in")))
        return cls(channels, outs, ins, depthwise_classes)

    def layer_ms(self, keep: np.ndarray, i: int) -> float:
        cin, cout = self.channels.counts(keep, i)
        s_out, s_in = self.sweeps_out[i], self.sweeps_in[i]
        if s_out.axis == "both":
            return s_out.at_in_class(cin, DEPTHWISE_MULTIPLE) if self.depthwise_classes else s_out.at(cin)
        ms = s_out.at(cout)
        if s_in is not None and s_in.ms[-1] > 0:   # the input sweep's own full-width point
            ms *= s_in.at(cin) / s_in.ms[-1]
        return ms

    def predict(self, keep: np.ndarray) -> float:
        return float(sum(self.layer_ms(keep, i) for i in range(len(self.channels.layers))))

    def delta(self, keep: np.ndarray, remove: np.ndarray) -> float:
        after = keep.copy()
        after[remove] = False
        return float(sum(self.layer_ms(after, i) - self.layer_ms(keep, i) for i in self.channels.touched(remove)))
