"""Which code a benchmark row measured: results of several runs are merged into one table."""
from __future__ import annotations

import subprocess
from pathlib import Path

__all__ = ["code_commit", "cpu_label"]


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


def cpu_label() -> str:
    """The CPU a row was timed on, e.g. ``Intel(R) Xeon(R) Processor, AVX-512``: the machine
    behind these benchmarks changed from AVX2 to AVX-512 between sessions, which moves every
    latency staircase, so a merged table must say which rows were timed where."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")),
                "unknown")
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{name}, {isa}"
