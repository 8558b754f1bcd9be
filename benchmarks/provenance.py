"""Which code a benchmark row measured: results of several runs are merged into one table."""
from __future__ import annotations

import subprocess
from pathlib import Path

__all__ = ["code_commit"]


def code_commit() -> str:
    """The commit the benchmarked code is at (``+dirty`` with uncommitted changes), kept in every
    row: a merged table holds rows of several runs, and each must say which code it measured."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True,
                                  text=True).stdout.strip()
        except OSError:   # no git here (e.g. an unpacked sdist)
            return ""

    sha = git("rev-parse", "--short", "HEAD")
    return (sha + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")) if sha else "unknown"
