"""nmech derive: the modified equation (and modified loss) of an update rule.

Built-in rules by name, or a rule file in the rule language (see nmech.derive.rules.language);
``minibatch --batches M`` for mini-batch SGD over an epoch (random reshuffling, or
``--replacement``), ``--format sde`` for its stochastic modified equation.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nmech.derive import rules
from nmech.derive.bea.modified_equation import modified_equation
from nmech.derive.stochastic.minibatch import (
    REPLACEMENT,
    RESHUFFLING,
    MinibatchEquation,
    general_equation,
    minibatch_equation,
)
from nmech.derive.stochastic.sde import minibatch_sde
from nmech.errors import NmechError

RULE_NAMES = ("gd", "heavy-ball", "nesterov", "torch-sgd", "rmsprop", "adam", "adamw")
MINIBATCH = "minibatch"
MAX_RULE_FILE = 1 << 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
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


def render(rule: rules.Rule, order: int, fmt: str) -> str:
    me = modified_equation(rule, order)
    try:
        loss = me.modified_loss()
    except NmechError as exc:  # e.g. an entry-wise preconditioned leading term
        loss, verdict = None, str(exc)
    else:
        verdict = (
            f"no modified loss at order {loss.obstruction} (the eta^{loss.obstruction} term is not a gradient)"
            if loss.obstruction is not None
            else f"a modified loss exists through order {order}"
        )
    if fmt == "json":
        doc = me.to_json()
        doc["modified_loss"] = {
            "latex": loss.latex() if loss else None,
            "exists_through_order": loss.exists_through if loss else -1,
            "obstruction_order": loss.obstruction if loss else 0,
            "verdict": verdict,
        }
        return json.dumps(doc, indent=2, ensure_ascii=False)
    if fmt == "text":
        return f"{rule.name}: {me.text()}\n  {verdict}"
    return f"% {rule.name}\n{me.latex()}\n" + (f"{loss.latex()}\n" if loss else "") + f"% {verdict}"


def _minibatch(args: argparse.Namespace) -> MinibatchEquation:
    if args.general:
        if args.batches is not None or args.replacement:
            raise NmechError(
                "--general is random reshuffling for any m: drop --batches/--replacement"
            )
        return general_equation(args.order)
    if args.batches is None:
        raise NmechError("minibatch needs --batches M (the number of mini-batches) or --general")
    sampling = REPLACEMENT if args.replacement else RESHUFFLING
    return minibatch_equation(args.batches, args.order, sampling)


def render_minibatch(args: argparse.Namespace) -> str:
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
    phis, obstruction = me.modified_loss()
    if args.format == "json":
        return me.to_json_text()
    verdict = (
        f"no modified loss at order {obstruction}"
        if obstruction is not None
        else f"a modified loss exists through order {args.order}"
    )
    if args.format == "text":
        return f"{me.title()}: {me.text()}\n  {me.loss_latex(latex=False)}\n  {verdict}"
    return f"% {me.title()}\n{me.latex()}\n{me.loss_latex()}\n% {verdict}"


def run(args: argparse.Namespace) -> int:
    if args.rule == MINIBATCH:
        print(render_minibatch(args))
        return 0
    if args.batches is not None or args.replacement or args.general or args.format == "sde":
        raise NmechError("--batches, --replacement, --general, --format sde: minibatch only")
    rule = load_rule(args)
    print(render(rule, args.order, args.format))
    return 0
