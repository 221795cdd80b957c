"""nmech report: rebuild report.json, report.md, errors.tex, equations.tex and the figures of a
run folder from its records files (records-*.h5), without training again.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``nmech report``."""
    parser.add_argument("dir", help="run folder written by nmech validate")


def run(args: argparse.Namespace) -> int:
    """Rebuild the report; prints where it is."""
    from nmech.validation.report import build_report

    out = Path(args.dir)
    report = build_report(out)
    print(f"report: {out / 'report.md'} (JSON: {out / 'report.json'})")
    for fig in report["figures"]:
        print(f"figure: {out / fig}")
    return 0
