"""Rewrite passes, one per file (installed as ``hwprune_fx.passes``)."""
from __future__ import annotations

from hwprune_fx.passes.align import AlignChannelsPass
from hwprune_fx.passes.merge_similar import MergeSimilarPass
from hwprune_fx.passes.prune_channels import PruneChannelsPass

__all__ = ["AlignChannelsPass", "MergeSimilarPass", "PruneChannelsPass"]
