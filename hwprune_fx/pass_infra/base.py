"""PassBase / PassResult: a pass is a small named class with an honest ``modified`` flag."""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

__all__ = ["PassResult", "PassBase", "PassError"]


@dataclass(frozen=True)
class PassResult:
    """What a pass returns: the (possibly new) model and whether anything changed.

    ``details`` is what the pass wants on its record (e.g. the ``prune`` pass's report);
    the pipeline copies it into :class:`hwprune_fx.pass_infra.pipeline_text.PassRecord`.
    """

    model: Any
    modified: bool
    details: Mapping[str, Any] = field(default_factory=dict)


class PassError(RuntimeError):
    """A pass failed; the message names the pass and the passes that ran before it."""


class PassBase(abc.ABC):
    """Base class of every pass. Subclasses set ``name`` and implement :meth:`call`.

    ``in_place`` declares whether the pass mutates its input model (onnx_ir's
    InPlacePass/FunctionalPass distinction); the pass manager checks the claim.
    """

    name: ClassVar[str] = "pass"
    in_place: ClassVar[bool] = True

    def requires(self, model: Any) -> None:
        """Raise if ``model`` does not meet this pass's precondition."""

    def ensures(self, model: Any) -> None:
        """Raise if ``model`` does not meet this pass's postcondition."""

    @abc.abstractmethod
    def call(self, model: Any) -> PassResult:
        """Transform ``model``."""

    def __call__(self, model: Any) -> PassResult:
        self.requires(model)
        result = self.call(model)
        if not isinstance(result, PassResult):
            raise PassError(f"pass {self.name!r} returned {type(result).__name__}, not PassResult")
        if self.in_place and result.model is not model:
            raise PassError(f"pass {self.name!r} claims to work in place but returned a new model")
        self.ensures(result.model)
        return result
