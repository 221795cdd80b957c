"""The flow of an averaged iterate (EMA of a base rule, schedule-free SGD with constant weight):
closed forms on a quadratic, an independent change of variables in one dimension, and slope
tests against the simulated averages."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import sympy as sp

from nmech.derive import AveragedEquation, averaged_equation, modified_equation, rules
from nmech.derive.algebra import trees as T
from nmech.derive.symbols import beta, eta, gamma
from nmech.errors import NmechError
from nmech.numerics.flows import convergence_slope, gradient_function
from nmech.numerics.simulate import iterate

x, y = sp.symbols("x y", real=True)
a = sp.Symbol("a", positive=True)
COORDS = [x, y]
LOSS = x**2 / 2 + y**2 + x**4 / 4 + x * y**2 / 2 + sp.Rational(3, 10) * sp.sin(x)
THETA0 = np.array([0.8, -0.5])
# the expansion is in η/(1 − γ) with coefficients such as (γ² + 4γ + 1)/(12(1 − γ)²): at
# γ = 0.5 the local slopes reach p + 1 from below (p = 2: 2.66, 2.85, 2.93 over halvings from
# η = 0.02), so the fit uses η ≤ 0.01
ETAS = [0.01, 0.005, 0.0025]
TOLERANCE = 0.2


def series(expr: sp.Expr, order: int) -> sp.Expr:
    return sp.series(expr, eta, 0, order + 1).removeO()


def test_ema_of_gd_on_a_quadratic_matches_the_closed_form():
    """L = aθ²/2: θ_n = rⁿθ_0 with r = 1 − ηa, and on the slow manifold the average is
    θ̄ = sθ with s = (1 − γ)r/(r − γ); θ̄_n ∝ rⁿ, so its flow is GD's, θ̄' = (1/η) log(r) θ̄, to
    all orders (a linear change of variables commuting with the flow changes nothing)."""
    order = 4
    ae = averaged_equation(rules.ema(rules.gd()), order)
    z = sp.Symbol("z", real=True)
    loss = a * z**2 / 2
    field = sp.expand(ae.field(loss, [z])[0])
    r = 1 - eta * a
    assert sp.expand(field - series(sp.log(r) / eta * z, order)) == 0
    manifold = ae.iterate.state("avg", loss, [z])[0]  # through η^{order+1}
    residual = sp.Poly(sp.expand((r - gamma) * manifold - (1 - gamma) * r * z), eta)
    assert all(sp.cancel(c) == 0 for (k,), c in residual.terms() if k <= order + 1)


def test_ema_first_correction_of_the_manifold():
    """θ̄ = θ − η γ/(1 − γ) θ̇ + O(η²), θ̇ = −∇L: U_1 = γ/(1 − γ) ∇L."""
    ae = averaged_equation(rules.ema(rules.gd()), 1)
    u1 = ae.iterate.states["avg"][1]
    assert set(u1) == {T.GRAD}
    assert sp.simplify(u1[T.GRAD] - gamma / (1 - gamma)) == 0


POINT = {gamma: sp.Rational(1, 3), beta: sp.Rational(1, 2)}


def truncated(expr: sp.Expr, order: int) -> sp.Expr:
    """A polynomial in η cut after η^order."""
    poly = sp.Poly(sp.expand(expr), eta)
    return sum(c * eta**k for (k,), c in poly.terms() if k <= order)


def pushed_forward_1d(me, average: str, loss: sp.Expr, z: sp.Symbol, order: int) -> sp.Expr:
    """F̃(φ) = Φ′(ψ) f̃(ψ) at ψ = Φ⁻¹(φ), expanded in η with concrete polynomials of one
    variable at the parameters POINT: ψ by the fixed-point iteration ψ ← φ − (Φ(ψ) − ψ) (no
    trees, no Lie series)."""
    phi = sp.Symbol("phi", real=True)
    manifold = truncated(me.state(average, loss, [z])[0].subs(POINT), order)  # Φ(z)
    field = me.field(loss, [z])[0].subs(POINT)
    psi = phi
    for _ in range(order):
        psi = truncated(phi - (manifold.subs(z, psi) - psi), order)
    pushed = (sp.diff(manifold, z) * field).subs(z, psi)
    return truncated(pushed, order), phi


@pytest.mark.parametrize(
    ("make", "order"),
    [(lambda: rules.ema(rules.gd()), 2), (rules.schedule_free, 2)],
    ids=["ema-gd-order2", "schedule-free-order2"],
)
def test_matches_the_change_of_variables_in_one_dimension(make, order):
    z = sp.Symbol("z", real=True)
    loss = z**3 / 3 + z**2 / 2
    ae = averaged_equation(make(), order)
    expected, phi = pushed_forward_1d(ae.iterate, ae.average, loss, z, order)
    got = sp.expand(ae.field(loss, [z])[0].subs(POINT).subs(z, phi))
    assert sp.expand(got - expected) == 0
    assert expected.has(eta**order)


def test_the_average_differs_from_the_iterate_at_second_order():
    """EMA of GD: θ̄ and θ agree through η (the first correction is linear), and differ in the
    ∇³L[∇L, ∇L] term at η²: −(γ² + 4γ + 1)/(12(1 − γ)²) against GD's −1/12."""
    ae = averaged_equation(rules.ema(rules.gd()), 2)
    gd = modified_equation(rules.gd(), 2)
    assert ae.terms[:2] == gd.terms[:2]
    third = T.node([T.GRAD, T.GRAD])
    expected = -(gamma**2 + 4 * gamma + 1) / (12 * (1 - gamma) ** 2)
    assert sp.simplify(ae.terms[2][third] - expected) == 0
    assert sp.simplify(ae.terms[2][third].subs(gamma, 0) - gd.terms[2][third]) == 0


