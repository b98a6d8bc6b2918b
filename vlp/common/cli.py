"""The one convention of every command line (vlp-data, vlp-train, vlp-eval, vlp-export, vlp-study).

- Errors are one line on stderr, ``PROG: error: MESSAGE`` (argparse's own form), naming the file, key
  or value at fault; no traceback for a problem the user can fix.
- Exit codes: 0 done; 1 a runtime failure (the data, the run, a damaged file met while working); 2 bad
  arguments or input to fix (argparse's code too), found before anything is written; 130 interrupted.
- Every ``--help`` ends with examples, and shows the defaults.
- The arguments several commands share are defined once here: the model (``--model``,
  ``--pretrained``), the device (``--device``, ``--batch-size``) and the output (``--out``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

EXIT_OK = 0
EXIT_FAILED = 1  # a runtime failure: the data or the run, not the command line
EXIT_USAGE = 2  # bad arguments or input the user must fix
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as a shell reports it

Handler = Callable[[argparse.Namespace], int]


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults shown; the description wrapped, the examples kept as written (one command a line)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:\n"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def _examples(lines: Sequence[str]) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def parser(prog: str, description: str, examples: Sequence[str]) -> argparse.ArgumentParser:
    """A command's parser: its description, defaults in ``--help`` and ``examples`` at the end."""
    return argparse.ArgumentParser(
        prog=prog, description=description, epilog=_examples(examples), formatter_class=_HelpFormatter
    )


def command_parser(
    prog: str, description: str, examples: Sequence[str]
) -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """A parser whose first argument is a required COMMAND, and the object to add commands to."""
    p = parser(prog, description, examples)
    return p, p.add_subparsers(dest="command", required=True, metavar="COMMAND")


def add_command(
    commands: argparse._SubParsersAction, name: str, help: str, fn: Handler, examples: Sequence[str]
) -> argparse.ArgumentParser:
    """A subcommand that runs ``fn(args)``, with its defaults and ``examples`` in its ``--help``."""
    p = commands.add_parser(
        name, help=help, description=help, epilog=_examples(examples), formatter_class=_HelpFormatter
    )
    p.set_defaults(fn=fn)
    return p


def _int_at_least(least: int, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1 (a batch size, a count of samples)."""
    return _int_at_least(1, text)


def non_negative_int(text: str) -> int:
    """An argparse type: an integer of at least 0 (0 often meaning "all" or "the default")."""
    return _int_at_least(0, text)


def add_model_args(p: argparse.ArgumentParser, required: bool = True, pretrained: bool = True) -> None:
    """``--model`` (any open_clip spec) and, when the command loads weights, ``--pretrained``."""
    p.add_argument(
        "--model",
        required=required,
        help="open_clip model: a name (ViT-B-32), local-dir:PATH (a vlp export), hf-hub:ORG/NAME, or an "
        "architecture .json file",
    )
    if pretrained:
        p.add_argument("--pretrained", default="", help="pretrained tag or weights file for a model name")


def add_device_args(p: argparse.ArgumentParser, batch_size: int = 64, what: str = "images per forward pass") -> None:
    """``--device`` and ``--batch-size``."""
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda or cuda:1")
    p.add_argument("--batch-size", type=positive_int, default=batch_size, help=what)


def add_output_arg(p: argparse.ArgumentParser, help: str, required: bool = False) -> None:
    """``--out``: where the command writes (always atomically: nothing half-written is left)."""
    p.add_argument("--out", required=required, default=None, help=help)


def error(prog: str, message: str, code: int = EXIT_USAGE) -> int:
    """Print ``PROG: error: MESSAGE`` to stderr; returns ``code`` for the exit status."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return code


def run(prog: str, fn: Handler, args: argparse.Namespace) -> int:
    """Run a command's handler; Ctrl-C ends it with one line and 130 (what it wrote so far is atomic)."""
    try:
        return fn(args)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
