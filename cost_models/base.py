"""One protocol for every cost model: ``predict(keep) -> ms`` and ``delta(keep, units) -> ms``.

A *configuration* is a boolean mask over the analysis' removable units (True = kept). Each
model sees the network as its layers (conv/linear with their fused tail), and a
configuration as the channel counts each layer keeps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from hwprune_fx.analysis import DependencyAnalysis
from hwprune_fx.errors import UserError
from hwprune_fx.profiling.layers import Layer

__all__ = ["CostModel", "LayerChannels", "register_cost_model", "create_cost_model", "available_cost_models"]


class CostModel(Protocol):
    name: str

    def predict(self, keep: np.ndarray) -> float:
        """Predicted latency (ms; MACs in millions for ``flops``) of the configuration ``keep``."""

    def delta(self, keep: np.ndarray, remove: np.ndarray) -> float:
        """Change of the prediction when ``remove`` (unit ids) are also removed (negative = faster)."""


@dataclass
class LayerChannels:
    """For every layer, the units of its input and output channels, to count what a config keeps."""

    layers: list[Layer]
    in_units: list[np.ndarray]
    out_units: list[np.ndarray]

    @classmethod
    def build(cls, analysis: DependencyAnalysis, layers: list[Layer]) -> "LayerChannels":
        slots = analysis.slots
        ins, outs = [], []
        for layer in layers:
            x, y = layer.input.name, layer.nodes[0].outputs[0].name
            ins.append(analysis.units_of(x) if slots.has(x) else np.zeros(0, np.int64))
            outs.append(analysis.units_of(y) if slots.has(y) else np.zeros(0, np.int64))
        return cls(layers, ins, outs)

    def counts(self, keep: np.ndarray, i: int) -> tuple[int, int]:
        layer = self.layers[i]
        cin = int(keep[self.in_units[i]].sum()) if self.in_units[i].size else layer.in_channels
        cout = int(keep[self.out_units[i]].sum()) if self.out_units[i].size else layer.out_channels
        return cin, cout

    def touched(self, units: np.ndarray) -> list[int]:
        """Layers whose channel counts change when ``units`` go."""
        u = set(np.asarray(units).tolist())
        return [i for i in range(len(self.layers))
                if u.intersection(self.in_units[i].tolist()) or u.intersection(self.out_units[i].tolist())]


_REGISTRY: dict[str, Callable[..., CostModel]] = {}


def register_cost_model(name: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        _REGISTRY[name] = cls
        return cls
    return deco


def available_cost_models() -> list[str]:
    return sorted(_REGISTRY)


def create_cost_model(name: str, **kwargs: object) -> CostModel:
    """A cost model by name: ``flops``, ``lut``, ``predictor``, ``measured``."""
    from hwprune_fx.cost_models import layer_flops, lut, measured, predictor  # noqa: F401  (registration)

    if name not in _REGISTRY:
        raise UserError(f"unknown cost model {name!r}; choose one of: {', '.join(available_cost_models())}")
    return _REGISTRY[name](**kwargs)
