"""Numerical check of the modified equations: keeping p corrections, the iterates track the
modified flow to O(η^{p+1}) at fixed time, so the log-log slope over η halvings is p + 1."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import sympy as sp

from nmech.derive import modified_equation, rules
from nmech.derive.algebra import trees as T
from nmech.numerics.flows import convergence_slope, tracking_error

x, y = sp.symbols("x y", real=True)
COORDS = [x, y]
LOSS = x**2 / 2 + y**2 + x**4 / 4 + x * y**2 / 2 + sp.Rational(3, 10) * sp.sin(x)
THETA0 = np.array([0.8, -0.5])
ETAS = [0.04, 0.02, 0.01]
# torch's buffer initialisation carries one more order of the slow manifold, whose large
# constants (1/(1-β)^5 at η²) keep η = 0.02..0.005 pre-asymptotic (slopes 1.16, 2.21, 3.26)
TORCH_ETAS = [0.005, 0.0025, 0.00125]
TOLERANCE = 0.2

CASES = [("gd", rules.gd, {}, ETAS, p) for p in range(4)]
CASES += [("heavy_ball", rules.heavy_ball, {"beta": 0.5}, ETAS, p) for p in range(3)]
CASES += [("nesterov", rules.nesterov, {"beta": 0.5}, ETAS, p) for p in range(3)]
CASES += [("torch_sgd", rules.torch_sgd, {"beta": 0.5}, TORCH_ETAS, p) for p in range(3)]


@pytest.mark.parametrize(
    ("name", "make", "params", "etas", "p"), CASES, ids=[f"{c[0]}-p{c[4]}" for c in CASES]
)
def test_convergence_slope_is_p_plus_one(name, make, params, etas, p):
    me = modified_equation(make(), p)
    slope, errors = convergence_slope(me, LOSS, COORDS, THETA0, params, etas=etas, horizon=1.0)
    assert abs(slope - (p + 1)) < TOLERANCE, (name, p, slope, errors)
    assert all(a > b for a, b in itertools.pairwise(errors)), errors  # monotone, not noise
    assert errors[-1] > 1e-11  # above the integrator's tolerance: the slope is meaningful


def test_weight_decay_slope():
    me = modified_equation(rules.heavy_ball(weight_decay=True), 1)
    params = {"beta": 0.5, "lam": 0.3}
    slope, errors = convergence_slope(me, LOSS, COORDS, THETA0, params, etas=ETAS, horizon=1.0)
    assert abs(slope - 2) < TOLERANCE, (slope, errors)


def test_wrong_coefficient_is_detected():
    """Negative control: a first-order correction with the wrong coefficient (−1/3 instead of
    −1/2) drops the slope back to 1, so the slope test can fail."""
    me = modified_equation(rules.gd(), 1)
    wrong = dataclasses.replace(me, terms=(me.terms[0], {T.node([T.GRAD]): sp.Rational(-1, 3)}))
    good, _ = convergence_slope(me, LOSS, COORDS, THETA0, {}, etas=ETAS, horizon=1.0)
    bad, _ = convergence_slope(wrong, LOSS, COORDS, THETA0, {}, etas=ETAS, horizon=1.0)
    assert abs(good - 2) < TOLERANCE
    assert abs(bad - 1) < TOLERANCE


def test_momentum_off_the_slow_manifold_is_first_order_only():
    """Negative control: starting heavy ball at rest (θ_prev = θ_0) instead of on the slow
    manifold leaves an O(η) error whatever p is (DESIGN.md)."""
    me = modified_equation(rules.heavy_ball(), 2)
    at_rest = dataclasses.replace(
        me, states={"theta_prev": ({T.THETA: 1},) + tuple({} for _ in me.states["theta_prev"][1:])}
    )
    errors = [
        tracking_error(at_rest, LOSS, COORDS, THETA0, {"beta": 0.5, "eta": e}, horizon=1.0)
        for e in ETAS
    ]
    slope = float(np.polyfit(np.log(ETAS), np.log(errors), 1)[0])
    assert abs(slope - 1) < 0.3, (slope, errors)
