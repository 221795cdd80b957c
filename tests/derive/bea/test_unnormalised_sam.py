"""Unnormalised SAM (Andriushchenko & Flammarion 2022) written in the rule language, the ascent
radius a fixed multiple of the learning rate, ρ = rη:  θ⁺ = θ − η∇L(θ + rη∇L(θ)).

Known formula: to first order ∇L(θ + ρ∇L) = ∇(L + (ρ/2)‖∇L‖²), and the discretisation adds
GD's (η/4)‖∇L‖², so L̃ = L + η(r/2 + 1/4)‖∇L‖²; at r = 0 the order-2 field is GD's
−(1/3)(∇²L)²∇L − (1/12)∇³L[∇L, ∇L]. Checked exactly and by slopes p + 1 against the iterates."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from nmech.derive import modified_equation, rules
from nmech.derive.algebra import trees as T
from nmech.numerics.flows import convergence_slope

USAM = "theta_next = theta - eta*grad(theta + r*eta*grad(theta))"
r = sp.Symbol("r", real=True)
x, y = sp.symbols("x y", real=True)
LOSS = x**2 / 2 + y**2 + x**4 / 4 + x * y**2 / 2 + sp.Rational(3, 10) * sp.sin(x)
HG = T.node([T.GRAD])


def test_modified_loss_is_gd_plus_the_ascent_penalty():
    me = modified_equation(rules.parse(USAM, name="usam"), 2)
    assert sp.simplify(T.as_expr(me.terms[1][HG]) + (2 * r + 1) / 2) == 0
    assert set(me.terms[1]) == {HG}
    loss = modified_equation(rules.parse(USAM, name="usam"), 1).modified_loss()
    assert loss.scale == 1 and loss.exists_through == 1
    ((norm_sq, c),) = loss.terms[1].items()  # ‖∇L‖²: two L-vertices joined by one edge
    assert norm_sq.labels == ("L", "L") and norm_sq.adjacency == ((1,), (0,))
    assert sp.simplify(T.as_expr(c) - (r / 2 + sp.Rational(1, 4))) == 0
    at_zero = {t: sp.simplify(T.as_expr(c).subs(r, 0)) for t, c in me.terms[2].items()}
    assert at_zero == {
        T.node([HG]): sp.Rational(-1, 3),
        T.node([T.GRAD, T.GRAD]): sp.Rational(-1, 12),
    }


@pytest.mark.parametrize("p", [0, 1, 2])
def test_convergence_slope_is_p_plus_one(p):
    me = modified_equation(rules.parse(USAM, name="usam"), p)
    slope, errors = convergence_slope(
        me, LOSS, [x, y], np.array([0.8, -0.5]), {"r": 2.0}, etas=[0.04, 0.02, 0.01], horizon=1.0
    )
    assert abs(slope - (p + 1)) < 0.2, (p, slope, errors)
    assert errors[-1] > 1e-11
