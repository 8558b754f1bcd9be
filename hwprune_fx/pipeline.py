"""Wiring: frontend -> analysis -> criterion -> plan -> passes -> emit.

The core modules never import passes or cost models; this module does, so the CLI and the
Python API share one code path.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Union

import onnx
import onnx_graphsurgeon as gs

from hwprune_fx.analysis import DependencyAnalysis, analyze_dependencies
from hwprune_fx.calib import CalibrationData, CalibrationSource
from hwprune_fx.criteria import Criterion, create_criterion, needs_data, require_data
from hwprune_fx.errors import RewriteError, UserError
from hwprune_fx.ir import ChannelGraph, verify
from hwprune_fx.pass_infra import PassManager, TimingInstrument
from hwprune_fx.plan import PruningPlan, plan_by_ratio

__all__ = ["LoadedOnnx", "load_onnx_model", "materialize", "analyze", "PruneResult", "prune_onnx", "prune_module",
           "prune", "check_output_path", "make_criterion", "CalibInput"]

#: what ``calib=`` accepts: a path (.npz/.npy/image folder), a source with limit and image options, or data
CalibInput = Union[str, os.PathLike, CalibrationSource, CalibrationData, None]


@dataclass
class LoadedOnnx:
    """A prepared ONNX graph with its ChannelGraph and a pristine copy for the oracle."""

    path: str | None
    graph: gs.Graph
    channel_graph: ChannelGraph
    original: onnx.ModelProto


def load_onnx_model(model: str | os.PathLike | onnx.ModelProto,
                    input_shapes: dict[str | None, list[int]] | None = None) -> LoadedOnnx:
    from hwprune_fx.frontends.onnx_frontend import onnx_to_channel_graph
    from hwprune_fx.frontends.onnx_io import load_onnx, prepare_graph

    path = None
    if isinstance(model, onnx.ModelProto):
        owned = onnx.ModelProto()
        owned.CopyFrom(model)
        model = owned
    else:
        path = str(model)
        model = load_onnx(path)
    graph = prepare_graph(model, input_shapes, source=path or "model")
    del model  # the prepared graph holds what is needed; a large proto need not stay twice
    original = gs.export_onnx(graph)  # export reads the graph, it does not share or change it
    cg = onnx_to_channel_graph(graph)
    verify(cg)
    return LoadedOnnx(path, graph, cg, original)


def materialize(original: onnx.ModelProto, plan: PruningPlan) -> onnx.ModelProto:
    """The pruned network of ``plan``, built from a fresh copy of the prepared original."""
    from hwprune_fx.emit.onnx_emit import export_checked
    from hwprune_fx.passes import PruneChannelsPass

    graph = gs.import_onnx(original)
    PruneChannelsPass(plan)(graph)
    return export_checked(graph, plan)


def analyze(model: Any, input_shapes: dict[str | None, list[int]] | None = None,
            example_inputs: tuple | None = None) -> DependencyAnalysis:
    """Channel groups of an ONNX file/model or a ``torch.nn.Module`` (with example inputs)."""
    if _is_torch_module(model):
        from hwprune_fx.frontends.fx_frontend import trace_module

        traced = trace_module(model, _require_example(example_inputs))
        return analyze_dependencies(traced.channel_graph)
    return analyze_dependencies(load_onnx_model(model, input_shapes).channel_graph)


@dataclass
class PruneResult:
    """The pruned model (ONNX ``ModelProto`` or ``torch.fx.GraphModule``), its plan and report."""

    model: Any
    plan: PruningPlan
    report: dict[str, Any] = field(default_factory=dict)


def _is_torch_module(model: Any) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return isinstance(model, torch.nn.Module)


def _require_example(example_inputs: tuple | None) -> tuple:
    if example_inputs is None:
        raise UserError("pruning a torch.nn.Module needs example_inputs (a tuple of tensors)")
    return example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)


def check_output_path(output: str | os.PathLike, inputs: tuple[str | os.PathLike | None, ...]) -> Path:
    """Refuse to overwrite an input and fail early when the output folder is not writable."""
    out = Path(output)
    for src in inputs:
        same = src is not None and (out.resolve() == Path(src).resolve()
                                    or (out.exists() and Path(src).exists() and os.path.samefile(src, out)))
        if same:
            raise UserError(f"{out}: the output path is the input file; choose another -o")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"{out}: output directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{out}: output directory {parent} is not writable")
    if out.is_dir():
        raise UserError(f"{out}: is a directory")
    return out


def make_criterion(name: str, model: Any, calib: CalibInput, specs: dict[str, tuple[int | None, ...]],
                   progress: Callable[[str], None] | None = None) -> tuple[Criterion, dict[str, Any] | None]:
    """The criterion ``name``; a data-driven one gets ``model`` and the calibration data, loaded for ``specs``.

    Returns the criterion and, when calibration data was used, its report entry.
    """
    from hwprune_fx.calib import resolve_calibration

    if not needs_data(name):
        return create_criterion(name), None
    require_data(name, calib)
    data = resolve_calibration(calib, specs)
    entry = {"source": data.source, "samples": data.num_samples}
    return create_criterion(name, model=model, calib=data, progress=progress), entry


def _counts(cg: ChannelGraph) -> tuple[int, int]:
    from hwprune_fx.cost_models.flops import count_macs, count_params

    return count_params(cg), count_macs(cg)


def prune_onnx(model: str | os.PathLike | onnx.ModelProto, *, ratio: float, criterion: str = "l1",
                input_shapes: dict[str | None, list[int]] | None = None, verify_output: bool = True,
                seed: int = 0, calib: CalibInput = None,
                progress: Callable[[str], None] | None = None) -> PruneResult:
    """Prune by ``ratio``; ``calib`` (a path, :class:`CalibrationSource` or data) feeds ``taylor``/``ig``."""
    from hwprune_fx.calib import model_input_specs
    from hwprune_fx.emit.onnx_emit import export_checked
    from hwprune_fx.frontends.onnx_frontend import onnx_to_channel_graph
    from hwprune_fx.oracle import random_inputs
    from hwprune_fx.passes import PruneChannelsPass

    if not 0.0 < ratio < 1.0:
        raise UserError(f"--ratio must be strictly between 0 and 1, got {ratio}")
    require_data(criterion, calib)
    phases: dict[str, float] = {}
    t0 = time.perf_counter()
    loaded = load_onnx_model(model, input_shapes)
    phases["load"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    analysis = analyze_dependencies(loaded.channel_graph)
    phases["analysis"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    crit, calib_entry = make_criterion(criterion, loaded.original, calib, model_input_specs(loaded.original),
                                       progress)
    plan = plan_by_ratio(analysis, crit.score(analysis), ratio)
    phases["plan"] = time.perf_counter() - t0
    from hwprune_fx.merge_oracle import merge_oracle
    from hwprune_fx.passes.merge_similar import MergeSimilarPass, applicable_merges

    merges = applicable_merges(plan, getattr(crit, "twins", {}))
    timing = TimingInstrument()
    PassManager([MergeSimilarPass(merges), PruneChannelsPass(plan)], instruments=[timing])(loaded.graph)
    t0 = time.perf_counter()
    pruned = export_checked(loaded.graph, plan)
    phases["rewrite"] = sum(timing.totals().values())
    phases["export"] = time.perf_counter() - t0
    oracle = None
    if verify_output:
        t0 = time.perf_counter()
        res = merge_oracle(loaded.original, pruned, plan.removed_channels, merges,
                           random_inputs(loaded.original, seed=seed))
        phases["oracle"] = time.perf_counter() - t0
        if not res.exact:
            raise RewriteError(f"the pruned network does not match the oracle (max relative error "
                               f"{res.max_rel_error:.3g}); nothing was written")
        oracle = {"max_rel_error": res.max_rel_error, "max_abs_error": res.max_abs_error,
                  "tolerance": res.tolerance}
    params0, macs0 = _counts(loaded.channel_graph)
    params1, macs1 = _counts(onnx_to_channel_graph(gs.import_onnx(pruned)))
    report = {
        "input": loaded.path, "criterion": criterion, "ratio": ratio,
        "params_before": params0, "params_after": params1, "macs_before": macs0, "macs_after": macs1,
        "groups": len(analysis.groups), "prunable_groups": len(analysis.prunable_groups()),
        "removed_units": int(plan.removed_units.size), "group_sizes": plan.group_sizes(),
        "oracle": oracle, "seconds": phases, "removed_channels": plan.removed_channels,
        "merged_channels": len(merges), "merges": [m._asdict() for m in merges],
    }
    if calib_entry:
        report["calibration"] = calib_entry
    return PruneResult(pruned, plan, report)



def prune_module(module: Any, example_inputs: tuple, *, ratio: float, criterion: str = "l1",
                 verify_output: bool = True, seed: int = 0, calib: CalibInput = None,
                 progress: Callable[[str], None] | None = None) -> PruneResult:
    """Prune a ``torch.nn.Module`` through torch.fx; returns a smaller, trainable GraphModule.

    ``calib`` feeds ``taylor``/``ig``; a single array feeds a single-input module whatever its name.
    """
    from hwprune_fx.frontends.fx_frontend import fx_oracle, trace_module
    from hwprune_fx.passes import PruneChannelsPass

    if not 0.0 < ratio < 1.0:
        raise UserError(f"ratio must be strictly between 0 and 1, got {ratio}")
    example_inputs = _require_example(example_inputs)
    require_data(criterion, calib)
    traced = trace_module(module, example_inputs)
    analysis = analyze_dependencies(traced.channel_graph)
    cg = traced.channel_graph
    specs = {t: (None, *cg.shape(t)[1:]) for t in cg.inputs if cg.shape(t)}
    crit, calib_entry = make_criterion(criterion, traced.module, calib, specs, progress)
    plan = plan_by_ratio(analysis, crit.score(analysis), ratio)
    original = traced.copy_module()
    PassManager([PruneChannelsPass(plan)])(traced.module)
    report: dict[str, Any] = {"criterion": criterion, "ratio": ratio,
                              "removed_units": int(plan.removed_units.size),
                              "removed_channels": plan.removed_channels}
    if calib_entry:
        report["calibration"] = calib_entry
    if verify_output:
        err = fx_oracle(original, traced.module, plan.removed_channels, example_inputs)
        if not err < 1e-3:
            raise RewriteError(f"the pruned module does not match the oracle (max relative error {err:.3g})")
        report["oracle"] = {"max_rel_error": err}
    return PruneResult(traced.module, plan, report)


def prune(model: Any, *, ratio: float, criterion: str = "l1", example_inputs: tuple | None = None,
          input_shapes: dict[str | None, list[int]] | None = None, verify_output: bool = True,
          calib: CalibInput = None) -> PruneResult:
    """Prune an ONNX path/model or a ``torch.nn.Module`` by ``ratio`` per channel group.

    ``calib`` (a path, :class:`~hwprune_fx.calib.CalibrationSource` or
    :class:`~hwprune_fx.calib.CalibrationData`) is what the data-driven criteria ``taylor`` and ``ig`` need.
    """
    if _is_torch_module(model):
        return prune_module(model, _require_example(example_inputs), ratio=ratio, criterion=criterion,
                            verify_output=verify_output, calib=calib)
    return prune_onnx(model, ratio=ratio, criterion=criterion, input_shapes=input_shapes,
                      verify_output=verify_output, calib=calib)