CASES = [("ema-gd", lambda: rules.ema(rules.gd()), {"gamma": 0.5}, p) for p in range(1, 4)]
CASES += [
    ("ema-heavy-ball", lambda: rules.ema(rules.heavy_ball()), {"gamma": 0.5, "beta": 0.5}, 2),
    ("schedule-free", rules.schedule_free, {"gamma": 0.5, "beta": 0.5}, 1),
    ("schedule-free", rules.schedule_free, {"gamma": 0.5, "beta": 0.5}, 2),
]


@pytest.mark.parametrize(
    ("name", "make", "params", "p"), CASES, ids=[f"{c[0]}-p{c[3]}" for c in CASES]
)
def test_the_average_tracks_its_flow_at_order_p_plus_one(name, make, params, p):
    ae = averaged_equation(make(), p)
    slope, errors = convergence_slope(ae, LOSS, COORDS, THETA0, params, etas=ETAS, horizon=1.0)
    assert abs(slope - (p + 1)) < TOLERANCE, (name, p, slope, errors)
    assert all(e1 > e2 for e1, e2 in itertools.pairwise(errors)), errors
    assert errors[-1] > 1e-11


def test_the_iterates_flow_does_not_track_the_average():
    """Negative control: θ's own order-2 flow (what deriving the rule and ignoring the
    average gives) tracks the average only to O(η²)."""
    ae = averaged_equation(rules.ema(rules.gd()), 2)
    ignored = dataclasses.replace(ae, terms=ae.iterate.terms)
    params = {"gamma": 0.5}
    good, _ = convergence_slope(ae, LOSS, COORDS, THETA0, params, etas=ETAS, horizon=1.0)
    bad, errors = convergence_slope(ignored, LOSS, COORDS, THETA0, params, etas=ETAS, horizon=1.0)
    assert abs(good - 3) < TOLERANCE
    assert abs(bad - 2) < TOLERANCE, errors


def test_presentation_and_json():
    ae = averaged_equation(rules.ema(rules.heavy_ball()), 1)
    assert isinstance(ae, AveragedEquation)
    assert ae.latex().splitlines()[1].startswith("\\dot{\\bar\\theta} = ")
    assert ae.text().startswith("dθ̄/dt = ")
    doc = ae.to_json()
    assert doc["schema"] == "nmech.averaged_equation/1" and doc["average"] == "avg"
    assert ae.modified_loss().terms  # heavy ball's modified loss, carried to the average


def test_refusals():
    with pytest.raises(NmechError, match="declares no average"):
        averaged_equation(rules.gd(), 1)
    with pytest.raises(NmechError, match="no state 'v'"):
        averaged_equation(rules.ema(rules.gd()), 1, average="v")
    not_average = rules.parse(
        "theta_next = theta - eta*grad(theta)\naverage w_next = gamma*w + grad(theta_next)"
    )
    with pytest.raises(NmechError, match="does not tend to theta"):
        averaged_equation(not_average, 1)
    uniform = rules.parse(
        "theta_next = theta - eta*grad(theta)\n"
        "average w_next = (1 - 1/(step + 1))*w + theta_next/(step + 1)"
    )
    with pytest.raises(NmechError, match="no autonomous modified equation"):
        averaged_equation(uniform, 1)


def test_the_average_is_simulated_from_theta_0():
    """θ̄ starts at θ_0 (:meth:`Rule.initial_value`) and follows θ̄⁺ = γθ̄ + (1 − γ)θ⁺."""
    grad_fn = gradient_function(LOSS, COORDS)
    params = {"eta": 0.1, "gamma": 0.8}
    got = iterate(rules.ema(rules.gd()), THETA0, 5, params, grad_fn, record="avg")
    theta, avg = THETA0.copy(), THETA0.copy()
    expected = [avg.copy()]
    for _ in range(5):
        theta = theta - 0.1 * grad_fn(theta)
        avg = 0.8 * avg + 0.2 * theta
        expected.append(avg.copy())
    np.testing.assert_allclose(got, np.array(expected), rtol=1e-14)


def test_ema_of_adam_tracks_its_flow_at_order_two():
    """Element-wise trees go through the same change of variables (a loss whose gradient keeps
    its signs along the path: Adam's flow is smooth there)."""
    loss = 3 * x - 2 * y + sp.sin(x) / 2 + x * y / 4 + y**2 / 2
    ae = averaged_equation(rules.ema(rules.adam()), 1)
    params = {"beta1": 0.5, "beta2": 0.6, "eps": 0.1, "gamma": 0.5}
    theta0 = np.array([0.3, -0.2])
    slope, errors = convergence_slope(ae, loss, COORDS, theta0, params, etas=ETAS, horizon=0.5)
    assert abs(slope - 2) < TOLERANCE, (slope, errors)
