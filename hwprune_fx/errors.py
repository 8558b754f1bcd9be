"""Error types: a user's mistake is a :class:`UserError` (one line, no traceback)."""
from __future__ import annotations

__all__ = ["HwpruneError", "UserError", "AnalysisError", "RewriteError", "VerificationError",
           "BackendError"]


class HwpruneError(Exception):
    """Base class of every error hwprune-fx raises on purpose."""


class UserError(HwpruneError):
    """Bad input from the user: the CLI prints the message alone and exits non-zero."""


class AnalysisError(HwpruneError):
    """The dependency analysis met an inconsistency it cannot explain (a bug, not bad input)."""


class RewriteError(HwpruneError):
    """A rewrite could not be applied exactly; nothing is emitted."""


class VerificationError(HwpruneError):
    """``verify(graph)`` found an inconsistent graph."""


class BackendError(HwpruneError):
    """A backend could not produce an honest measurement (e.g. untuned TVM workloads)."""
