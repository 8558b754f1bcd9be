"""One model of the coverage benchmark, in its own process: build, export, prune, oracle -> one JSON row.

``coverage.py`` starts this script once per model so that a crash, an OOM kill or a leak
costs one row, not the run. Every failure is caught and written into the row; the row is
written to ``--row`` (not stdout, which the exporters write to).

    python benchmarks/coverage_worker.py resnet18 --ratio 0.3 --row /tmp/row.json
"""
from __future__ import annotations

import argparse
import copy
import json
import re
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

from model_zoo import build_model, check_output_varies, export_onnx, input_shape

from hwprune_fx.analysis import DependencyAnalysis, analyze_dependencies
from hwprune_fx.errors import RewriteError
from hwprune_fx.pipeline import load_onnx_model, prune_onnx, prune_module

_REL = re.compile(r"max relative error ([0-9.eE+\-]+|inf|nan)")


def _error(exc: BaseException) -> tuple[str, str]:
    """(one-line message, traceback tail) of an exception."""
    tail = "".join(traceback.format_exception(exc)[-6:])
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:500], tail[-3000:]


def barrier_kind(reason: str) -> str:
    """A reason without its operator or tensor name, so that reasons of one kind can be counted."""
    reason = re.sub(r"'[^']*'", "'…'", reason)
    m = re.match(r"^\S+ \((\w+)\) (.*)$", reason)
    if m:
        return f"{m.group(1)}: {m.group(2)}"
    m = re.match(r"^\S+: (.*)$", reason)
    return m.group(1) if m else reason


def coverage_stats(analysis: DependencyAnalysis) -> dict[str, Any]:
    """Groups, prunable share of all units, and the barrier kinds weighted by the units they pin."""
    units = sum(g.size for g in analysis.groups)
    prunable = sum(g.size for g in analysis.prunable_groups())
    kinds: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for g in analysis.groups:
        if g.prunable:
            continue
        for r in set(g.reasons) or {"(no reason given)"}:
            kinds[barrier_kind(r)] += g.size
            examples.setdefault(barrier_kind(r), r)
    return {"groups": len(analysis.groups), "prunable_groups": len(analysis.prunable_groups()),
            "units": units, "prunable_units": prunable,
            "prunable_channels_pct": round(100.0 * prunable / max(units, 1), 1),
            "barriers": [{"kind": k, "units": n, "example": examples[k]} for k, n in kinds.most_common(6)]}


def onnx_columns(path: Path, ratio: float) -> dict[str, Any]:
    """Prune through ONNX with the oracle; a non-exact result still yields its coverage columns."""
    row: dict[str, Any] = {}
    t0 = time.perf_counter()
    try:
        res = prune_onnx(path, ratio=ratio, criterion="l1", verify_output=True)
    except RewriteError as exc:
        row["exact"] = False
        row["error"], row["traceback"] = _error(exc)
        m = _REL.search(str(exc))
        row["max_rel_error"] = float(m.group(1)) if m else None
        row.update(coverage_stats(analyze_dependencies(load_onnx_model(path).channel_graph)))
        return row
    rep = res.report
    row.update(coverage_stats(res.plan.analysis))
    row.update({"exact": True, "max_rel_error": rep["oracle"]["max_rel_error"],
                "params_before": rep["params_before"], "params_after": rep["params_after"],
                "macs_before": rep["macs_before"], "macs_after": rep["macs_after"],
                "removed_units": rep["removed_units"],
                "analysis_seconds": round(rep["seconds"]["analysis"], 4),
                "prune_seconds": round(time.perf_counter() - t0, 2)})
    return row


def fx_columns(model: Any, shape: tuple[int, ...], ratio: float) -> dict[str, Any]:
    """Trace and prune through torch.fx; ``fx_available`` is False while the frontend is absent."""
    import torch

    try:
        from hwprune_fx.frontends.fx_frontend import trace_module
    except Exception as exc:  # noqa: BLE001 - the frontend is being written; any import failure counts
        return {"fx_available": False, "fx_error": _error(exc)[0]}
    x = torch.randn(*shape)
    row: dict[str, Any] = {"fx_available": True}
    try:
        trace_module(copy.deepcopy(model), (x,))
        row["fx_traceable"] = True
    except Exception as exc:  # noqa: BLE001
        row.update({"fx_traceable": False, "fx_exact": False})
        row["fx_error"], row["fx_traceback"] = _error(exc)
        return row
    try:
        res = prune_module(copy.deepcopy(model), (x,), ratio=ratio)
        row.update({"fx_exact": True, "fx_max_rel_error": res.report["oracle"]["max_rel_error"]})
    except Exception as exc:  # noqa: BLE001
        row["fx_exact"] = False
        row["fx_error"], row["fx_traceback"] = _error(exc)
        m = _REL.search(str(exc))
        row["fx_max_rel_error"] = float(m.group(1)) if m else None
    return row


def measure(name: str, ratio: float, fx: bool) -> dict[str, Any]:
    """Every column of one model's row; stage failures become ``error`` entries."""
    row: dict[str, Any] = {"model": name, "ratio": ratio}
    stage, model = "build", None
    try:
        shape = input_shape(name)
        row["input_shape"] = list(shape)
        model, raised = build_model(name)
        row["raised_constants"] = raised
        stage = "output check"
        row["output_input_sensitivity"] = round(check_output_varies(model, shape), 4)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{name}.onnx"
            stage = "export"
            row["exporter"] = export_onnx(model, shape, path)
            row["onnx_mb"] = round(sum(f.stat().st_size for f in Path(tmp).iterdir()) / 2**20, 1)
            stage = "onnx prune"
            if not fx:
                model = None  # the ONNX path does not need it; frees memory for the largest models
            row.update(onnx_columns(path, ratio))
    except Exception as exc:  # noqa: BLE001 - one row per model, whatever went wrong
        row["exact"] = False
        msg, row["traceback"] = _error(exc)
        row["error"] = f"[{stage}] {msg}"
    if fx and model is not None:
        row.update(fx_columns(model, shape, ratio))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--ratio", type=float, default=0.3)
    ap.add_argument("--no-fx", action="store_true")
    ap.add_argument("--row", required=True, help="where to write the row (JSON)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    row = measure(args.model, args.ratio, fx=not args.no_fx)
    row["total_seconds"] = round(time.perf_counter() - t0, 1)
    Path(args.row).write_text(json.dumps(row, indent=1) + "\n")


if __name__ == "__main__":
    main()
