"""hwprune-fx passes inside a ``torch.fx`` pass pipeline.

    PassManager([FxPass("fold-bn"), FxPass("prune-ratio", ratio=0.3, example_inputs=(x,))])(gm)
        -> torch.fx.passes.infra.pass_base.PassResult(graph_module, modified)

Each :class:`FxPass` is a ``torch.fx.passes.infra.pass_base.PassBase``, so it runs in
``torch.fx.passes.infra.pass_manager.PassManager`` beside torch's own passes. Options are
checked against the hwprune-fx pass registry (same names, types and errors as pipeline
text). The passes with a torch.fx form:

- ``fold-bn``: Conv + BatchNorm (and Linear + BatchNorm1d) fused, eval mode
  (``torch.fx.experimental.optimization.fuse``);
- ``prune-ratio``: the fx prune path (:func:`hwprune_fx.pipeline.prune_module`): trace,
  channel groups, exact rewrite of the modules' parameters, oracle check. It needs
  ``example_inputs``; calibration data and the seed come from the current
  :class:`~hwprune_fx.pass_infra.PassContext`. The result is an ordinary ``GraphModule``
  whose parameters are trainable (fine-tune it with ``.train()``).

Both are functional: the input module is not changed and the result is a new
``GraphModule``; ``modified`` is False (and the input is returned) when nothing changed.
Keep ``steps=1`` (torch's default) around ``prune-ratio``: a fixed-point loop would prune
again on every step.
"""
from __future__ import annotations

from typing import Any, Callable

from torch import fx, nn
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from hwprune_fx.errors import UserError
from hwprune_fx.pass_infra import Pipeline
from hwprune_fx.pass_infra.registry import resolve_options

__all__ = ["FxPass", "fx_passes", "FX_PASS_NAMES"]


def _fold_bn(gm: nn.Module, options: dict[str, Any], example_inputs: tuple | None
             ) -> tuple[PassResult, dict[str, Any]]:
    from hwprune_fx.pass_infra import create_pass

    result = create_pass("fold-bn", **options)(gm)
    return PassResult(result.model, result.modified), dict(result.details)


def _prune_ratio(gm: nn.Module, options: dict[str, Any], example_inputs: tuple | None
                 ) -> tuple[PassResult, dict[str, Any]]:
    from hwprune_fx.pass_infra import PassContext
    from hwprune_fx.pipeline import prune_module

    ctx = PassContext.current()
    res = prune_module(gm, tuple(example_inputs or ()), ratio=options["ratio"], criterion=options.get("criterion", "l1"),
                       verify_output=options.get("verify", True), seed=ctx.seed, calib=ctx.calib,
                       progress=ctx.progress)
    report = dict(res.report)
    if res.plan.is_empty:
        return PassResult(gm, False), report
    return PassResult(res.model, True), report


_FX_FORMS: dict[str, Callable[[nn.Module, dict[str, Any], tuple | None], tuple[PassResult, dict[str, Any]]]] = {
    "fold-bn": _fold_bn,
    "prune-ratio": _prune_ratio,
}

#: Registered passes that have a torch.fx form.
FX_PASS_NAMES: tuple[str, ...] = tuple(sorted(_FX_FORMS))


class FxPass(PassBase):
    """A registered hwprune-fx pass as a ``torch.fx`` pass (``call(gm) -> PassResult``).

    Args:
        name: registered pass name with a torch.fx form (:data:`FX_PASS_NAMES`).
        *args: at most one value, for the pass's first option (as in ``align(8)``).
        example_inputs: example inputs of the module (``prune-ratio`` traces shapes with them).
        **options: the pass's options, by name (text or Python values).
    """

    def __init__(self, name: str, /, *args: Any, example_inputs: tuple | None = None, **options: Any) -> None:
        self.options = resolve_options(name, args, options)  # unknown pass / option / value: UserError
        if name not in _FX_FORMS:
            raise UserError(f"pass {name!r} has no torch.fx form; passes usable on a GraphModule: "
                            f"{', '.join(FX_PASS_NAMES)}")
        if name == "prune-ratio" and example_inputs is None:
            raise UserError("prune-ratio on a torch.fx module needs example_inputs=(tensor, ...)")
        self.pass_name = name
        self.example_inputs = tuple(example_inputs) if example_inputs is not None else None
        self.details: dict[str, Any] = {}  # the last run's details (prune-ratio: its report, removed channels)

    def __repr__(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in self.options.items())
        return f"FxPass({self.pass_name}{'(' + opts + ')' if opts else ''})"

    def requires(self, graph_module: fx.GraphModule) -> None:
        if not isinstance(graph_module, nn.Module):
            raise UserError(f"{self.pass_name}: expected a torch.fx GraphModule, got {type(graph_module).__name__}")

    def call(self, graph_module: fx.GraphModule) -> PassResult:
        result, self.details = _FX_FORMS[self.pass_name](graph_module, dict(self.options), self.example_inputs)
        return result


def fx_passes(text: str | Pipeline, *, example_inputs: tuple | None = None) -> list[FxPass]:
    """torch.fx passes for pipeline text, e.g. ``fx_passes("fold-bn,prune-ratio(ratio=0.3)", example_inputs=(x,))``."""
    pipeline = text if isinstance(text, Pipeline) else Pipeline.parse(text)
    return [FxPass(spec.name, example_inputs=example_inputs, **spec.options) for spec in pipeline]
