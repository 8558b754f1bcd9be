"""Cost models behind one protocol (installed as ``hwprune_fx.cost_models``)."""
from __future__ import annotations

from hwprune_fx.cost_models.base import (CostModel, LayerChannels, available_cost_models, create_cost_model)
from hwprune_fx.cost_models.flops import FlopsCostModel, count_macs, count_params

__all__ = ["CostModel", "LayerChannels", "available_cost_models", "create_cost_model", "FlopsCostModel",
           "count_macs", "count_params"]
