"""hwprune-fx: hardware-aware structured pruning as a compiler-style graph transformation."""
from __future__ import annotations

__version__ = "0.1.0"
