"""nmech derive: the modified equation (and modified loss) of an update rule.

Built-in rules by name, or a rule file in the rule language (see nmech.derive.rules.language);
``minibatch --batches M`` for mini-batch SGD over an epoch (random reshuffling, or
``--replacement``), ``--format sde`` for its stochastic modified equation.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nmech.derive import rules
from nmech.derive.bea.modified_equation import ModifiedEquation, modified_equation
from nmech.derive.stochastic.minibatch import (
    REPLACEMENT,
    RESHUFFLING,
    MinibatchEquation,
    general_minibatch_equation,
    minibatch_equation,
)
from nmech.derive.stochastic.sde import minibatch_sde
from nmech.errors import NmechError

RULE_NAMES = ("gd", "heavy-ball", "nesterov", "torch-sgd", "rmsprop", "adam", "adamw")
MINIBATCH = "minibatch"
MAX_RULE_FILE = 1 << 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``nmech derive``."""
    parser.add_argument(
        "rule", nargs="?", choices=RULE_NAMES + (MINIBATCH,), help="a built-in rule"
    )
    parser.add_argument("--rule-file", type=Path, help="a rule written in the rule language")
    parser.add_argument("--weight-decay", action="store_true", help="coupled weight decay lam")
    parser.add_argument("--torch-nesterov", action="store_true", help="torch-sgd: nesterov=True")
    parser.add_argument("--dampening", action="store_true", help="torch-sgd: dampening tau")
    parser.add_argument("--order", type=int, default=1, help="keep corrections through eta^P")
    parser.add_argument("--batches", type=int, help="minibatch: the number m of mini-batches")
    parser.add_argument(
        "--replacement", action="store_true", help="minibatch: draw batches with replacement"
    )
    parser.add_argument(
        "--general", action="store_true", help="minibatch: reshuffling for any number m of batches"
    )
    parser.add_argument(
        "--format",
        choices=("latex", "json", "text", "sde"),
        default="latex",
        help="sde: minibatch's stochastic modified equation (LaTeX, then JSON)",
    )


def load_rule(args: argparse.Namespace) -> rules.Rule:
    """The rule named by the options: a built-in (with its flags) or a rule file (UTF-8, at most 1 MiB)."""
    if (args.rule is None) == (args.rule_file is None):
        raise NmechError("give exactly one of a built-in rule name or --rule-file FILE")
    if args.rule_file is None:
        return rules.builtin(
            args.rule,
            weight_decay=args.weight_decay,
            nesterov=getattr(args, "torch_nesterov", False),
            dampening=getattr(args, "dampening", False),
        )
    path: Path = args.rule_file
    if not path.is_file():
        raise NmechError(f"rule file '{path}' does not exist")
    if path.stat().st_size > MAX_RULE_FILE:
        raise NmechError(f"rule file '{path}' is larger than 1 MiB")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise NmechError(f"rule file '{path}' is not UTF-8 text") from None
    return rules.parse(text, name=path.stem)


def present(title: str, result: ModifiedEquation | MinibatchEquation, fmt: str) -> str:
    """A modified equation and its modified loss (or why there is none) in ``fmt``."""
    if fmt == "json":
        return result.to_json_text()
    loss = result.modified_loss()
    if fmt == "text":
        shown = f"\n  {loss.text()}" if loss.terms else ""
        return f"{title}: {result.text()}{shown}\n  {loss.verdict()}"
    shown = f"{loss.latex()}\n" if loss.terms else ""
    return f"% {title}\n{result.latex()}\n{shown}% {loss.verdict()}"


def _minibatch(args: argparse.Namespace) -> MinibatchEquation:
    if args.general:
        if args.batches is not None or args.replacement:
            raise NmechError(
                "--general is random reshuffling for any m: drop --batches/--replacement"
            )
        return general_minibatch_equation(args.order)
    if args.batches is None:
        raise NmechError("minibatch needs --batches M (the number of mini-batches) or --general")
    sampling = REPLACEMENT if args.replacement else RESHUFFLING
    return minibatch_equation(args.batches, args.order, sampling)


def render_minibatch(args: argparse.Namespace) -> str:
    """``nmech derive minibatch``: the mean-epoch flow and loss, or the SDE with ``--format sde``."""
    if args.rule_file is not None:
        raise NmechError("give either minibatch or --rule-file, not both")
    if args.format == "sde":
        if args.batches is None or args.general:
            raise NmechError("--format sde needs --batches M")
        if args.order != 1:
            raise NmechError(
                "--format sde is the first-order SDE (drift through eta): drop --order"
            )
        sde = minibatch_sde(args.batches)
        return f"% {sde.latex()}\n{sde.to_json_text()}"
    me = _minibatch(args)
    return present(me.title(), me, args.format)


def run(args: argparse.Namespace) -> int:
    """Run the command; exit status 0 (bad input raises NmechError: one line, exit 2)."""
    if args.rule == MINIBATCH:
        print(render_minibatch(args))
        return 0
    if args.batches is not None or args.replacement or args.general or args.format == "sde":
        raise NmechError("--batches, --replacement, --general, --format sde: minibatch only")
    rule = load_rule(args)
    print(present(rule.name, modified_equation(rule, args.order), args.format))
    return 0
