"""Targets: compile a network and time it on a real backend."""
from __future__ import annotations

from hwprune_fx.targets.base import Backend, TimingConfig, available_backends, create_backend
from hwprune_fx.targets.measurement import Measurement

__all__ = ["Backend", "TimingConfig", "Measurement", "available_backends", "create_backend"]
