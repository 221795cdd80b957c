"""The ``nmech`` command line: one sub-command per job.

Every sub-command reports bad input as a single line ``nmech: error: ...`` on stderr and exits
with status 2; no traceback reaches the user for an input problem. Ctrl-C exits 130 and
SIGTERM 143 with one line (a command may first save its work: ``validate`` installs its own
handlers); output cut short by a closed pipe (``nmech derive ... | head``) ends quietly with
status 141, as a process killed by SIGPIPE.
"""

from __future__ import annotations

import argparse
import os
import signal
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
    "flow": ("check modified equations on a real network", "nmech.cli.flow"),
    "figures": ("the paper's figures of the symbolic side", "nmech.cli.figures"),
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


class Terminated(Exception):
    """Raised in the main thread by SIGTERM (outside commands that handle it themselves)."""


def _terminate(_signum: int, _frame: object) -> None:
    raise Terminated


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's final flush of a closed pipe
    raises nothing."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def main(argv: Sequence[str] | None = None) -> int:
    """The ``nmech`` command: parse ``argv`` (default: the command line) and run the sub-command; bad input is one line ``nmech: error: ...`` and exit 2, Ctrl-C exit 130, SIGTERM 143, a closed output pipe 141 (module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        selected = next((a for a in argv if not a.startswith("-")), None)
        parser = build_parser(selected if selected in COMMANDS else None)
        args = parser.parse_args(argv)
        run: Runner = args._run
        code = run(args)
        sys.stdout.flush()
        return code
    except NmechError as exc:
        print(f"nmech: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nmech: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("nmech: terminated (SIGTERM)", file=sys.stderr)
        return 143
    except BrokenPipeError:
        _silence_stdout()
        return 141
    finally:
        signal.signal(signal.SIGTERM, previous)
