"""The IR-neutral analysis graph shared by every frontend."""
from __future__ import annotations

from hwprune_fx.ir.channel_graph import ChannelGraph, OpNode, TensorInfo
from hwprune_fx.ir.kinds import Kind
from hwprune_fx.ir.verify import verify

__all__ = ["ChannelGraph", "OpNode", "TensorInfo", "Kind", "verify"]
