"""hwprune-fx: hardware-aware structured pruning as a compiler-style graph transformation.

The top-level functions import their machinery lazily so that ``import hwprune_fx`` and
``hwprune-fx --help`` stay fast.
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["prune", "analyze", "bench", "Pipeline", "__version__"]

# Light: the pass infrastructure imports onnx, torch and the passes only when a pass runs.
from hwprune_fx.pass_infra.pipeline_text import Pipeline  # noqa: E402


def prune(model: Any, *, budget: str | None = None, ratio: float | None = None, target: str = "ort-cpu",
          search: str = "opti-cut", criterion: str = "l1", example_inputs: tuple | None = None,
          **options: Any) -> Any:
    """Prune an ONNX path/model or a torch module to a measured latency ``budget`` (or by ``ratio``).

    With ``budget``: for ONNX, a dict with the pruned ``model``, its ``plan`` and a ``report``; for a
    torch module (``example_inputs`` needed), a :class:`hwprune_fx.pipeline.PruneResult` whose
    model is the pruned module, with ``finetune=callable`` called between ``rounds=`` cuts.
    With ``ratio``, a :class:`hwprune_fx.pipeline.PruneResult`.
    """
    from hwprune_fx.errors import UserError

    if (budget is None) == (ratio is None):
        raise UserError("give exactly one of budget= or ratio=")
    if budget is not None:
        from hwprune_fx.pipeline import _is_torch_module, _require_example

        if _is_torch_module(model):
            from hwprune_fx.prune_module_budget import prune_module_to_budget

            return prune_module_to_budget(model, _require_example(example_inputs), budget, target=target,
                                          search=search, criterion=criterion, **options)
        if "finetune" in options:
            raise UserError("finetune= applies to torch modules (the network must train between rounds)")
        from hwprune_fx.prune_budget import prune_to_budget

        return prune_to_budget(model, budget, target=target, search=search, criterion=criterion, **options)
    from hwprune_fx.pipeline import prune as prune_ratio

    return prune_ratio(model, ratio=ratio, criterion=criterion, example_inputs=example_inputs, **options)


def analyze(model: Any, **options: Any) -> Any:
    """Channel groups of an ONNX path/model or a torch module (see :func:`hwprune_fx.pipeline.analyze`)."""
    from hwprune_fx.pipeline import analyze as _analyze

    return _analyze(model, **options)


def bench(model: Any, pipelines: Any, **options: Any) -> Any:
    """Compare pass pipelines on one model in one measurement session (see :func:`hwprune_fx.benchmark.bench`)."""
    from hwprune_fx.benchmark import bench as _bench

    return _bench(model, pipelines, **options)
