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
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the figures --out already holds")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Draw the selected figures into ``--out`` and list the files."""
    if not args.paper:
        raise NmechError("say which figures: --paper (the only set so far)")
    from nmech.validation.outputs import new_output_dir
    from nmech.validation.paper_figures import PAPER_FIGURES, paper_figures

    patterns = [f"{name}.*" for name in PAPER_FIGURES]
    out = new_output_dir(args.out, patterns, args.overwrite, "the paper's figures")
    for path in paper_figures(out):
        print(path)
    return 0
