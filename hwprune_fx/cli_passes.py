"""``hwprune-fx passes``: every registered pass, its one-line doc and its options."""
from __future__ import annotations

import json

import click

__all__ = ["passes", "passes_table"]


def passes_table() -> str:
    """The human-readable listing: one block per pass, one line per option."""
    from hwprune_fx.pass_infra.registry import all_pass_infos, format_value

    lines: list[str] = []
    infos = all_pass_infos()
    width = max((len(i.name) for i in infos), default=4)
    for info in infos:
        lines.append(f"{info.name:<{width}}  {info.doc}")
        opt_w = max((len(o.name) for o in info.options), default=0)
        type_w = max((len(o.type_name) for o in info.options), default=0)
        for o in info.options:
            default = "(required)" if o.required else f"= {format_value(o.default)}"
            lines.append(f"{'':<{width}}    {o.name:<{opt_w}}  {o.type_name:<{type_w}}  {default:<12}  {o.doc}".rstrip())
    lines.append("")
    lines.append('Pipelines: --pipeline "fold-bn,prune-ratio(ratio=0.3),cleanup" '
                 "(a bare first value sets the first option: align(8)).")
    return "\n".join(lines)


@click.command("passes")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def passes(as_json: bool) -> None:
    """List every registered pass with its one-line doc and its options (name, type, default)."""
    from hwprune_fx.pass_infra.registry import all_pass_infos

    if as_json:
        click.echo(json.dumps([i.to_dict() for i in all_pass_infos()], indent=2))
    else:
        click.echo(passes_table())
