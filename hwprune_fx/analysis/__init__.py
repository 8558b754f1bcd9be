"""Coupled-channel analysis on the ChannelGraph."""
from __future__ import annotations

from hwprune_fx.analysis.dependency import ChannelGroup, DependencyAnalysis, analyze_dependencies

__all__ = ["ChannelGroup", "DependencyAnalysis", "analyze_dependencies"]
