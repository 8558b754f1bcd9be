"""Pass registry: typed options from annotated ``__init__``s, conversion from text, clear errors; CLI listing."""
from __future__ import annotations

import json
from typing import Annotated, Literal

import pytest
from click.testing import CliRunner

from hwprune_fx.cli import cli
from hwprune_fx.errors import UserError
from hwprune_fx.pass_infra import PassBase, PassContext, PassResult
from hwprune_fx.pass_infra.registry import (Choices, Range, available_passes, create_pass, format_value, pass_info,
                                            register_pass, resolve_options)
from hwprune_fx.search.budget import Budget

BUILTIN = {"fold-bn", "prune-ratio", "prune", "cleanup", "align"}


@register_pass("test-typed")
class TypedPass(PassBase):
    """A pass that only exists to exercise every option type."""

    def __init__(self, count: Annotated[int, Range(1, 16)], scale: float = 0.5, flag: bool = False,
                 mode: Literal["fast", "exact"] = "exact", pick: Annotated[str, Choices(("a", "b"))] = "a",
                 budget: Budget | None = None, name: str = "x") -> None:
        """
        Args:
            count: how many, 1 to 16.
            scale: a factor. A second sentence is not part of the one-line doc.
            flag: on or off.
            mode: how.
            pick: a choice.
            budget: an optional budget.
            name: free text.
        """
        self.count, self.scale, self.flag, self.mode, self.pick, self.budget, self.label = (
            count, scale, flag, mode, pick, budget, name)

    def call(self, model: object) -> PassResult:
        return PassResult(model, False)


def test_builtin_passes_are_registered() -> None:
    assert BUILTIN <= set(available_passes())
    for name in BUILTIN:
        info = pass_info(name)
        assert info.cls.name == name and info.doc, name
        assert issubclass(info.cls, PassBase)


def test_option_specs_from_annotations_and_docstring() -> None:
    info = pass_info("test-typed")
    assert info.doc == "A pass that only exists to exercise every option type."
    opts = {o.name: o for o in info.options}
    assert list(opts) == ["count", "scale", "flag", "mode", "pick", "budget", "name"]
    assert opts["count"].required and opts["count"].type_name == "int in [1,16]"
    assert opts["scale"].default == 0.5 and opts["scale"].doc == "a factor."
    assert opts["mode"].type_name == "{fast,exact}" and opts["pick"].type_name == "{a,b}"
    assert opts["budget"].type_name == "budget|none"


def test_values_convert_from_text() -> None:
    p = create_pass("test-typed", count="4", scale="0.25", flag="yes", mode="fast", pick="b", budget="60%",
                    name="hello")
    assert (p.count, p.scale, p.flag, p.mode, p.pick, p.label) == (4, 0.25, True, "fast", "b", "hello")
    assert p.budget.kind == "percent" and p.budget.value == 60
    assert create_pass("test-typed", "3").count == 3  # a positional value sets the first option
    assert create_pass("test-typed", count=3, budget="none").budget is None


def test_python_values_are_accepted_and_checked() -> None:
    assert create_pass("test-typed", count=2, scale=1, flag=False).scale == 1.0
    with pytest.raises(UserError, match=r"'test-typed': bad value True for option 'count'.*expected an integer"):
        create_pass("test-typed", count=True)


@pytest.mark.parametrize("options, message", [
    ({"count": "x"}, r"pass 'test-typed': bad value 'x' for option 'count' \(int in \[1,16\]\): expected an integer"),
    ({"count": "17"}, r"option 'count'.*must be <= 16"),
    ({"count": "2", "scale": "fast"}, r"option 'scale' \(float\): expected a number"),
    ({"count": "2", "flag": "maybe"}, r"option 'flag' \(bool\): expected a boolean"),
    ({"count": "2", "mode": "slow"}, r"option 'mode'.*choose one of: fast, exact"),
    ({"count": "2", "pick": "c"}, r"option 'pick'.*choose one of: a, b"),
    ({"count": "2", "budget": "soon"}, r"option 'budget'.*expected e.g. 12ms, 800us, 60% or 1.8x"),
    ({"count": "2", "colour": "red"}, r"pass 'test-typed' has no option 'colour'; valid options: count, scale, "
                                      r"flag, mode, pick, budget, name"),
    ({}, r"pass 'test-typed': missing required option\(s\) count"),
])
def test_bad_options_are_user_errors(options: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        create_pass("test-typed", **options)


def test_unknown_pass_lists_valid_ones() -> None:
    with pytest.raises(UserError, match=r"unknown pass 'fold'; valid passes: .*cleanup.*fold-bn.*prune-ratio"):
        create_pass("fold")


def test_two_positionals_are_refused() -> None:
    with pytest.raises(UserError, match=r"only one positional value.*'count'"):
        resolve_options("test-typed", ("1", "2"))


def test_constructor_user_errors_name_the_pass() -> None:
    with pytest.raises(UserError, match=r"^pass 'prune-ratio': .*ratio"):
        create_pass("prune-ratio", ratio="0")


def test_registering_a_name_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        @register_pass("fold-bn")
        class Other(PassBase):  # noqa: F841 - the decorator must refuse it
            def call(self, model: object) -> PassResult:
                return PassResult(model, False)


def test_format_value_round_trips() -> None:
    opts = resolve_options("test-typed", (), {"count": "3", "scale": "0.1", "flag": "true", "budget": "1.8x",
                                              "name": "two words"})
    text = {k: format_value(v) for k, v in opts.items()}
    assert text == {"count": "3", "scale": "0.1", "flag": "true", "budget": "1.8x", "name": '"two words"'}


def test_pass_context_nests_and_rejects_unknown_fields() -> None:
    assert PassContext.current().target == "ort-cpu"
    with PassContext(target="torch", threads=2) as outer:
        with outer.replace(threads=4):
            assert PassContext.current().threads == 4
        assert PassContext.current() is outer
    assert PassContext.current().threads == 1
    with pytest.raises(UserError, match=r"unknown pass-context option\(s\) trgt; valid: target"):
        PassContext().replace(trgt="x")


def test_cli_passes_lists_every_pass() -> None:
    out = CliRunner().invoke(cli, ["passes"])
    assert out.exit_code == 0, out.output
    for name in available_passes():
        assert any(line.startswith(name + " ") for line in out.output.splitlines()), name
    assert "ratio" in out.output and "(required)" in out.output and "{opti-cut,hilp,flops,uniform}" in out.output


def test_cli_passes_json() -> None:
    out = CliRunner().invoke(cli, ["passes", "--json"])
    assert out.exit_code == 0, out.output
    data = {p["name"]: p for p in json.loads(out.output)}
    assert set(data) == set(available_passes())
    ratio = {o["name"]: o for o in data["prune-ratio"]["options"]}
    assert ratio["ratio"]["required"] and ratio["criterion"]["default"] == "l1"
    assert {o["name"] for o in data["prune"]["options"]} >= {"budget", "search", "criterion", "align"}
