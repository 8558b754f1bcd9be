"""Which code a benchmark row measured: results of several runs are merged into one table."""
from __future__ import annotations

import subprocess
from pathlib import Path

__all__ = ["code_commit"]


def code_commit() -> str:
    """The commit the benchmarked code is at (``+dirty`` with uncommitted changes outside
    ``benchmarks/results``), kept in every row: a merged table holds rows of several runs, and each
    must say which code it measured. A run that writes its results after each model would
    otherwise mark its own later rows dirty."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True,
                                  text=True).stdout.strip()
        except OSError:   # no git here (e.g. an unpacked sdist)
            return ""

    sha = git("rev-parse", "--short", "HEAD")
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ":/", ":(exclude,top)benchmarks/results")
    return (sha + ("+dirty" if changed else "")) if sha else "unknown"
