"""Command-line flags built from a config dataclass: one flag per field (``--snake-case``), the field's
attribute docstring as its help, the dataclass default shown in the help and defined nowhere else.

A field's ``metadata`` may rename its flag (``flag``), make it positional (``positional``) or required
(``required``), and name its value (``metavar``). ``dict`` fields take repeatable ``KEY=VALUE`` flags,
``tuple[int, ...]`` fields one or more integers, ``tuple[str, ...]`` fields one or more words, ``bool`` fields ``--name`` / ``--no-name``.
Every flag defaults to ``None`` (not given), so that values from elsewhere (a YAML file) can sit between
the dataclass defaults and the command line.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import typing
from typing import Any

import yaml


class Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line: ``hope train: error: ... (see --help)``."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default in its help, unless there is none to show (``None``, ``False``)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, argparse.SUPPRESS):
            return action.help or ""
        return super()._get_help_string(action)


def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass (the string literal after each field)."""
    docs, tree = {}, ast.parse(inspect.getsource(cls))
    body = tree.body[0].body
    for node, after in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
            docs[node.target.id] = " ".join(str(after.value.value).split())
    return docs


def key_value(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` -> ``(key, value)``, the value read as YAML (``2`` is an int, ``[1, 2]`` a list)."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip().replace("-", "_"), yaml.safe_load(value)


def _default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return ""
    if value is None or value == {} or value == ():
        return ""
    return " (default: %s)" % (" ".join(map(str, value)) if isinstance(value, tuple) else value)


def _value_type(kind: Any) -> Any:
    """The converter of a flag's value: the field's type, or ``X`` for a field of type ``X | None``."""
    parts = [part for part in typing.get_args(kind) if part is not type(None)]
    return parts[0] if len(parts) == 1 else kind


def add_config_flags(parser: argparse.ArgumentParser, cls: type, exclude: tuple[str, ...] = ()) -> None:
    """One flag per field of the dataclass ``cls`` (but those in ``exclude``)."""
    docs, hints = field_docs(cls), typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        kind, meta = hints[f.name], f.metadata
        help_text = (docs.get(f.name, "") + _default_text(f)).replace("%", "%%")
        if meta.get("positional"):
            parser.add_argument(f.name, help=help_text)
            continue
        flag = "--" + meta.get("flag", f.name).replace("_", "-")
        options: dict[str, Any] = {"dest": f.name, "help": help_text, "required": meta.get("required", False)}
        if kind == dict[str, Any]:
            options.update(action="append", type=key_value, metavar="KEY=VALUE", help=help_text + " Repeatable.")
        elif kind in (tuple[int, ...], tuple[int, ...] | None):
            options.update(type=int, nargs="+", metavar=meta.get("metavar", "N"))
        elif kind == tuple[str, ...]:
            options.update(nargs="+", metavar=meta.get("metavar", f.name.upper()))
        elif kind is bool:
            options.update(action=argparse.BooleanOptionalAction)
        else:
            options.update(type=_value_type(kind), metavar=meta.get("metavar", f.name.upper()))
        parser.add_argument(flag, **options)


def given_values(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The fields of ``cls`` given on the command line (repeated ``KEY=VALUE`` flags as one dict)."""
    hints, values = typing.get_type_hints(cls), {}
    for f in dataclasses.fields(cls):
        value = getattr(args, f.name, None)
        if value is not None:
            values[f.name] = dict(value) if hints[f.name] == dict[str, Any] else value
    return values
