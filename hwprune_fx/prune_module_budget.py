"""The budget path for ``torch.nn.Module``: prune to a measured latency, optionally fine-tuning
between rounds (HFP fine-tunes as it cuts).

    module -> ONNX (BatchNorm kept) -> prune_to_budget (round r's budget) -> onnx2torch module
           -> finetune(module) -> ONNX -> ... -> the pruned module of the last round

With ``rounds = R`` the latency goes from the baseline to the budget in R geometric steps, so
the network is fine-tuned after each cut instead of once after the whole cut. The module
returned is the torch module onnx2torch rebuilds from the pruned network: ordinary
``nn.Conv2d``/``nn.BatchNorm2d``/``nn.Linear`` layers in a ``torch.fx.GraphModule``, which trains.
Every round is exact by the oracle (or the merge oracle) against the network it started from.
"""
from __future__ import annotations

import io
from typing import Any, Callable

import onnx

from hwprune_fx.errors import UserError
from hwprune_fx.search.budget import Budget, parse_budget

__all__ = ["prune_module_to_budget", "module_to_onnx"]


def module_to_onnx(module: Any, example_inputs: tuple) -> onnx.ModelProto:
    """The module in eval mode as ONNX, without constant folding, so BatchNorm stays a layer
    (onnxruntime still fuses it for timing; the fine-tune gets it back as ``nn.BatchNorm2d``)."""
    import torch

    was_training = module.training
    buf = io.BytesIO()
    try:
        torch.onnx.export(module.eval(), tuple(example_inputs), buf, dynamo=False, opset_version=17,
                          do_constant_folding=False,
                          input_names=[f"input{i}" if len(example_inputs) > 1 else "input"
                                       for i in range(len(example_inputs))])
    finally:
        module.train(was_training)
    return onnx.load_from_string(buf.getvalue())


def prune_module_to_budget(module: Any, example_inputs: tuple, budget: str | Budget, *, rounds: int | None = None,
                           finetune: Callable[[Any], None] | None = None, target: str = "ort-cpu",
                           threads: int = 1, repeat: int = 20, cache_dir: Any = None,
                           progress: Callable[[str], None] | None = None, **options: Any) -> Any:
    """Returns a :class:`hwprune_fx.pipeline.PruneResult` whose ``model`` is the pruned torch module.

    Args:
        rounds: cut in this many geometric latency steps (default 3 with ``finetune``, else 1).
        finetune: called with the pruned module after every round (train it in place; it is
            put back in eval mode after).
        options: passed to :func:`hwprune_fx.prune_budget.prune_to_budget` (search, criterion, calib...).
    """
    from onnx2torch import convert

    from hwprune_fx.pipeline import PruneResult
    from hwprune_fx.prune_budget import prune_to_budget
    from hwprune_fx.targets import TimingConfig, create_backend

    say = progress or (lambda msg: None)
    budget = parse_budget(budget) if isinstance(budget, str) else budget
    rounds = rounds if rounds is not None else (3 if finetune else 1)
    if rounds < 1:
        raise UserError(f"rounds must be >= 1, got {rounds}")
    current = module_to_onnx(module, example_inputs)
    backend = create_backend(target, timing=TimingConfig(warmup=5, repeat=repeat, threads=threads),
                             cache_dir=cache_dir)
    baseline_ms = backend.measure(current).median_ms
    final_ms = budget.target_ms(baseline_ms)
    reports, pruned, result = [], module, None
    reached_share = 1.0   # the network so far over the original: each round's final check, side by side
    for r in range(1, rounds + 1):
        step_ms = baseline_ms * (final_ms / baseline_ms) ** (r / rounds)
        round_budget = _round_budget(budget, r, rounds, step_ms, reached_share)
        say(_round_line(budget, r, rounds, reached_share, step_ms, final_ms))
        result = prune_to_budget(current, round_budget, target=target,
                                 threads=threads, repeat=repeat, cache_dir=cache_dir, progress=progress, **options)
        rep = result["report"]
        reached_share *= rep["final"]["median_ms"] / rep["baseline_fresh"]["median_ms"]
        reports.append(rep)
        pruned = convert(result["model"]).eval()
        if finetune is not None:
            pruned.train()
            finetune(pruned)
            pruned.eval()
        current = module_to_onnx(pruned, example_inputs) if r < rounds else result["model"]
    if budget.kind != "ms":   # the last round measured the budget against a baseline of its own
        final_ms = reports[-1]["budget_ms"]
    report = {"budget": budget.text, "baseline_ms": baseline_ms, "budget_ms": final_ms, "rounds": reports,
              "final": reports[-1]["final"], "reached": reports[-1]["reached"], "finetuned": finetune is not None}
    return PruneResult(pruned, result["plan"], report)


def _round_budget(budget: Budget, r: int, rounds: int, step_ms: float, reached_share: float) -> str:
    """Round ``r``'s budget for ``prune_to_budget``.

    A relative budget stays relative: the round asks for the share of the *original* its step
    is at, over the share the rounds before reached (timed side by side with the original,
    so the ratio does not rest on one baseline reading). An absolute one steps in ms from the
    baseline read once at the start. Relative steps because one slow first reading of a
    small network made every round's ms budget look met before anything was cut.
    """
    if budget.kind == "ms":
        return f"{step_ms:.6f}ms"
    return f"{_round_share_pct(budget, r, rounds, reached_share):.6f}%"


def _round_share_pct(budget: Budget, r: int, rounds: int, reached_share: float) -> float:
    """A relative budget's round ``r``: its step's share of the original over the share reached."""
    return min(100.0 * budget.target_ms(1.0) ** (r / rounds) / reached_share, 99.9)


def _round_line(budget: Budget, r: int, rounds: int, reached_share: float, step_ms: float, final_ms: float) -> str:
    """The progress line of round ``r``, in the budget's own terms: a relative budget is shown
    as shares (the ms figure would rest on the single baseline reading it no longer uses)."""
    if budget.kind == "ms":
        return f"round {r}/{rounds}: budget {step_ms:.3f} ms (final {final_ms:.3f} ms)"
    step_share = 100.0 * budget.target_ms(1.0) ** (r / rounds)
    return (f"round {r}/{rounds}: budget {step_share:.1f}% of the original "
            f"({_round_share_pct(budget, r, rounds, reached_share):.1f}% of the network "
            f"this round starts from; final {budget.text})")
