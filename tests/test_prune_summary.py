"""The terminal summary of ``prune --budget`` says which numbers it shows and where they were timed."""
from __future__ import annotations

from hwprune_fx.emit.prune_summary import budget_summary


def _report(**over) -> dict:
    timing = {"median_ms": 10.0, "spread_ms": 0.1}
    rep = {"final": {**timing, "median_ms": 5.8}, "baseline_fresh": timing, "budget": "60%", "budget_ms": 6.1,
           "final_budget_ms": 6.0, "target": "ort-cpu", "reached": True, "budget_used": 5.8 / 6.0, "speedup": 1.72,
           "search": "opti-cut", "steps": [1, 2], "aim_ms": 5.9, "final_check_process": "fresh",
           "attempts": [{"pair_ratios": [0.57, 0.58, 0.59]}], "params_before": 10, "params_after": 6,
           "macs_before": 100, "macs_after": 55, "removed_units": 4, "group_sizes": [1, 2], "oracle": None}
    return {**rep, **over}


def test_the_summary_says_where_the_final_check_ran() -> None:
    assert "median of 3 session pairs timed side by side in a process of its own" in budget_summary(_report())
    here = budget_summary(_report(final_check_process="this"))
    assert "in the searching process" in here and "of its own" not in here


def test_a_relative_budget_is_shown_in_the_final_checks_terms_too() -> None:
    assert "6.100 ms (6.000 ms beside the final check's original) on ort-cpu: met (96.7%" in budget_summary(_report())
    absolute = budget_summary(_report(budget="6ms", budget_ms=6.0, final_budget_ms=6.0))
    assert "budget 6ms = 6.000 ms on ort-cpu" in absolute and "beside the final check" not in absolute


def test_a_second_search_aiming_higher_is_explained() -> None:
    first = {"pair_ratios": [0.47] * 3, "final_ms": 4.7, "final_budget_ms": 6.0, "why": "first"}
    second = {"pair_ratios": [0.58] * 3, "final_ms": 5.8, "final_budget_ms": 6.0, "why": "aim higher"}
    text = budget_summary(_report(attempts=[first, second], kept_attempt=2))
    assert "the first network used 78.3% of the budget, so the second aimed higher; kept the second" in text
    text = budget_summary(_report(attempts=[first, second], kept_attempt=1))
    assert "kept the first (the second did not pass fuller)" in text
