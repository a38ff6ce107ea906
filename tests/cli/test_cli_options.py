"""Options derived from a config dataclass: flag, type, default and help come from the field."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from monkeysee.cli.options import add_options, option_values


@dataclass(frozen=True)
class Settings:
    port: int = field(default=8000, metadata={"help": "port to listen on"})
    ratio: float = field(default=0.5, metadata={"help": "share kept, 50% by default"})
    out: Path | None = field(default=None, metadata={"help": "file to write", "metavar": "FILE"})
    mode: Literal["fast", "slow"] = field(default="fast", metadata={"help": "how to go"})
    methods: tuple[str, ...] = field(default=("a", "b"), metadata={"help": "methods compared"})
    verbose: bool = field(default=False, metadata={"help": "say more", "flag": "--talk"})
    colour: str = field(default="red", metadata={"help": "a colour", "choices": lambda: ["red", "blue"]})
    hidden: int = 3


def parser(**kwargs) -> tuple[argparse.ArgumentParser, list[str]]:
    p = argparse.ArgumentParser(prog="t")
    return p, add_options(p, Settings, **kwargs)


def test_every_field_with_help_becomes_an_option_with_the_dataclass_defaults() -> None:
    p, added = parser()
    assert added == ["port", "ratio", "out", "mode", "methods", "verbose", "colour"]
    assert option_values(p.parse_args([]), Settings) == {
        "port": 8000, "ratio": 0.5, "out": None, "mode": "fast", "methods": ("a", "b"),
        "verbose": False, "colour": "red"}
    assert Settings(**option_values(p.parse_args([]), Settings)) == Settings()


def test_values_are_parsed_to_the_field_types() -> None:
    p, _ = parser()
    args = p.parse_args(["--port", "9", "--ratio", "0.25", "--out", "x.csv", "--mode", "slow",
                         "--methods", "c", "d", "--talk", "--colour", "blue"])
    assert option_values(args, Settings) == {
        "port": 9, "ratio": 0.25, "out": Path("x.csv"), "mode": "slow", "methods": ("c", "d"),
        "verbose": True, "colour": "blue"}


def test_help_shows_each_default_once_and_escapes_percent() -> None:
    p, _ = parser()
    text = " ".join(p.format_help().split())
    assert "--port PORT port to listen on (default: 8000)" in text
    assert "--ratio RATIO share kept, 50% by default" in text  # already names its default
    assert "--out FILE file to write" in text and "(default: None)" not in text
    assert "methods compared (default: a b)" in text
    assert "--talk, --no-talk say more (default: off)" in text


@pytest.mark.parametrize(("argv", "mention"), [
    (["--mode", "medium"], "invalid choice: 'medium'"),
    (["--colour", "green"], "invalid choice: 'green'"),
    (["--port", "x"], "invalid int value: 'x'"),
])
def test_values_outside_the_field_type_are_refused(argv, mention, capsys) -> None:
    p, _ = parser()
    with pytest.raises(SystemExit):
        p.parse_args(argv)
    assert mention in capsys.readouterr().err


def test_without_defaults_an_option_not_given_is_none_so_another_source_stands() -> None:
    p, _ = parser(defaults=False)
    args = p.parse_args(["--port", "9"])
    assert option_values(args, Settings, given=True) == {"port": 9}
    assert "(default: 8000)" in p.format_help()


def test_named_fields_and_help_given_beside_the_dataclass() -> None:
    p, added = parser(names=["hidden", "port"], help={"hidden": "a hidden count"})
    assert added == ["hidden", "port"]
    assert "a hidden count (default: 3)" in " ".join(p.format_help().split())
    assert option_values(p.parse_args(["--hidden", "4"]), Settings) == {"hidden": 4, "port": 8000}


def test_unknown_field_names_and_non_dataclasses_are_refused() -> None:
    with pytest.raises(TypeError, match="no field"):
        parser(names=["nope"])
    with pytest.raises(TypeError, match="not a dataclass"):
        add_options(argparse.ArgumentParser(), int)
