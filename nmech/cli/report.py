"""nmech report: rebuild report.json, report.md, errors.tex, equations.tex and the figures from
records files, without training again: a run folder of nmech validate (its records*.h5), or any
records file, however it was written (the Recorder in your own loop included).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``nmech report``."""
    parser.add_argument("path", help="a run folder, or a records file (.h5)")
    parser.add_argument("--out", help="folder for the report (default: the run folder, or the "
                        "records file's folder)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Rebuild the report; prints where it is."""
    from nmech.cli.validate import print_report
    from nmech.validation.report import build_report

    target = Path(args.path)
    out = Path(args.out) if args.out else (target.parent if target.is_file() else target)
    report = build_report(target, out=out)
    print_report(report, out)
    return 0
