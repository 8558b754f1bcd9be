"""Pass registry: every rewrite is a named pass with typed options, created from text.

A pass class is registered by name and declares its options as the annotated keyword
parameters of its ``__init__`` (defaults = option defaults; a parameter without a default is
required), documented in the ``Args:`` section of the ``__init__`` docstring. The first
line of the class docstring is the pass's one-line doc::

    @register_pass("prune-ratio")
    class PruneRatioPass(PassBase):
        \"\"\"Remove the same fraction of every prunable channel group.\"\"\"

        def __init__(self, ratio: Annotated[float, Range(0, 1, low_open=True, high_open=True)],
                     criterion: Annotated[str, Choices(available_criteria)] = "l1") -> None:
            \"\"\"
            Args:
                ratio: fraction of each group's channels to remove.
                criterion: importance criterion.
            \"\"\"

Option types understood from text: ``int``, ``float``, ``bool``, ``str``, ``Literal[...]``,
``Annotated[str, Choices(...)]``, :class:`~hwprune_fx.search.budget.Budget` (``12ms``,
``60%``, ``1.8x``), unions of those, and ``None`` for optional options. Other types (a
mapping, say) accept Python values only. Bad names and values are :class:`UserError`\\ s
that name the pass and the option and list what is valid.

The built-in passes live in ``hwprune_fx.passes``; they are imported on the first lookup
(not when this module is imported), from :data:`BUILTIN_PASS_MODULES`.
"""
from __future__ import annotations

import importlib
import inspect
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Literal, Mapping, TypeVar

from hwprune_fx.errors import UserError
from hwprune_fx.pass_infra.base import PassBase

__all__ = ["Choices", "Range", "OptionSpec", "PassInfo", "BUILTIN_PASS_MODULES", "register_pass",
           "available_passes", "pass_info", "all_pass_infos", "resolve_options", "create_pass",
           "format_value"]

#: Modules whose import registers the built-in passes, one pass per module. A new pass
#: file in ``passes/`` is added here (``align`` and ``merge-similar`` go here too).
BUILTIN_PASS_MODULES: tuple[str, ...] = (
    "hwprune_fx.passes.fold_bn",
    "hwprune_fx.passes.prune_ratio",
    "hwprune_fx.passes.prune_to_budget",
    "hwprune_fx.passes.cleanup",
    "hwprune_fx.passes.align",
    "hwprune_fx.passes.merge_similar_channels",
)

P = TypeVar("P", bound=type)

_REGISTRY: dict[str, "PassInfo"] = {}
_BUILTINS_LOADED = False
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


@dataclass(frozen=True)
class Choices:
    """Option metadata: the valid string values (a tuple, or a callable returning them)."""

    values: tuple[str, ...] | Callable[[], Iterable[str]]

    def get(self) -> list[str]:
        vals = self.values() if callable(self.values) else self.values
        return [str(v) for v in vals]


