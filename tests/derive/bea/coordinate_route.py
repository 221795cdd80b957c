"""The order-1 modified field of a rule, by the engine and by the naive coordinate route
(:mod:`nmech.reference.naive`), evaluated at one point: the cross-check the rule families'
tests share."""

from __future__ import annotations

import sympy as sp

from nmech.derive import modified_equation
from nmech.derive.algebra.concrete import ConcreteEvaluator
from nmech.derive.rules.rule import Rule
from nmech.reference.naive import naive_modified_field


def order_one_pairs(
    rule: Rule,
    values: dict[sp.Symbol, sp.Expr],
    loss: sp.Expr,
    coords: list[sp.Symbol],
    point: dict[sp.Symbol, sp.Expr],
) -> list[tuple[sp.Matrix, sp.Matrix]]:
    """[(engine's F_k, coordinate route's F_k) at ``point``] for k = 0, 1: the engine derives
    with symbolic parameters, substituted by ``values`` afterwards; the coordinate route gets
    the rule with those values fixed."""
    fixed = rule.with_values({s: v for s, v in values.items() if s in rule.parameters()})
    theirs = naive_modified_field(fixed, 1, loss, coords, simplify=False)
    mine = modified_equation(rule, 1)
    evaluator = ConcreteEvaluator(loss, coords)
    return [
        (evaluator.vec(mine.terms[k]).xreplace({**point, **values}), theirs[k].xreplace(point))
        for k in (0, 1)
    ]
