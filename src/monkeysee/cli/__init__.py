"""The `monkeysee` command. Each subcommand lives in its own module here and registers itself with
`@command`; the modules are discovered, so adding a subcommand touches no central list."""

from __future__ import annotations

import argparse
import errno
import importlib
import pkgutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from monkeysee import __version__
from monkeysee.errors import MonkeyseeError
from monkeysee.registry import Registry

Arguments = Callable[[argparse.ArgumentParser], None]
Runner = Callable[[argparse.Namespace], "int | None"]


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    arguments: Arguments
    run: Runner
    order: int


COMMANDS: Registry[Command] = Registry("command")


def command(name: str, help: str, arguments: Arguments, order: int = 50) -> Callable[[Runner], Runner]:
    """Register `run` as `monkeysee NAME`; `arguments` adds its options to the subparser."""

    def register(run: Runner) -> Runner:
        COMMANDS.add(name, Command(name, help, arguments, run, order))
        return run

    return register


def _discover() -> None:
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


def build_parser() -> argparse.ArgumentParser:
    _discover()
    parser = argparse.ArgumentParser(
        prog="monkeysee",
        description="Train a monkey-species classifier by transfer learning and see what the CNN sees.",
    )
    parser.add_argument("--version", action="version", version=f"monkeysee {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for cmd in sorted(COMMANDS.values(), key=lambda c: (c.order, c.name)):
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.arguments(p)
        p.set_defaults(_run=cmd.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from monkeysee.runtime import tune_malloc

    tune_malloc()
    for stream in (sys.stdout, sys.stderr):  # file names that are not UTF-8 print as escapes, never crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse cannot take more photos after an option (`explain RUN --method all a.jpg b.jpg`):
    # leftover plain words are photos of the commands that take a list of them.
    takes_photos = isinstance(getattr(args, "photos", None), list)
    if extra and takes_photos and not any(e.startswith("-") for e in extra):
        args.photos += [type(args.photos[0])(e) if args.photos else e for e in extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 1
    from monkeysee.cli.outputs import check_outputs

    try:
        check_outputs(args)
        return int(args._run(args) or 0)
    except MonkeyseeError as exc:
        print(f"monkeysee {args.command}: error: {exc.message}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f" writing {exc.filename}" if exc.filename else ""
        print(f"monkeysee {args.command}: error: disk full{where}. Fix: free space and rerun the same "
              "command (finished work is kept and resumed)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"monkeysee {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
