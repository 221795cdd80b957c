"""The ``nmech`` command line: one sub-command per job.

Every sub-command reports bad input as a single line ``nmech: error: ...`` on stderr and exits
with status 2; no traceback reaches the user for an input problem.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from nmech.errors import NmechError

Runner = Callable[[argparse.Namespace], int]

COMMANDS: dict[str, tuple[str, str]] = {
    "derive": ("modified equations of an update rule", "nmech.cli.derive"),
    "dynamics": ("dynamics of a symmetry's observable", "nmech.cli.dynamics"),
    "validate": ("train a network and check the predictions", "nmech.cli.validate"),
    "report": ("rebuild report and figures from a run's records", "nmech.cli.report"),
    "demo": ("the main job: derivations and the cpu-demo validation", "nmech.cli.demo"),
    "bench": ("the benchmark suite", "nmech.cli.bench"),
}


class Parser(argparse.ArgumentParser):
    """argparse with the CLI's error contract: one line on stderr, exit status 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``nmech: error: MESSAGE`` and exit with status 2."""
        self.exit(2, f"nmech: error: {message}\n")


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """The parser; only the selected sub-command's module is imported (torch stays unloaded
    for ``nmech derive``)."""
    import importlib

    parser = Parser(
        prog="nmech",
        description="Modified equations, symmetries and broken conservation laws of optimizers.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, module) in COMMANDS.items():
        if name != selected:
            sub.add_parser(name, help=help_text)
            continue
        mod = importlib.import_module(module)
        command = sub.add_parser(name, help=help_text, description=mod.__doc__)
        mod.add_arguments(command)
        command.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The ``nmech`` command: parse ``argv`` (default: the command line) and run the sub-command; bad input is one line ``nmech: error: ...`` and exit 2, Ctrl-C exit 130."""
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(selected if selected in COMMANDS else None)
    args = parser.parse_args(argv)
    run: Runner = args._run
    try:
        return run(args)
    except NmechError as exc:
        print(f"nmech: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nmech: interrupted", file=sys.stderr)
        return 130
