"""Lookahead (k inner steps, then θ⁺ = θ + ρ(θ_k − θ)) as one rule: its unrolled step is the
algorithm, its modified equation matches the closed forms, and the slow weights track it at
order p + 1."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import sympy as sp

from nmech.derive import modified_equation, rules
from nmech.derive.algebra import trees as T
from nmech.derive.symbols import eta, rho
from nmech.errors import NmechError
from nmech.numerics.flows import convergence_slope, gradient_function
from nmech.numerics.simulate import iterate

from .test_averaged import COORDS, LOSS, THETA0, TOLERANCE, a

ETAS = [0.02, 0.01, 0.005]


def test_the_unrolled_rule_is_lookahead():
    """Against a hand-written Lookahead loop over torch's SGD with momentum (buffer kept across
    outer steps, fast weights reset to the slow ones)."""
    k, outer, lr, beta, step = 3, 4, 0.05, 0.7, 0.6
    grad_fn = gradient_function(LOSS, COORDS)
    got = iterate(
        rules.lookahead(rules.torch_sgd(), k), THETA0, outer, {"eta": lr, "beta": beta, "rho": step},
        grad_fn,
    )  # fmt: skip
    slow, buf, first = THETA0.copy(), np.zeros(2), True
    expected = [slow.copy()]
    for _ in range(outer):
        fast = slow.copy()
        for _ in range(k):
            g = grad_fn(fast)
            buf = g if first else beta * buf + g
            first = False
            fast = fast - lr * buf
        slow = slow + step * (fast - slow)
        expected.append(slow.copy())
    np.testing.assert_allclose(got, np.array(expected), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("k", [2, 3])
def test_rho_one_is_k_gd_steps(k):
    """ρ = 1: the outer step is k GD steps, so the field is k times GD's, order by order."""
    me = modified_equation(rules.lookahead(rules.gd(), k), 3)
    gd = modified_equation(rules.gd(), 3)
    for f, g in zip(me.terms, gd.terms, strict=True):
        assert set(g) <= set(f)  # terms whose coefficient vanishes at ρ = 1 may be extra
        assert all(sp.simplify(f[t].subs(rho, 1) - k * g.get(t, 0)) == 0 for t in f)


def test_quadratic_closed_form():
    """L = aθ²/2: one outer step multiplies θ by m = 1 + ρ((1 − ηa)^k − 1), so the field is
    (1/η) log(m) θ to all orders."""
    k, order = 3, 3
    z = sp.Symbol("z", real=True)
    me = modified_equation(rules.lookahead(rules.gd(), k), order)
    field = sp.expand(me.field(a * z**2 / 2, [z])[0])
    m = 1 + rho * ((1 - eta * a) ** k - 1)
    expected = sp.expand(sp.series(sp.log(m) / eta * z, eta, 0, order + 1).removeO())
    assert sp.expand(field - expected) == 0


@pytest.mark.parametrize("k", [2, 3, 4])
def test_modified_loss(k):
    """θ̇ = −kρ∇[L + η(kρ − k + 1)/4 ‖∇L‖²] + O(η²)."""
    loss = modified_equation(rules.lookahead(rules.gd(), k), 1).modified_loss()
    assert sp.simplify(loss.scale - k * rho) == 0
    (coefficient,) = loss.terms[1].values()
    assert sp.simplify(coefficient - (k * rho - k + 1) / 4) == 0


CASES = [("gd", rules.gd, {"rho": 0.5}, 3, p) for p in (1, 2)]
CASES += [("torch-sgd", rules.torch_sgd, {"rho": 0.5, "beta": 0.5}, 2, p) for p in (1, 2)]


@pytest.mark.parametrize(
    ("name", "make", "params", "k", "p"), CASES, ids=[f"{c[0]}-k{c[3]}-p{c[4]}" for c in CASES]
)
def test_slow_weights_track_the_flow_at_order_p_plus_one(name, make, params, k, p):
    me = modified_equation(rules.lookahead(make(), k), p)
    slope, errors = convergence_slope(me, LOSS, COORDS, THETA0, params, etas=ETAS, horizon=1.0)
    assert abs(slope - (p + 1)) < TOLERANCE, (name, p, slope, errors)
    assert all(e1 > e2 for e1, e2 in itertools.pairwise(errors)), errors
    assert errors[-1] > 1e-11


def test_leading_term_is_k_rho_times_the_base():
    me = modified_equation(rules.lookahead(rules.torch_sgd(), 4), 0)
    beta = sp.Symbol("beta", real=True)
    assert sp.simplify(me.terms[0][T.GRAD] + 4 * rho / (1 - beta)) == 0


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: rules.lookahead(rules.heavy_ball(), 2), "no X_prev"),
        (lambda: rules.lookahead(rules.gd(), 0), "k must be an integer in 1..16"),
        (lambda: rules.lookahead(rules.gd(), 17), "k must be an integer in 1..16"),
        (lambda: rules.lookahead(rules.gd(), True), "k must be an integer"),
        (lambda: rules.lookahead(rules.ema(rules.gd()), 2), "no average"),
    ],
)
def test_refusals(make, message):
    with pytest.raises(NmechError, match=message):
        make()
