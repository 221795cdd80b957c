"""nmech dynamics: the broken conservation law of a symmetry's observable under a rule.

Prints the continuous ODE (with its closed-form kernels) and the exact discrete recursion.
The adaptive rules (rmsprop, adam, adamw; ``--weight-decay`` turns their decay on) give the
recursion in terms of the measured update direction u_n (see nmech.derive.symmetry.adaptive).
"""

from __future__ import annotations

import argparse
import json

from nmech.cli.derive import RULE_NAMES, add_standalone, latex_output, load_rule
from nmech.derive import symmetry
from nmech.derive.rules import Rule
from nmech.derive.symbols import lam
from nmech.derive.symmetry.adaptive import is_adaptive
from nmech.derive.symmetry.dynamics import derive
from nmech.errors import NmechError


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
    parser.add_argument(
        "--paper",
        action="store_true",
        help="one-step rules with weight decay (gd --weight-decay): drop the eta*lam^2 term",
    )
    parser.add_argument("--format", choices=("latex", "json"), default="latex")
    add_standalone(parser)


def check_paper(rule: Rule) -> None:
    """``--paper`` drops the η·λ² weight-decay term of a one-step rule's continuous form; for
    any other rule it would change nothing, so it is refused."""
    if rule.states or is_adaptive(rule) or lam not in rule.parameters():
        raise NmechError(
            f"--paper drops the eta*lam^2 weight-decay term of a one-step rule's continuous "
            f"form (gd --weight-decay); it changes nothing for rule '{rule.name}'"
        )


def run(args: argparse.Namespace) -> int:
    """Run the command; exit status 0 (bad input raises NmechError: one line, exit 2)."""
    from pathlib import Path

    args.rule_file = Path(args.rule_file) if args.rule_file else None
    rule = load_rule(args)
    if args.paper:
        check_paper(rule)
    dyn = derive(rule, symmetry.BUILTINS[args.symmetry](), paper=args.paper)
    if args.format == "json":
        if args.standalone:
            raise NmechError("--standalone is for LaTeX output (--format latex)")
        print(json.dumps(dyn.to_json(), indent=2))
    else:
        title = f"{args.symmetry} symmetry under {rule.name}"
        print(latex_output(title, dyn.latex(), args))
    return 0
