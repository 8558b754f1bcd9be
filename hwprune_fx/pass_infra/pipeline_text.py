"""Pass pipelines as text, files and objects: ``fold-bn,prune(budget=60%),align(8),cleanup``.

Grammar (whitespace is ignored around every token)::

    pipeline := item ("," item)*
    item     := NAME ["(" [arg ("," arg)*] ")"]
    arg      := [KEY "="] VALUE         # a bare VALUE only first: the pass's first option
    VALUE    := text without , ( ) = | "quoted text"

Commas nest only inside parentheses. The file form (YAML or JSON) is a list whose items are
item strings or ``{pass: NAME, options: {KEY: VALUE}}`` mappings (or such a list under a
``pipeline:`` key, or one pipeline string). Every name, option and value is checked against
the pass registry when the pipeline is built, so a typo fails before any work is done.

``str(pipeline)`` writes the canonical text (every option by name), which parses back to an
equal pipeline.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from hwprune_fx.errors import UserError
from hwprune_fx.pass_infra.base import PassBase, PassResult
from hwprune_fx.pass_infra.context import PassContext
from hwprune_fx.pass_infra.instruments import PassInstrument
from hwprune_fx.pass_infra.manager import PassManager
from hwprune_fx.pass_infra.registry import create_pass, format_value, resolve_options

__all__ = ["PassSpec", "PassRecord", "PipelineResult", "Pipeline", "parse_pipeline_text"]


@dataclass(frozen=True)
class PassSpec:
    """One pipeline item: a registered pass name and its checked option values (as given)."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def make(cls, name: str, /, *args: Any, **options: Any) -> "PassSpec":
        """A checked spec; ``args`` may hold one value for the pass's first option."""
        return cls(name, resolve_options(name, args, options))

    def create(self) -> PassBase:
        """A fresh pass instance (passes may keep state, so every run gets its own)."""
        return create_pass(self.name, **self.options)

    def __str__(self) -> str:
        if not self.options:
            return self.name
        return f"{self.name}(" + ",".join(f"{k}={format_value(v)}" for k, v in self.options.items()) + ")"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PassSpec) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))


@dataclass
class PassRecord:
    """What one pass did in a run: position, spec text, ``modified``, seconds and its details."""

    index: int
    name: str
    spec: str
    modified: bool
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "spec": self.spec, "modified": self.modified,
                "seconds": self.seconds, "details": self.details}


@dataclass
class PipelineResult:
    """The final model of a run, whether any pass changed it, and one record per pass."""

    model: Any
    modified: bool
    records: list[PassRecord]
    pipeline: "Pipeline"
    context: PassContext

    def record(self, name: str) -> PassRecord:
        """The first record of pass ``name``."""
        for r in self.records:
            if r.name == name:
                return r
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {"pipeline": str(self.pipeline), "modified": self.modified,
                "passes": [r.to_dict() for r in self.records]}


class _Recorder(PassInstrument):
    """Innermost instrument: times each pass alone and keeps its result."""

    def __init__(self, specs: Sequence[PassSpec]) -> None:
        self.specs = list(specs)
        self.records: list[PassRecord] = []
        self._start = 0.0

    def before_pass(self, p: PassBase, model: Any) -> None:
        self._start = time.perf_counter()

    def after_pass(self, p: PassBase, result: PassResult) -> None:
        seconds = time.perf_counter() - self._start
        i = len(self.records)
        spec = str(self.specs[i % len(self.specs)]) if self.specs else p.name
        self.records.append(PassRecord(i, p.name, spec, result.modified, seconds, dict(result.details)))