@dataclass(frozen=True)
class Range:
    """Option metadata: numeric bounds (``None`` = unbounded; ``*_open`` excludes the bound)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def check(self, value: float) -> str | None:
        """Why ``value`` is out of range, or None."""
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return f"must be {'>' if self.low_open else '>='} {self.low}"
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            return f"must be {'<' if self.high_open else '<='} {self.high}"
        return None

    def describe(self) -> str:
        lo = "" if self.low is None else f"{'(' if self.low_open else '['}{self.low}"
        hi = "" if self.high is None else f"{self.high}{')' if self.high_open else ']'}"
        return f"{lo or '(-inf'},{hi or 'inf)'}"


class _BadValue(Exception):
    """Internal: a value does not convert; the message says why."""


@dataclass(frozen=True)
class OptionSpec:
    """One option of a pass: its name, type, default and one-line doc."""

    name: str
    annotation: Any
    default: Any
    doc: str

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty

    @property
    def type_name(self) -> str:
        return _type_name(self.annotation)

    def convert(self, value: Any) -> Any:
        """``value`` (text or Python) converted and checked; raises ``_BadValue``."""
        return _convert(self.annotation, value)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type_name, "required": self.required,
                "default": None if self.required else _jsonable(self.default), "doc": self.doc}


@dataclass(frozen=True)
class PassInfo:
    """A registered pass: name, class, one-line doc and options (in ``__init__`` order)."""

    name: str
    cls: type
    doc: str
    options: tuple[OptionSpec, ...]

    def option(self, name: str) -> OptionSpec:
        for opt in self.options:
            if opt.name == name:
                return opt
        raise UserError(f"pass {self.name!r} has no option {name!r}; valid options: {self.option_names()}")

    def option_names(self) -> str:
        return ", ".join(o.name for o in self.options) or "(none)"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "doc": self.doc, "class": f"{self.cls.__module__}.{self.cls.__qualname__}",
                "options": [o.to_dict() for o in self.options]}


def register_pass(name: str) -> Callable[[P], P]:
    """Class decorator: register a :class:`PassBase` subclass under ``name`` (also sets ``cls.name``)."""
    if not re.fullmatch(r"[a-z][a-z0-9_-]*", name):
        raise ValueError(f"pass name {name!r}: use lower-case letters, digits, '-' and '_'")

    def deco(cls: P) -> P:
        if not (isinstance(cls, type) and issubclass(cls, PassBase)):
            raise TypeError(f"register_pass({name!r}) decorates a PassBase subclass, not {cls!r}")
        old = _REGISTRY.get(name)
        if old is not None and old.cls.__qualname__ != cls.__qualname__:
            raise ValueError(f"pass name {name!r} is already registered by {old.cls.__qualname__}")
        cls.name = name
        _REGISTRY[name] = PassInfo(name, cls, _summary(cls.__doc__), _options_of(cls))
        return cls

    return deco


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        for module in BUILTIN_PASS_MODULES:
            importlib.import_module(module)


def available_passes() -> list[str]:
    """Names of every registered pass, sorted."""
    _load_builtins()
    return sorted(_REGISTRY)


def all_pass_infos() -> list[PassInfo]:
    """:class:`PassInfo` of every registered pass, sorted by name."""
    return [_REGISTRY[n] for n in available_passes()]


def pass_info(name: str) -> PassInfo:
    """The registered pass ``name``; an unknown name is a :class:`UserError` listing the valid ones."""
    _load_builtins()
    info = _REGISTRY.get(name)
    if info is None:
        raise UserError(f"unknown pass {name!r}; valid passes: {', '.join(available_passes())}")
    return info


def resolve_options(name: str, args: tuple[Any, ...] = (), options: Mapping[str, Any] | None = None
                    ) -> dict[str, Any]:
    """Convert and check the options of pass ``name``; returns {option: value} as given.

    ``args`` may hold one positional value, for the pass's first option (``align(8)``).
    Missing required options, unknown options and bad values are :class:`UserError`\\ s.
    """
    info = pass_info(name)
    given: dict[str, Any] = {}
    if args:
        if len(args) > 1 or not info.options:
            first = f"its first option {info.options[0].name!r}" if info.options else "no options"
            raise UserError(f"pass {name!r}: only one positional value is allowed ({first}); "
                            f"name the others, e.g. {name}(key=value)")
        given[info.options[0].name] = args[0]
    for key, value in (options or {}).items():
        if key in given:
            raise UserError(f"pass {name!r}: option {key!r} is given twice")
        given[key] = value
    out: dict[str, Any] = {}
    for key, value in given.items():
        opt = info.option(key)
        try:
            out[key] = opt.convert(value)
        except _BadValue as exc:
            raise UserError(f"pass {name!r}: bad value {value!r} for option {key!r} "
                            f"({opt.type_name}): {exc}") from None
    missing = [o.name for o in info.options if o.required and o.name not in out]
    if missing:
        raise UserError(f"pass {name!r}: missing required option(s) {', '.join(missing)}; "
                        f"e.g. {name}({missing[0]}=...)")
    return out


def create_pass(name: str, /, *args: Any, **options: Any) -> PassBase:
    """A new instance of pass ``name`` with ``options`` (text or Python values), checked."""
    resolved = resolve_options(name, args, options)
    try:
        return pass_info(name).cls(**resolved)
    except UserError as exc:
        msg = str(exc)
        raise UserError(msg if msg.startswith(f"pass {name!r}") else f"pass {name!r}: {msg}") from None


def format_value(value: Any) -> str:
    """Text for an option value that :func:`resolve_options` reads back to the same value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, _budget_type()):
        return value.text.strip()
    if value is None:
        return "none"
    if isinstance(value, float):
        return repr(value)
    text = str(value)
    if re.fullmatch(r"[A-Za-z0-9_.%+\-/:~]+", text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# ---------------------------------------------------------------------------- internals

def _budget_type() -> type:
    from hwprune_fx.search.budget import Budget  # imported late: the search package is heavy

    return Budget


def _summary(doc: str | None) -> str:
    doc = inspect.cleandoc(doc or "")
    return doc.splitlines()[0].strip() if doc else ""


def _arg_docs(doc: str | None) -> dict[str, str]:
    """``name -> text`` from the ``Args:`` section of a Google-style docstring."""
    out: dict[str, str] = {}
    lines = inspect.cleandoc(doc or "").splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Args:")
    except StopIteration:
        return out
    current = None
    base_indent = None
    for line in lines[start + 1:]:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if indent == 0:
            break
        m = re.match(r"\s*(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$", line)
        if m and (base_indent is None or indent <= base_indent):
            base_indent = indent
            current = m[1]
            out[current] = m[2].strip()
        elif current is not None:
            out[current] += " " + line.strip()
    return out


def _options_of(cls: type) -> tuple[OptionSpec, ...]:
    init = cls.__init__
    if init is object.__init__:
        return ()
    sig = inspect.signature(init)
    try:
        hints = typing.get_type_hints(init, include_extras=True)
    except Exception as exc:  # noqa: BLE001 - a bad annotation is a programming error, say where
        raise TypeError(f"{cls.__qualname__}.__init__: cannot resolve option annotations ({exc})") from exc
    docs = _arg_docs(init.__doc__)
    opts = []
    for pname, param in list(sig.parameters.items())[1:]:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        first = docs.get(pname, "")
        first = re.split(r"(?<=\.)\s", first, maxsplit=1)[0]
        opts.append(OptionSpec(pname, hints.get(pname, Any), param.default, first))
    return tuple(opts)


def _split_annotated(hint: Any) -> tuple[Any, list[Any]]:
    if typing.get_origin(hint) is typing.Annotated:
        base, *meta = typing.get_args(hint)
        return base, meta
    return hint, []


def _union_members(hint: Any) -> list[Any] | None:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return list(typing.get_args(hint))
    return None


def _type_name(hint: Any) -> str:
    base, meta = _split_annotated(hint)
    for m in meta:
        if isinstance(m, Choices):
            return "{" + ",".join(m.get()) + "}"
    members = _union_members(base)
    if members is not None:
        names = [_type_name(m) for m in members if m is not type(None)]
        return "|".join(names) + ("|none" if type(None) in members else "")
    if typing.get_origin(base) is Literal:
        return "{" + ",".join(str(a) for a in typing.get_args(base)) + "}"
    suffix = ""
    for m in meta:
        if isinstance(m, Range):
            suffix = " in " + m.describe()
    if base is _budget_type():
        return "budget"
    if isinstance(base, type) and base in (int, float, bool, str):
        return base.__name__ + suffix
    origin = typing.get_origin(base)
    if origin is not None and isinstance(origin, type):
        return origin.__name__.lower()
    return getattr(base, "__name__", str(base)).lower()


def _convert(hint: Any, value: Any) -> Any:
    base, meta = _split_annotated(hint)
    members = _union_members(base)
    if members is not None:
        if type(None) in members and (value is None or (isinstance(value, str) and value.lower() == "none")):
            return None
        reasons = []
        for m in members:
            if m is type(None):
                continue
            try:
                return _convert(typing.Annotated[(m, *meta)] if meta else m, value)
            except _BadValue as exc:
                reasons.append(str(exc))
        raise _BadValue(" / ".join(dict.fromkeys(reasons)))
    out = _convert_base(base, value)
    for m in meta:
        if isinstance(m, Choices):
            valid = m.get()
            if out not in valid:
                raise _BadValue(f"choose one of: {', '.join(valid)}")
        elif isinstance(m, Range):
            why = m.check(out)
            if why:
                raise _BadValue(why)
    return out


def _convert_base(base: Any, value: Any) -> Any:
    text = value.strip() if isinstance(value, str) else None
    if base is Any:
        return value
    if base is bool:
        if isinstance(value, bool):
            return value
        if text is not None and text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        raise _BadValue("expected a boolean (true/false)")
    if base is int:
        if isinstance(value, bool):
            raise _BadValue("expected an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if text is not None and re.fullmatch(r"[-+]?\d+", text):
            return int(text)
        raise _BadValue("expected an integer")
    if base is float:
        if isinstance(value, bool):
            raise _BadValue("expected a number")
        if isinstance(value, (int, float)):
            return float(value)
        if text is not None:
            try:
                return float(text)
            except ValueError:
                pass
        raise _BadValue("expected a number")
    if base is str:
        if isinstance(value, str):
            return text
        raise _BadValue("expected a string")
    if base is _budget_type():
        from hwprune_fx.search.budget import parse_budget

        if isinstance(value, base):
            return value
        if text is None:
            raise _BadValue("expected a budget such as 12ms, 800us, 60% or 1.8x")
        try:
            return parse_budget(text)
        except UserError as exc:
            raise _BadValue(str(exc).replace("--budget ", "")) from None
    if typing.get_origin(base) is Literal:
        valid = [str(a) for a in typing.get_args(base)]
        if isinstance(value, str) and text in valid:
            return text
        if not isinstance(value, str) and value in typing.get_args(base):
            return value
        raise _BadValue(f"choose one of: {', '.join(valid)}")
    origin = typing.get_origin(base) or base
    if isinstance(value, str):
        raise _BadValue(f"takes a Python {_type_name(base)} value, not text")
    if isinstance(origin, type):
        import collections.abc as cabc

        abstract = {dict: cabc.Mapping, list: cabc.Sequence, tuple: cabc.Sequence}.get(origin, origin)
        if not isinstance(value, abstract):
            raise _BadValue(f"expected a {_type_name(base)}")
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, _budget_type()):
        return value.text
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
