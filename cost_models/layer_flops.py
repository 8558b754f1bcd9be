"""``flops`` as a configuration cost model: MACs (in millions) of every layer at its kept channels."""
from __future__ import annotations

import numpy as np

from hwprune_fx.cost_models.base import LayerChannels, register_cost_model

__all__ = ["FlopsConfigModel"]


@register_cost_model("flops")
class FlopsConfigModel:
    name = "flops"

    def __init__(self, channels: LayerChannels) -> None:
        self.channels = channels

    def _layer(self, keep: np.ndarray, i: int) -> float:
        cin, cout = self.channels.counts(keep, i)
        return self.channels.layers[i].macs(cin, cout) / 1e6

    def predict(self, keep: np.ndarray) -> float:
        return sum(self._layer(keep, i) for i in range(len(self.channels.layers)))

    def delta(self, keep: np.ndarray, remove: np.ndarray) -> float:
        after = keep.copy()
        after[remove] = False
        idx = self.channels.touched(remove)
        return sum(self._layer(after, i) - self._layer(keep, i) for i in idx)
