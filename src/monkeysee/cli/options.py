"""Command-line options derived from a config dataclass, so each default is written once, in the field.

`add_options` gives every chosen field of a dataclass an option: its flag, type, default and help come
from the field. A field's `metadata` may carry these keys (plain strings, so a config module needs no
import from the CLI):

- ``help``: the option's help text; the field's default is appended to it. Fields without one get no
  option unless named, with their help passed in.
- ``flag``: the option string (default ``--field-name``).
- ``metavar``: argparse's metavar.
- ``choices``: the allowed values, or a function returning them (for registries filled late).

Types come from the annotation: ``int``, ``float``, ``str``, ``Path`` (each optionally ``| None``),
``bool`` (``--x`` / ``--no-x``), ``Literal[...]`` (choices) and ``tuple[T, ...]`` (one or more values).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

HELP = "help"
FLAG = "flag"
METAVAR = "metavar"
CHOICES = "choices"

_SCALARS: tuple[type, ...] = (int, float, str, Path)


def add_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup, config: type, *,
                names: Iterable[str] | None = None, help: Mapping[str, str] | None = None,
                defaults: bool = True) -> list[str]:
    """Add an option per field of the dataclass `config` to `parser`; the field names added.

    `names` picks the fields (default: every field whose metadata has a help text); `help` gives or
    replaces help texts by field name. With `defaults=False` every option defaults to None, so a value
    from elsewhere (a config file, a recorded run) stands unless the flag is given; the help still shows
    the dataclass default.
    """
    chosen = _fields(config, names, help or {})
    hints = typing.get_type_hints(config)
    for f in chosen:
        text = (help or {}).get(f.name, f.metadata.get(HELP, ""))
        kwargs = _kind(f.name, hints[f.name], f.metadata)
        default = _default(f)
        shown = _shown(default)
        if shown is not None and "default" not in text:
            text = f"{text} (default: {shown})" if text else f"default: {shown}"
        kwargs["help"] = text.replace("%", "%%")
        kwargs["default"] = default if defaults else None
        if METAVAR in f.metadata:
            kwargs["metavar"] = f.metadata[METAVAR]
        parser.add_argument(option_flag(f), dest=f.name, **kwargs)
    return [f.name for f in chosen]


def option_values(args: argparse.Namespace, config: type, *, given: bool = False) -> dict[str, Any]:
    """The values `args` holds for fields of `config`, converted to the fields' types (a list for a
    tuple field becomes a tuple). With `given=True`, options left at None are dropped."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        if not hasattr(args, f.name):
            continue
        value = getattr(args, f.name)
        if isinstance(value, list):
            value = tuple(value)
        if value is None and given:
            continue
        values[f.name] = value
    return values


def option_flag(f: dataclasses.Field[Any]) -> str:
    """The option string of a field: its metadata's `flag`, else `--field-name`."""
    return str(f.metadata.get(FLAG, "--" + f.name.replace("_", "-")))


def _fields(config: type, names: Iterable[str] | None,
            help: Mapping[str, str]) -> list[dataclasses.Field[Any]]:
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"{config!r} is not a dataclass")
    by_name = {f.name: f for f in dataclasses.fields(config)}
    if names is None:
        return [f for f in by_name.values() if HELP in f.metadata or f.name in help]
    wanted = list(names)
    unknown = [n for n in wanted if n not in by_name]
    if unknown:
        raise TypeError(f"{config.__name__} has no field(s) {', '.join(unknown)}")
    return [by_name[n] for n in wanted]


def _kind(name: str, hint: object, metadata: Mapping[str, Any]) -> dict[str, Any]:
    """argparse keywords (type, nargs, action, choices) for a field's annotation."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        real = [a for a in args if a is not type(None)]
        if len(real) != 1:
            raise TypeError(f"no command-line type for field {name}: {hint}")
        return _kind(name, real[0], metadata)
    kwargs: dict[str, Any]
    if hint is bool:
        kwargs = {"action": argparse.BooleanOptionalAction}
    elif origin is Literal:
        kwargs = {"type": type(args[0]), "choices": list(args)}
    elif origin is tuple and len(args) == 2 and args[1] is Ellipsis and args[0] in _SCALARS:
        kwargs = {"type": args[0], "nargs": "+"}
    elif hint in _SCALARS:
        kwargs = {"type": hint}
    else:
        raise TypeError(f"no command-line type for field {name}: {hint}")
    if CHOICES in metadata:
        choices = metadata[CHOICES]
        kwargs["choices"] = list(choices() if callable(choices) else choices)
    return kwargs


def _default(f: dataclasses.Field[Any]) -> object:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        factory: Callable[[], Any] = f.default_factory
        return factory()
    return None


def _shown(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, tuple | list):
        return " ".join(str(v) for v in value)
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)
