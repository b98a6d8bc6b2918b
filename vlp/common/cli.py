"""What the project's command lines (vlp-data, vlp-eval) share: subcommands, error lines, exit codes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

EXIT_DATA = 1  # the data itself could not be used
EXIT_USAGE = 2  # bad arguments or input the user must fix


def command_parser(prog: str, description: str | None) -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """A parser whose first argument is a required COMMAND, and the object to add commands to."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    return parser, parser.add_subparsers(dest="command", required=True, metavar="COMMAND")


def add_command(
    commands: argparse._SubParsersAction, name: str, help: str, fn: Callable[[argparse.Namespace], int]
) -> argparse.ArgumentParser:
    """A subcommand that shows its defaults in ``--help`` and runs ``fn(args)``."""
    parser = commands.add_parser(name, help=help, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.set_defaults(fn=fn)
    return parser


def error(prog: str, message: str, code: int = EXIT_USAGE) -> int:
    """Print ``PROG: error: MESSAGE`` (argparse's form) to stderr; returns ``code`` for the exit status."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return code
