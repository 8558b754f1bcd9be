"""The human summary printed after ``hwprune-fx prune``."""
from __future__ import annotations

from typing import Any

from hwprune_fx.emit.table import format_table

__all__ = ["prune_summary", "budget_summary"]


def _pct(after: int, before: int) -> str:
    return f"{100.0 * after / before:.1f}%" if before else "-"


def prune_summary(report: dict[str, Any]) -> str:
    rows = [
        ["parameters", report["params_before"], report["params_after"],
         _pct(report["params_after"], report["params_before"])],
        ["MACs", report["macs_before"], report["macs_after"], _pct(report["macs_after"], report["macs_before"])],
    ]
    lines = [format_table(["", "before", "after", "after/before"], rows)]
    oracle = report.get("oracle")
    check = (f"exact (max relative error {oracle['max_rel_error']:.2e})" if oracle else "not verified")
    lines.append(f"removed {report['removed_units']} channels in {report['prunable_groups']} groups; "
                 f"oracle: {check}")
    if report.get("output"):
        lines.append(f"wrote {report['output']}")
    return "\n".join(lines)


def budget_summary(report: dict[str, Any]) -> str:
    """Latency-vs-budget table, then the size table."""
    f, b = report["final"], report["baseline_fresh"]
    rows = [["latency (ms, median)", round(b["median_ms"], 3), round(f["median_ms"], 3),
             f"{100.0 * f['median_ms'] / b['median_ms']:.1f}%"],
            ["spread p10-p90 (ms)", round(b["spread_ms"], 3), round(f["spread_ms"], 3), ""]]
    lines = [format_table(["", "before", "after", "after/before"], rows),
             f"budget {report['budget']} = {report['budget_ms']:.3f} ms{_rescaled(report)} on {report['target']}: "
             f"{'met' if report['reached'] else 'NOT met'} ({100.0 * report['budget_used']:.1f}% of budget used, "
             f"speed-up {report['speedup']:.2f}x; search {report['search']}, {len(report['steps'])} steps, "
             f"aimed at {report['aim_ms']:.3f} ms{_attempts(report)})",
             _where_timed(report),
             prune_summary({**report, "prunable_groups": len(report["group_sizes"])})]
    return "\n".join(lines)


def _attempts(report: dict[str, Any]) -> str:
    attempts = report.get("attempts") or []
    if len(attempts) < 2:
        return ""
    if attempts[1].get("why") == "aim higher":
        first = attempts[0]
        kept = "the second" if report.get("kept_attempt") == 2 else "the first (the second did not pass fuller)"
        return (f"; 2 searches: the first network used {first['final_ms'] / first['final_budget_ms']:.1%} of the "
                f"budget, so the second aimed higher; kept {kept}")
    return f", {len(attempts)} searches: an earlier final check missed, or its session pairs spread over the budget"


def _where_timed(report: dict[str, Any]) -> str:
    """Where the before/after latencies come from: the final check's session pairs and their process."""
    attempts = report.get("attempts") or [{}]
    kept = attempts[min(len(attempts), report.get("kept_attempt") or len(attempts)) - 1]
    pairs = len(kept.get("pair_ratios", [])) or "new"
    where = {"fresh": "a process of its own", "this": "the searching process"}.get(
        report.get("final_check_process", "this"), "the searching process")
    return f"before/after: the median of {pairs} session pairs timed side by side in {where}"


def _rescaled(report: dict[str, Any]) -> str:
    """A relative budget is met as a ratio: in the final check's terms it is its own original's share."""
    final_budget, budget = report.get("final_budget_ms"), report["budget_ms"]
    if final_budget is None or abs(final_budget - budget) <= 1e-3 * budget:
        return ""
    return f" ({final_budget:.3f} ms beside the final check's original)"
