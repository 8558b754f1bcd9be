"""What ``hwprune-fx analyze`` shows: channel groups, prunable or the reason not."""
from __future__ import annotations

from typing import Any

from hwprune_fx.analysis import DependencyAnalysis
from hwprune_fx.emit.table import format_table

__all__ = ["analysis_to_dict", "analysis_table"]


def analysis_to_dict(analysis: DependencyAnalysis, source: str | None = None) -> dict[str, Any]:
    groups = [{
        "id": g.id, "size": g.size, "prunable": g.prunable, "tensors": list(g.tensors),
        "producers": list(g.producers), "reasons": list(g.reasons),
    } for g in analysis.groups]
    prunable = analysis.prunable_groups()
    units = max(analysis.num_units, 1)
    return {
        "model": source,
        "summary": {
            "operators": len(analysis.graph), "groups": len(groups), "prunable_groups": len(prunable),
            "channels": analysis.num_units, "prunable_channels": sum(g.size for g in prunable),
            "prunable_percent": round(100.0 * sum(g.size for g in prunable) / units, 2),
        },
        "groups": groups,
    }


def analysis_table(data: dict[str, Any], show_all: bool = False) -> str:
    rows = []
    for g in data["groups"]:
        if not show_all and not g["prunable"] and g["size"] <= 1:
            continue
        rows.append([g["id"], g["size"], "yes" if g["prunable"] else "no",
                     g["tensors"][0], len(g["tensors"]), ", ".join(g["producers"][:2]) or "-",
                     "; ".join(g["reasons"][:1]) or "-"])
    s = data["summary"]
    head = format_table(["group", "size", "prunable", "first tensor", "tensors", "owners", "reason"], rows)
    tail = (f"{s['groups']} groups, {s['prunable_groups']} prunable; {s['prunable_channels']} of "
            f"{s['channels']} channels prunable ({s['prunable_percent']}%)")
    return head + "\n" + tail
