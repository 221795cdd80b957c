"""nmech demo: the main job on the embedded default (no downloads, no GPU).

1. derives and prints the modified equations (and modified losses) of GD, heavy ball and
   Nesterov in LaTeX, and the broken conservation laws of the scale symmetry under torch SGD;
2. runs the ``cpu-demo`` validation (VGG-16 with and without batch norm, width 1/8, synthetic
   data, torch.optim.SGD) and prints where the report and figures are.
"""

from __future__ import annotations

import argparse

from nmech.cli.derive import present
from nmech.derive import modified_equation, rules, symmetry
from nmech.derive.symmetry.dynamics import derive


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``nmech demo``."""
    parser.add_argument("--order", type=int, default=2, help="order of the modified equations")
    parser.add_argument("--out", default="runs/cpu-demo", help="folder for the validation run")
    parser.add_argument("--skip-validation", action="store_true", help="derivations only")


def run(args: argparse.Namespace) -> int:
    """Run the command; exit status 0 (bad input raises NmechError: one line, exit 2)."""
    for rule in (rules.gd(), rules.heavy_ball(), rules.nesterov()):
        print(
            present(
                f"{rule.name}, order {args.order}", modified_equation(rule, args.order), "latex"
            )
        )
        print()
    dyn = derive(rules.torch_sgd(weight_decay=True), symmetry.scale())
    print(dyn.latex())
    print()
    if args.skip_validation:
        return 0
    from nmech.cli import main

    return main(["validate", "--preset", "cpu-demo", "--out", args.out])
