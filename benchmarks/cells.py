"""Table cells the benchmarks' Markdown shares."""
from __future__ import annotations

import statistics
from typing import Sequence

__all__ = ["median_range"]


def median_range(values: Sequence[float], digits: int = 4) -> str:
    """``"median (lowest-highest)"``: a ratio read several times, with how far the readings went."""
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"
