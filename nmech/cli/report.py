"""nmech report: rebuild report.json, report.md, errors.tex, equations.tex and the figures from
records files, without training again: a run folder of nmech validate (its records*.h5), or any
records file, however it was written (the Recorder in your own loop included).

The report is written as one set (a Ctrl-C or an error leaves the previous report as it was);
records files are only read. ``--out`` elsewhere than the run's own folder must not hold a
report or a run already, unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nmech.errors import NmechError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``nmech report``."""
    parser.add_argument("path", help="a run folder, or a records file (.h5)")
    parser.add_argument("--out", help="folder for the report (default: the run folder, or the "
                        "records file's folder)")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the report an --out folder already holds")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Rebuild the report; prints where it is."""
    from nmech.cli.validate import print_report
    from nmech.validation.outputs import new_output_dir, writable_dir
    from nmech.validation.report import REPORT_FILES, RUN_FILES, build_report

    target = Path(args.path)
    if not target.exists():
        raise NmechError(f"no such run folder or records file: {target}")
    home = target.parent if target.is_file() else target
    if args.out is None or Path(args.out).resolve() == home.resolve():
        out = writable_dir(home, "the report folder")
    else:
        out = new_output_dir(args.out, (*REPORT_FILES, *RUN_FILES), args.overwrite,
                             "a report or a run")  # fmt: skip
    report = build_report(target, out=out)
    print_report(report, out)
    return 0