class Pipeline:
    """An ordered list of :class:`PassSpec`; build with :meth:`parse`, :meth:`from_file` or a list."""

    def __init__(self, specs: Sequence[PassSpec | str | Mapping[str, Any]] = ()) -> None:
        self.specs: tuple[PassSpec, ...] = tuple(s for item in specs for s in _specs_of(item))

    @classmethod
    def parse(cls, text: str) -> "Pipeline":
        """Parse pipeline text; see the module docstring for the grammar and the errors."""
        return cls(parse_pipeline_text(text))

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "Pipeline":
        """Load a YAML (``.yaml``/``.yml``) or JSON pipeline file."""
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as exc:
            raise UserError(f"{p}: cannot read the pipeline file ({exc.strerror})") from None
        import yaml

        try:
            data = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UserError(f"{p}: not valid {'JSON' if p.suffix.lower() == '.json' else 'YAML'}: {first}") from None
        if isinstance(data, Mapping) and "pipeline" in data:
            data = data["pipeline"]
        if isinstance(data, str):
            return cls.parse(data)
        if not isinstance(data, list):
            raise UserError(f"{p}: expected a list of passes (strings or {{pass: NAME, options: {{...}}}}), "
                            f"got {type(data).__name__}")
        try:
            return cls(data)
        except UserError as exc:
            raise UserError(f"{p}: {exc}") from None

    def __str__(self) -> str:
        return ",".join(str(s) for s in self.specs)

    def __repr__(self) -> str:
        return f"Pipeline.parse({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pipeline) and self.specs == other.specs

    def __hash__(self) -> int:
        return hash(self.specs)

    def __len__(self) -> int:
        return len(self.specs)

    def __iter__(self) -> Iterator[PassSpec]:
        return iter(self.specs)

    def to_list(self) -> list[dict[str, Any]]:
        """The file form: ``[{"pass": name, "options": {...}}]`` (JSON/YAML-ready values)."""
        def plain(v: Any) -> Any:
            return v if v is None or isinstance(v, (bool, int, float, str)) else format_value(v)

        return [{"pass": s.name, "options": {k: plain(v) for k, v in s.options.items()}} for s in self.specs]

    def create_passes(self) -> list[PassBase]:
        """Fresh pass instances, in order."""
        return [s.create() for s in self.specs]

    def run(self, model: Any, *, context: PassContext | None = None, instruments: Sequence[PassInstrument] = (),
            **context_options: Any) -> PipelineResult:
        """Run every pass once, in order, under a :class:`PassContext`.

        Args:
            model: an ``onnx.ModelProto`` or a path to one (an fx ``GraphModule`` for passes
                that take one, e.g. ``fold-bn``).
            context: the context to use (default: the current one).
            instruments: extra instruments (timing, verify, latency, IR dump); each also gets
                ``enter_run`` / ``exit_run``.
            **context_options: :class:`PassContext` fields to override: ``target``,
                ``calib``, ``threads``, ``repeat``, ``cache_dir``, ``input_shapes``,
                ``progress``, ``seed``, ``backend_options``.
        """
        ctx = (context or PassContext.current()).replace(**context_options)
        model = _load_model(model)
        passes = self.create_passes()
        recorder = _Recorder(self.specs)
        user = list(instruments)
        with ctx:
            for ins in user:
                ins.enter_run(model)
            result = PassManager(passes, instruments=[*user, recorder])(model)
            for ins in user:
                ins.exit_run(result.model)
        return PipelineResult(result.model, result.modified, recorder.records, self, ctx)


def _load_model(model: Any) -> Any:
    if isinstance(model, (str, os.PathLike)):
        from hwprune_fx.frontends.onnx_io import load_onnx

        return load_onnx(str(model))
    return model


def _specs_of(item: PassSpec | str | Mapping[str, Any]) -> list[PassSpec]:
    if isinstance(item, PassSpec):
        return [PassSpec.make(item.name, **item.options)]
    if isinstance(item, str):
        return parse_pipeline_text(item)
    if isinstance(item, Mapping):
        unknown = sorted(set(item) - {"pass", "options"})
        if "pass" not in item or unknown:
            raise UserError(f"pipeline item {dict(item)!r}: expected keys 'pass' and optionally 'options'"
                            + (f" (unknown: {', '.join(map(str, unknown))})" if unknown else ""))
        options = item.get("options") or {}
        if not isinstance(options, Mapping):
            raise UserError(f"pass {item['pass']!r}: 'options' must be a mapping, got {type(options).__name__}")
        return [PassSpec.make(str(item["pass"]), **{str(k): v for k, v in options.items()})]
    raise UserError(f"pipeline item {item!r}: expected a string or a {{pass: NAME, options: {{...}}}} mapping")


