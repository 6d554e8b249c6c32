"""Command-line flags generated from config dataclasses, so that a field's docstring (the
string literal right after it in the class body) is the one text that explains it.

Each flag `--field-name` has the field's type (int, float, str; bool as --x / --no-x; a dict
as a JSON object), the choices in the field's metadata["choices"], and default None: only
the flags given override the config file (see metacontroller_agents.runs.load_config).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import json
import textwrap
import types
import typing
from collections.abc import Sequence
from typing import Any


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """{field name: its docstring} of dataclass `cls`, read from its source."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    docs = {}
    for node, after in zip(body[:-1], body[1:], strict=True):  # each node and the next
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """{field name: its resolved type}, X | None read as X (None means "not given")."""
    hints = typing.get_type_hints(cls)
    resolved = {}
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
        resolved[field.name] = typing.get_origin(hint) or hint  # dict[str, Any] -> dict
    return resolved


def json_object(text: str) -> dict[str, Any]:
    """A flag's JSON object value (argparse reports the error with the flag's name)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"must be a JSON object: {error}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object, got {text}")
    return value


def flag_help(cls: type, field: dataclasses.Field) -> str:
    """The field's docstring, then its default where it has a plain one."""
    text = field_docs(cls).get(field.name, "")
    if field.default is not dataclasses.MISSING and field.default is not None:
        text += f" (default: {field.default})"
    return text.replace("%", "%%")  # argparse formats help with %


def add_config_flags(parser: argparse.ArgumentParser, cls: type, names: Sequence[str]) -> None:
    """Add `--field-name` for each of dataclass `cls`'s fields in `names` (dest: the field's
    name, default None)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [name for name in names if name not in fields]
    if unknown:
        raise ValueError(f"{cls.__name__} has no fields {unknown}")
    for name in names:
        field, kind = fields[name], field_types(cls)[name]
        options: dict[str, Any] = {"dest": name, "default": None, "help": flag_help(cls, field)}
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif kind is dict:
            options.update(type=json_object, metavar="JSON")
        elif kind in (int, float, str):
            options["type"] = kind
        else:
            raise TypeError(f"{cls.__name__}.{name}: no flag for a field of type {kind}")
        if "choices" in field.metadata:
            options["choices"] = field.metadata["choices"]
        parser.add_argument("--" + name.replace("_", "-"), **options)


def given_flags(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    """The config fields set on the command line: the overrides of `load_config`."""
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}
