"""PassManager: run passes in order, optionally to a fixed point, naming any failing pass."""
from __future__ import annotations

from typing import Any, Sequence

from hwprune_fx.errors import HwpruneError
from hwprune_fx.pass_infra.base import PassBase, PassError, PassResult
from hwprune_fx.pass_infra.instruments import PassInstrument

__all__ = ["PassManager"]


class PassManager:
    """``PassManager(passes, steps=1, instruments=[...])(model) -> PassResult``.

    With ``steps > 1`` the sequence repeats until no pass modifies the model (torch.fx's
    PassManager). Instruments' ``before_pass`` hooks run in order, ``after_pass`` hooks in
    reverse order. Errors name the failing pass and the passes that ran before it; a
    :class:`HwpruneError` (bad input, exactness failure) passes through unchanged.
    """

    def __init__(self, passes: Sequence[PassBase], steps: int = 1,
                 instruments: Sequence[PassInstrument] = ()) -> None:
        self.passes = list(passes)
        self.steps = steps
        self.instruments = list(instruments)

    def __call__(self, model: Any) -> PassResult:
        ran: list[str] = []
        modified_any = False
        for _ in range(max(self.steps, 1)):
            modified_step = False
            for p in self.passes:
                for ins in self.instruments:
                    ins.before_pass(p, model)
                try:
                    result = p(model)
                except HwpruneError:
                    raise
                except Exception as exc:
                    before = ", ".join(ran) or "none"
                    raise PassError(f"pass {p.name!r} failed ({type(exc).__name__}: {exc}); "
                                    f"passes run before it: {before}") from exc
                for ins in reversed(self.instruments):  # nested: the first instrument wraps all
                    ins.after_pass(p, result)
                ran.append(p.name)
                model = result.model
                modified_step |= result.modified
            modified_any |= modified_step
            if not modified_step:
                break
        return PassResult(model, modified_any)