# ---------------------------------------------------------------------------- the parser

def _split_top(text: str, where: str) -> list[tuple[int, str]]:
    """Split ``text`` on top-level commas: [(column, piece)]; checks parentheses and quotes."""
    pieces: list[tuple[int, str]] = []
    depth = 0
    quote = None
    start = 0
    opened_at = -1
    escaped = False
    for i, ch in enumerate(text):
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
            continue
        if ch in "\"'":
            quote = ch
        elif ch == "(":
            if depth:
                raise UserError(f"{where}: nested '(' at column {i + 1}: {_point(text, i)}")
            depth, opened_at = 1, i
        elif ch == ")":
            if not depth:
                raise UserError(f"{where}: unbalanced parentheses: ')' at column {i + 1} closes nothing: "
                                f"{_point(text, i)}")
            depth = 0
        elif ch == "," and not depth:
            pieces.append((start, text[start:i]))
            start = i + 1
    if quote:
        raise UserError(f"{where}: unterminated quote {quote}")
    if depth:
        raise UserError(f"{where}: unbalanced parentheses: '(' at column {opened_at + 1} is never closed: "
                        f"{_point(text, opened_at)}")
    pieces.append((start, text[start:]))
    return pieces


def _point(text: str, i: int) -> str:
    return f"{text[:i]} >>>{text[i:]}"


def _unquote(value: str) -> str:
    v = value.strip()
    if len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'":
        return v[1:-1].replace("\\" + v[0], v[0]).replace("\\\\", "\\")
    return v


def parse_pipeline_text(text: str) -> list[PassSpec]:
    """Parse ``text`` into checked :class:`PassSpec`\\ s (see the module docstring)."""
    import re

    if not isinstance(text, str) or not text.strip():
        raise UserError("empty pipeline: give passes such as 'fold-bn,prune-ratio(ratio=0.3),cleanup'")
    specs: list[PassSpec] = []
    for col, item in _split_top(text, "pipeline"):
        item_s = item.strip()
        if not item_s:
            raise UserError(f"pipeline: empty pass at column {col + 1} (two commas in a row, "
                            f"or a comma at an end): {_point(text, col)}")
        m = re.fullmatch(r"([A-Za-z_][\w\-]*)\s*(?:\((.*)\))?", item_s, flags=re.S)
        if not m:
            raise UserError(f"pipeline: cannot read pass {item_s!r}: expected NAME or NAME(key=value,...)")
        name, body = m[1], m[2]
        args: list[Any] = []
        options: dict[str, Any] = {}
        if body is not None and body.strip():
            for j, (_, arg) in enumerate(_split_top(body, f"pass {name!r}")):
                arg_s = arg.strip()
                if not arg_s:
                    raise UserError(f"pass {name!r}: empty option in ({body})")
                key, eq, value = _split_eq(arg_s)
                if not eq:
                    if j or options:
                        raise UserError(f"pass {name!r}: value {arg_s!r} needs a name (key=value); only the "
                                        f"first value may be positional")
                    args.append(_unquote(arg_s))
                    continue
                if not re.fullmatch(r"[A-Za-z_]\w*", key):
                    raise UserError(f"pass {name!r}: bad option name {key!r} in {arg_s!r}")
                if key in options:
                    raise UserError(f"pass {name!r}: option {key!r} is given twice")
                if not value.strip():
                    raise UserError(f"pass {name!r}: option {key!r} has no value")
                options[key] = _unquote(value)
        specs.append(PassSpec.make(name, *args, **options))
    return specs


def _split_eq(arg: str) -> tuple[str, bool, str]:
    """``key=value`` -> (key, True, value), outside quotes; a bare value -> ("", False, arg)."""
    if arg[:1] in "\"'":
        return "", False, arg
    i = arg.find("=")
    if i < 0:
        return "", False, arg
    return arg[:i].strip(), True, arg[i + 1:]
