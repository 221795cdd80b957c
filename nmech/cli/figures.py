"""nmech figures --paper: the paper's Figures 2-4 of the symbolic side, drawn from the
engine's output (symmetries, conserved quantities, modified losses and flows), as PNG and PDF.
See nmech.validation.paper_figures for what each figure shows."""

from __future__ import annotations

import argparse
from pathlib import Path

from nmech.errors import NmechError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``nmech figures``."""
    parser.add_argument("--paper", action="store_true", help="Figures 2, 3 and 4 of the paper")
    parser.add_argument("--out", type=Path, required=True, help="output folder")


def run(args: argparse.Namespace) -> int:
    """Draw the selected figures into ``--out`` and list the files."""
    if not args.paper:
        raise NmechError("say which figures: --paper (the only set so far)")
    if args.out.exists() and not args.out.is_dir():
        raise NmechError(f"--out {args.out} is a file, not a folder")
    from nmech.validation.paper_figures import paper_figures

    for path in paper_figures(args.out):
        print(path)
    return 0
