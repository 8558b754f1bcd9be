"""Coverage of the torchvision zoo: does every classifier prune exactly, and how much of it is prunable?

Each model runs in its own process (``coverage_worker.py``): random informative weights,
ONNX export, ``prune_onnx`` at ``--ratio`` with the oracle, and (unless ``--no-fx``) the
torch.fx path. A crash, an OOM kill or a timeout becomes a failing row with its error;
no model is ever dropped. Writes ``coverage.json`` (rows + summary) and ``coverage.md``.

    python benchmarks/coverage.py --models resnet18,vit_b_16 --no-fx
    python benchmarks/coverage.py --no-fx                 # all 80 classifiers, 30-60 min
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent


def all_models() -> list[str]:
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


def source_version() -> str:
    """``git describe --always --dirty`` of the checkout; rows record it because the library may change mid-run."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=_HERE, capture_output=True,
                             text=True, timeout=30)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _failed_row(name: str, error: str, stderr: str) -> dict[str, Any]:
    return {"model": name, "exact": False, "error": error, "traceback": stderr[-3000:]}


def run_one(name: str, ratio: float, fx: bool, timeout: float) -> dict[str, Any]:
    """The worker's row, or a failing row that says how the worker died."""
    with tempfile.TemporaryDirectory() as tmp:
        row_path = Path(tmp) / "row.json"
        cmd = [sys.executable, str(_HERE / "coverage_worker.py"), name, "--ratio", str(ratio),
               "--row", str(row_path)] + ([] if fx else ["--no-fx"])
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
            row = _failed_row(name, f"timeout after {timeout:.0f} s", err)
            row["total_seconds"] = round(time.perf_counter() - t0, 1)
            return row
        if row_path.exists():
            return json.loads(row_path.read_text())
        rc = proc.returncode
        why = (f"worker killed by {signal.Signals(-rc).name}" + (" (likely out of memory)" if rc == -9 else "")
               if rc < 0 else f"worker exited with status {rc} and wrote no row")
        row = _failed_row(name, why, proc.stderr)
        row["total_seconds"] = round(time.perf_counter() - t0, 1)
        return row


def summarize(rows: list[dict[str, Any]], fx: bool) -> dict[str, Any]:
    exact = sum(1 for r in rows if r.get("exact"))
    versions = sorted({r.get("source_version", "unknown") for r in rows})
    summary: dict[str, Any] = {"exact_onnx": exact, "total": len(rows),
                               "errored": [r["model"] for r in rows if not r.get("exact")],
                               "source_versions": versions}
    if fx:
        avail = [r for r in rows if r.get("fx_available")]
        summary["fx_available"] = bool(avail)
        summary["fx_traceable"] = sum(1 for r in avail if r.get("fx_traceable"))
        summary["exact_fx"] = sum(1 for r in avail if r.get("fx_exact"))
    return summary


def summary_line(s: dict[str, Any]) -> str:
    line = f"{s['exact_onnx']}/{s['total']} exact through ONNX"
    if "exact_fx" in s:
        line += (f"; {s['exact_fx']}/{s['fx_traceable']} exact through torch.fx "
                 f"({s['fx_traceable']}/{s['total']} traceable)" if s["fx_available"]
                 else "; torch.fx path not available")
    return line


def _ratio(after: Any, before: Any) -> str:
    return f"{after / before:.3f}" if isinstance(after, int) and before else "–"


def _fx_cell(r: dict[str, Any]) -> str:
    if not r.get("fx_available"):
        return "not available"
    if not r.get("fx_traceable"):
        return "not traceable"
    if r.get("fx_exact"):
        return f"exact ({r['fx_max_rel_error']:.1e})"
    return f"FAIL: {r.get('fx_error', '')[:80]}"


def markdown(rows: list[dict[str, Any]], summary: dict[str, Any], ratio: float, fx: bool) -> str:
    cols = ["model", "groups", "prunable groups", "prunable ch %", "params after/before",
            "MACs after/before", "max rel err", "analysis s", "exact", "error"] + (["fx"] if fx else [])
    out = [f"# Coverage: torchvision classifiers pruned at ratio {ratio}", "",
           f"**{summary_line(summary)}**", "",
           f"Measured at: {', '.join(summary['source_versions'])} (`git describe --dirty` before each model).", "",
           "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        err = r.get("max_rel_error")
        cells = [r["model"], r.get("groups", "–"), r.get("prunable_groups", "–"),
                 r.get("prunable_channels_pct", "–"), _ratio(r.get("params_after"), r.get("params_before")),
                 _ratio(r.get("macs_after"), r.get("macs_before")),
                 f"{err:.1e}" if isinstance(err, float) else "–", r.get("analysis_seconds", "–"),
                 "yes" if r.get("exact") else "**no**", (r.get("error") or "").replace("|", "\\|")[:160]]
        if fx:
            cells.append(_fx_cell(r).replace("|", "\\|"))
        out.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=None, help="comma list (default: every torchvision classifier)")
    ap.add_argument("--ratio", type=float, default=0.3)
    ap.add_argument("--out", default=str(_HERE / "results"))
    ap.add_argument("--no-fx", action="store_true", help="skip the torch.fx path")
    ap.add_argument("--timeout-per-model", type=float, default=1800.0, help="seconds (default 1800)")
    ap.add_argument("--update", action="store_true",
                    help="re-run --models and replace their rows in the existing results (e.g. after an OOM kill)")
    args = ap.parse_args()
    names = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else all_models()
    fx = not args.no_fx
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    kept: list[dict[str, Any]] = []
    if args.update and (out / "coverage.json").exists():
        kept = [r for r in json.loads((out / "coverage.json").read_text())["rows"] if r["model"] not in names]
    for i, name in enumerate(names, 1):
        version = source_version()
        row = run_one(name, args.ratio, fx, args.timeout_per_model)
        row["source_version"] = version
        rows.append(row)
        state = "exact" if row.get("exact") else f"FAIL {row.get('error', '')[:120]}"
        fx_state = f" fx={_fx_cell(row)[:40]}" if fx else ""
        print(f"[{i}/{len(names)}] {name}: {state} prunable={row.get('prunable_channels_pct', '–')}% "
              f"{row.get('total_seconds', '–')} s{fx_state}", file=sys.stderr, flush=True)
        table = sorted(kept + rows, key=lambda r: r["model"])
        summary = summarize(table, fx)  # written after every model so an interrupted run keeps its rows
        (out / "coverage.json").write_text(json.dumps({"rows": table, "summary": summary}, indent=1) + "\n")
        (out / "coverage.md").write_text(markdown(table, summary, args.ratio, fx))
    print(summary_line(summarize(sorted(kept + rows, key=lambda r: r["model"]), fx)), file=sys.stderr, flush=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
