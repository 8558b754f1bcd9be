"""Pipeline text and files: good and bad inputs (each message checked), round trips, runs and records."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import hwprune_fx
from hwprune_fx.errors import UserError
from hwprune_fx.pass_infra import (PassBase, PassContext, PassInstrument, PassResult, PassSpec, Pipeline,
                                   TimingInstrument, register_pass)


@register_pass("test-add")
class AddPass(PassBase):
    """Add ``amount`` to ``model["n"]`` while it is below ``limit``."""

    def __init__(self, amount: int = 1, limit: int = 100) -> None:
        """
        Args:
            amount: what to add.
            limit: stop at this value.
        """
        self.amount, self.limit = amount, limit

    def call(self, model: dict) -> PassResult:
        if model["n"] >= self.limit:
            return PassResult(model, False)
        model["n"] += self.amount
        return PassResult(model, True, {"n": model["n"], "seed": PassContext.current().seed})


@pytest.mark.parametrize("text, expected", [
    ("fold-bn", "fold-bn"),
    ("fold-bn,cleanup", "fold-bn,cleanup"),
    ("  fold-bn ,\n prune-ratio( ratio = 0.3 , criterion=l2 ) ,cleanup ",
     "fold-bn,prune-ratio(ratio=0.3,criterion=l2),cleanup"),
    ("prune-ratio(0.5)", "prune-ratio(ratio=0.5)"),
    ("align(8)", "align(multiple=8)"),
    ("align(auto)", "align(multiple=auto)"),
    ("prune(criterion=l1,budget=60%),align(8)", "prune(criterion=l1,budget=60%),align(multiple=8)"),
    ("prune(budget=12ms,search=hilp,best_effort=yes)", "prune(budget=12ms,search=hilp,best_effort=true)"),
    ("prune-ratio(ratio='0.25')", "prune-ratio(ratio=0.25)"),
    ("cleanup()", "cleanup"),
])
def test_parse_good(text: str, expected: str) -> None:
    p = Pipeline.parse(text)
    assert str(p) == expected
    assert Pipeline.parse(str(p)) == p  # canonical text round-trips


def test_parse_values_are_typed() -> None:
    p = Pipeline.parse("prune(budget=1.8x,align=16),prune-ratio(0.3,verify=false)")
    prune, ratio = p.specs
    assert prune.options["budget"].kind == "speedup" and prune.options["align"] == 16
    assert ratio.options == {"ratio": 0.3, "verify": False}


@pytest.mark.parametrize("text, message", [
    ("fold-bn,prun", r"unknown pass 'prun'; valid passes: align, cleanup, fold-bn, .*prune, prune-ratio"),
    ("prune-ratio(ratio=0.3,crit=l1)",
     r"pass 'prune-ratio' has no option 'crit'; valid options: ratio, criterion, verify"),
    ("prune-ratio(ratio=1.5)", r"pass 'prune-ratio': bad value '1.5' for option 'ratio' .*must be < 1.0"),
    ("prune-ratio(ratio=abc)", r"bad value 'abc' for option 'ratio' .*expected a number"),
    ("prune-ratio(ratio=0.3,criterion=magic)", r"option 'criterion'.*choose one of: .*l1"),
    ("prune(budget=fast)", r"pass 'prune': bad value 'fast' for option 'budget' \(budget\).*60%"),
    ("prune(search=hilp)", r"pass 'prune': missing required option\(s\) budget"),
    ("align(8", r"unbalanced parentheses: '\(' at column 6 is never closed"),
    ("align(8)),cleanup", r"unbalanced parentheses: '\)' at column 9 closes nothing"),
    ("align((8))", r"nested '\(' at column 7"),
    ("fold-bn,,cleanup", r"empty pass at column 9"),
    ("fold-bn,", r"empty pass at column 9"),
    ("", r"empty pipeline"),
    ("prune-ratio(criterion=l1,0.3)", r"value '0.3' needs a name \(key=value\)"),
    ("prune-ratio(ratio=0.3,ratio=0.4)", r"option 'ratio' is given twice"),
    ("prune-ratio(0.3,ratio=0.4)", r"option 'ratio' is given twice"),
    ("prune-ratio(ratio=)", r"option 'ratio' has no value"),
    ("fold-bn(1)", r"pass 'fold-bn': only one positional value is allowed \(no options\)"),
    ("fold bn", r"cannot read pass 'fold bn'"),
    ("prune-ratio(ratio='0.3)", r"unterminated quote"),
])
def test_parse_bad(text: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        Pipeline.parse(text)


def test_quoted_values_keep_commas_and_parentheses() -> None:
    p = Pipeline.parse('test-add(amount="3"), test-add(limit=\'7\')')
    assert [s.options for s in p] == [{"amount": 3}, {"limit": 7}]


def test_file_forms(tmp_path: Path) -> None:
    expected = Pipeline.parse("fold-bn,prune-ratio(ratio=0.3,criterion=l1),align(8),cleanup")
    yaml_list = tmp_path / "p.yaml"
    yaml_list.write_text("- fold-bn\n- pass: prune-ratio\n  options: {ratio: 0.3, criterion: l1}\n"
                         "- align(8)\n- {pass: cleanup}\n")
    assert Pipeline.from_file(yaml_list) == expected
    yaml_key = tmp_path / "p.yml"
    yaml_key.write_text("pipeline: fold-bn,prune-ratio(ratio=0.3,criterion=l1),align(multiple=8),cleanup\n")
    assert Pipeline.from_file(yaml_key) == expected
    js = tmp_path / "p.json"
    js.write_text(json.dumps(expected.to_list()))
    assert Pipeline.from_file(js) == expected
    js2 = tmp_path / "p2.json"
    js2.write_text(json.dumps({"pipeline": [{"pass": "prune", "options": {"budget": "60%", "align": 8}}]}))
    assert str(Pipeline.from_file(js2)) == "prune(budget=60%,align=8)"


@pytest.mark.parametrize("content, suffix, message", [
    ("- pass: prune-ratio\n  options: {ratio: 2}\n", ".yaml", r"p.yaml: pass 'prune-ratio': bad value 2 .*< 1.0"),
    ("- pass: nope\n", ".yaml", r"p.yaml: unknown pass 'nope'"),
    ("- {pass: cleanup, opts: {}}\n", ".yaml", r"expected keys 'pass' and optionally 'options' \(unknown: opts\)"),
    ("- [1, 2]\n", ".yaml", r"expected a string or a \{pass: NAME"),
    ("a: 1\n", ".yaml", r"expected a list of passes"),
    ("[{", ".json", r"p.json: not valid JSON"),
    ("- a: [\n", ".yaml", r"p.yaml: not valid YAML"),
])
def test_file_errors(tmp_path: Path, content: str, suffix: str, message: str) -> None:
    path = tmp_path / f"p{suffix}"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        Pipeline.from_file(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot read the pipeline file"):
        Pipeline.from_file(tmp_path / "none.yaml")


def test_top_level_pipeline_is_exposed() -> None:
    assert hwprune_fx.Pipeline is Pipeline
    assert "Pipeline" in hwprune_fx.__all__


def test_specs_and_strings_mix() -> None:
    p = Pipeline([PassSpec.make("test-add", 2), "test-add(limit=3)", {"pass": "test-add"}])
    assert str(p) == "test-add(amount=2),test-add(limit=3),test-add"


class Events(PassInstrument):
    def __init__(self) -> None:
        self.events: list[str] = []

    def enter_run(self, model: dict) -> None:
        self.events.append(f"enter {model['n']}")

    def before_pass(self, p: PassBase, model: dict) -> None:
        self.events.append(f"before {p.name}")

    def after_pass(self, p: PassBase, result: PassResult) -> None:
        self.events.append(f"after {p.name} {result.modified}")

    def exit_run(self, model: dict) -> None:
        self.events.append(f"exit {model['n']}")


def test_run_records_passes_and_calls_instruments() -> None:
    events, timing = Events(), TimingInstrument()
    result = Pipeline.parse("test-add(amount=2),test-add(limit=0),test-add").run(
        {"n": 0}, instruments=[events, timing], seed=7)
    assert result.model == {"n": 3} and result.modified
    assert [(r.index, r.spec, r.modified) for r in result.records] == [
        (0, "test-add(amount=2)", True), (1, "test-add(limit=0)", False), (2, "test-add", True)]
    assert result.records[0].details == {"n": 2, "seed": 7}  # the context reaches the pass
    assert result.records[1].details == {}
    assert all(r.seconds >= 0 for r in result.records)
    assert events.events == ["enter 0", "before test-add", "after test-add True", "before test-add",
                             "after test-add False", "before test-add", "after test-add True", "exit 3"]
    assert [name for name, _, _ in timing.records] == ["test-add"] * 3
    assert result.context.seed == 7 and PassContext.current().seed == 0  # the context is left
    assert json.loads(json.dumps(result.to_dict()))["pipeline"] == "test-add(amount=2),test-add(limit=0),test-add"


def test_run_reports_unmodified() -> None:
    result = Pipeline.parse("test-add(limit=0)").run({"n": 5})
    assert not result.modified and result.model == {"n": 5}


def test_run_rejects_unknown_context_option() -> None:
    with pytest.raises(UserError, match="unknown pass-context option"):
        Pipeline.parse("test-add").run({"n": 0}, targt="ort-cpu")
