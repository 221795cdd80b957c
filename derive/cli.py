"""nmech derive: the modified equation (and modified loss) of an update rule.

Built-in rules by name, or a rule file in the rule language (see nmech.derive.rule_language).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nmech.errors import NmechError

from . import rules
from .modified_equation import modified_equation

RULE_NAMES = ("gd", "heavy-ball", "nesterov", "torch-sgd")
MAX_RULE_FILE = 1 << 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rule", nargs="?", choices=RULE_NAMES, help="a built-in rule")
    parser.add_argument("--rule-file", type=Path, help="a rule written in the rule language")
    parser.add_argument("--weight-decay", action="store_true", help="coupled weight decay lam")
    parser.add_argument("--torch-nesterov", action="store_true", help="torch-sgd: nesterov=True")
    parser.add_argument("--dampening", action="store_true", help="torch-sgd: dampening tau")
    parser.add_argument("--order", type=int, default=1, help="keep corrections through eta^P")
    parser.add_argument("--format", choices=("latex", "json", "text"), default="latex")


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
    loss = me.modified_loss()
    if fmt == "json":
        doc = me.to_json()
        doc["modified_loss"] = {
            "latex": loss.latex(),
            "exists_through_order": loss.exists_through,
            "obstruction_order": loss.obstruction,
        }
        return json.dumps(doc, indent=2, ensure_ascii=False)
    verdict = (
        f"no modified loss at order {loss.obstruction} (the eta^{loss.obstruction} term is not a gradient)"
        if loss.obstruction is not None
        else f"a modified loss exists through order {order}"
    )
    if fmt == "text":
        return f"{rule.name}: {me.text()}\n  {verdict}"
    return f"% {rule.name}\n{me.latex()}\n{loss.latex()}\n% {verdict}"


def run(args: argparse.Namespace) -> int:
    rule = load_rule(args)
    print(render(rule, args.order, args.format))
    return 0
