"""The dimension-free result against the independent coordinate route (benchmarks/naive.py) on a
concrete 2-D loss, for every built-in rule with weight decay, through order 2.

The naive route is slow with symbolic hyper-parameters, so they are fixed to rationals in the
rule it is given; the engine's (symbolic) field is evaluated at the same values."""

from __future__ import annotations

import dataclasses

import pytest
import sympy as sp

from nmech.derive import modified_equation, rules
from nmech.derive.rules import Assignment, Rule
from nmech.derive.symbols import beta, eta, lam, tau
from nmech.reference.naive import naive_modified_field

x, y = sp.symbols("x y", real=True)
COORDS = [x, y]
# cubic (so ∇³L[∇L,∇L] is present), coupled, and cheap for the coordinate route
LOSS = x**3 / 6 + x * y + y**2
VALUES = {beta: sp.Rational(1, 3), lam: sp.Rational(1, 10), tau: sp.Rational(1, 5)}
ORDER = 2


def substituted(rule: Rule) -> Rule:
    def fix(a: Assignment) -> Assignment:
        return Assignment(a.target, a.expr.subs(VALUES))

    return dataclasses.replace(
        rule,
        assignments=tuple(fix(a) for a in rule.assignments),
        first_step=tuple(fix(a) for a in rule.first_step),
    )


def engine_orders(rule: Rule) -> list[sp.Matrix]:
    field = modified_equation(rule, ORDER).field(LOSS, COORDS)
    field = field.xreplace(VALUES).applyfunc(sp.expand)
    return [field.applyfunc(lambda e, k=k: e.coeff(eta, k)) for k in range(ORDER + 1)]


RULES = {
    "gd": lambda: rules.gd(weight_decay=True),
    "heavy_ball": lambda: rules.heavy_ball(weight_decay=True),
    "nesterov": lambda: rules.nesterov(weight_decay=True),
    "torch_sgd_dampening": lambda: rules.torch_sgd(
        momentum=True, dampening=True, weight_decay=True
    ),
    "torch_sgd_nesterov": lambda: rules.torch_sgd(momentum=True, nesterov=True, weight_decay=True),
}


@pytest.mark.parametrize("name", list(RULES))
def test_engine_matches_coordinate_route(name):
    rule = RULES[name]()
    mine = engine_orders(rule)
    reference = naive_modified_field(substituted(rule), ORDER, LOSS, COORDS)
    assert len(reference) == ORDER + 1
    for k in range(ORDER + 1):
        difference = (mine[k] - reference[k]).applyfunc(lambda e: sp.simplify(sp.expand(e)))
        assert difference == sp.zeros(2, 1), (name, k, difference)
    # non-vacuous: the second-order term depends on θ through the loss
    assert any(e.free_symbols & {x, y} for e in mine[2])


def test_coordinate_route_detects_a_wrong_coefficient():
    """Negative control: the comparison fails for a rule that differs at O(η²) only."""
    gd = rules.gd(weight_decay=True)
    (step,) = gd.assignments
    changed = dataclasses.replace(
        gd, assignments=(Assignment(step.target, step.expr + eta**2 * lam * sp.Symbol("theta")),)
    )
    reference = naive_modified_field(substituted(changed), 1, LOSS, COORDS)
    mine = engine_orders(gd)
    assert (mine[0] - reference[0]).applyfunc(sp.expand) == sp.zeros(2, 1)
    assert (mine[1] - reference[1]).applyfunc(sp.expand) != sp.zeros(2, 1)
