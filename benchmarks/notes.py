"""Hand-written notes under a benchmark's generated Markdown table, kept when the table is re-written."""
from __future__ import annotations

from pathlib import Path

__all__ = ["kept_notes"]


def kept_notes(path: Path) -> str:
    """The ``## Notes`` sections of an earlier ``path`` (from the first such heading on), so
    that a run re-writing the table does not drop what earlier sessions found and wrote."""
    if not path.exists():
        return ""
    text = path.read_text()
    at = text.find("\n## Notes")
    return "" if at < 0 else text[at:]
