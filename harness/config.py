"""Typed ``key=value`` arguments for tasks and methods.

Each task and method declares its arguments as a frozen dataclass whose defaults are the
paper's settings. ``--task-arg`` / ``--method-arg`` strings are converted by the field's type
annotation and rejected with one clear line when the key or the value is wrong.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import io
import textwrap
import tokenize
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, Literal, TypeVar, get_args, get_origin

from harness.errors import ArgumentError

D = TypeVar("D")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclasses.dataclass(frozen=True)
class NoArgs:
    """For tasks and methods that take no arguments."""


def parse_pairs(pairs: Iterable[str], flag: str) -> dict[str, str]:
    """``["a=1", "b=x"]`` -> ``{"a": "1", "b": "x"}``; a malformed pair is an error."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ArgumentError(f"{flag} expects key=value, got '{pair}'")
        out[key.replace("-", "_")] = value.strip()
    return out


def cli_value(value: Any) -> str:
    """A typed argument as ``--task-arg``/``--method-arg`` text that ``convert`` reads back."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return ",".join(cli_value(v) for v in value)
    return str(value)


def convert(value: Any, annotation: Any, what: str) -> Any:
    """Convert a string (or pass through a typed value) according to a type annotation."""
    origin = get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = get_args(annotation)
        if type(None) in options and (value is None or str(value).lower() in {"none", "null", ""}):
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return convert(value, option, what)
            except ArgumentError as error:
                errors.append(str(error))
        raise ArgumentError(errors[0] if errors else f"{what}: cannot parse '{value}'")
    if origin is Literal:
        allowed = get_args(annotation)
        for choice in allowed:
            if str(choice) == str(value):
                return choice
        raise ArgumentError(f"{what} must be one of {', '.join(map(str, allowed))}; got '{value}'")
    if origin in (tuple, list):
        inner = get_args(annotation)[0] if get_args(annotation) else str
        items = value if isinstance(value, (list, tuple)) else [v for v in str(value).split(",") if v]
        return tuple(convert(item, inner, what) for item in items)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        text = str(value).lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ArgumentError(f"{what} must be true or false; got '{value}'")
    if annotation in (int, float):
        if isinstance(value, bool):
            raise ArgumentError(f"{what} must be a number; got '{value}'")
        try:
            number = float(value) if annotation is float else int(str(value), 10)
        except ValueError:
            kind = "an integer" if annotation is int else "a number"
            raise ArgumentError(f"{what} must be {kind}; got '{value}'") from None
        return number
    if annotation is str:
        return str(value)
    raise TypeError(f"unsupported argument type {annotation!r} for {what}")


def build(cls: type[D], values: Mapping[str, Any], owner: str) -> D:
    """Instantiate dataclass ``cls`` from raw values, validating keys and types."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, raw in values.items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            valid = ", ".join(fields) or "none"
            raise ArgumentError(f"{owner} has no argument '{key}'{hint} (valid: {valid})")
        kwargs[key] = convert(raw, hints[key], f"{owner} argument '{key}'")
    try:
        instance = cls(**kwargs)
    except ValueError as error:
        raise ArgumentError(f"{owner}: {error}") from None
    return instance


ADDED_LATER = "harness_added_later"


def added_later(default: Any) -> Any:
    """A field for an argument added after runs were made without it: while it holds its default
    it is left out of ``to_dict`` (and so of run specs), so those runs keep their ids and are
    read as having used the default. Give it a default that reproduces what they did."""
    return dataclasses.field(default=default, metadata={ADDED_LATER: True})


def to_dict(instance: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (tuples become lists); arguments ``added_later``
    are left out while at their default."""
    later = {f.name: f.default for f in dataclasses.fields(instance) if f.metadata.get(ADDED_LATER)}
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(instance).items()
            if not (k in later and v == later[k])}


@dataclasses.dataclass(frozen=True)
class ArgumentInfo:
    """One argument of a task or method, as ``harness ls task/method NAME`` prints it."""

    name: str
    type: str
    default: Any
    meaning: str  # the comment beside the field in its dataclass ("" when it has none)


def arguments(cls: type) -> list[ArgumentInfo]:
    """Each field of an arguments dataclass: name, type, default, and the comment that explains it."""
    hints = typing.get_type_hints(cls)
    meanings: dict[str, str] = {}
    for klass in reversed(cls.__mro__):  # a field is explained where it is declared, perhaps in a base class
        if dataclasses.is_dataclass(klass):
            meanings.update({k: v for k, v in _field_comments(klass).items() if v})
    return [ArgumentInfo(f.name, _type_name(hints[f.name]), f.default, meanings.get(f.name, "")) for f in dataclasses.fields(cls)]


def _type_name(annotation: Any) -> str:
    if get_origin(annotation) is Literal:
        return " | ".join(repr(choice) for choice in get_args(annotation))
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _field_comments(cls: type) -> dict[str, str]:
    """Field name -> the ``# comment`` ending its line (or the comment lines just above it).

    The arguments are documented where they are declared, as comments; reading them from the
    source keeps one place to write them."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    comments: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    lines = source.splitlines()
    out = {}
    for node in ast.parse(source).body[0].body:  # type: ignore[attr-defined]
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            text = comments.get(node.end_lineno or node.lineno, "")
            above = node.lineno - 1
            while not text and above >= 1 and lines[above - 1].strip().startswith("#"):
                text = comments[above]
                above -= 1
            out[node.target.id] = text
    return out


def describe(cls: type) -> str:
    """``name: type = default`` for each field, for listings and errors."""
    return ", ".join(f"{a.name}: {a.type} = {a.default!r}" for a in arguments(cls))
