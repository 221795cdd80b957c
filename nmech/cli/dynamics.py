"""nmech dynamics: the broken conservation law of a symmetry's observable under a rule.

Prints the continuous ODE (with its closed-form kernels) and the exact discrete recursion.
The adaptive rules (rmsprop, adam, adamw; ``--weight-decay`` turns their decay on) give the
recursion in terms of the measured update direction u_n (see nmech.derive.symmetry.adaptive).
"""

from __future__ import annotations

import argparse
import json

from nmech.cli.derive import RULE_NAMES, load_rule
from nmech.derive import symmetry
from nmech.derive.symmetry.dynamics import derive


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``nmech dynamics``."""
    parser.add_argument("--rule", choices=RULE_NAMES, help="a built-in rule")
    parser.add_argument("--rule-file", help="a rule written in the rule language")
    parser.add_argument("--symmetry", choices=sorted(symmetry.BUILTINS), required=True)
    parser.add_argument(
        "--weight-decay", action="store_true", help="weight decay lam (decoupled for adamw)"
    )
    parser.add_argument("--torch-nesterov", action="store_true", help="torch-sgd: nesterov=True")
    parser.add_argument("--dampening", action="store_true", help="torch-sgd: dampening tau")
    parser.add_argument("--paper", action="store_true", help="weight decay at leading order only")
    parser.add_argument("--format", choices=("latex", "json"), default="latex")


def run(args: argparse.Namespace) -> int:
    """Run the command; exit status 0 (bad input raises NmechError: one line, exit 2)."""
    from pathlib import Path

    args.rule_file = Path(args.rule_file) if args.rule_file else None
    rule = load_rule(args)
    dyn = derive(rule, symmetry.BUILTINS[args.symmetry](), paper=args.paper)
    print(json.dumps(dyn.to_json(), indent=2) if args.format == "json" else dyn.latex())
    return 0
