"""Sign-based rules (signSGD, signum, Lion) on a region where ∇L keeps its signs.

There sign ∇L = s is constant, so with decoupled decay every rule moves as
θ⁺ = (1 − ηλ)θ − ηs, whose exact modified field is

    f̃ = −(−log(1 − ηλ)/(ηλ)) (s + λθ) = −Σ_k (ηλ)^k/(k + 1) · (s + λθ),

(f̃ = −s exactly without decay), and the momentum buffer's slow manifold is the geometric
average of the gradients met along the straight path θ_{n−j} = θ_n + jηs:
U_m = Σ_k η^k (E_k/k!) ∇^{k+1}L[s, …, s], E_k = Σ_{j≥1} (1−β)β^{j−1} j^k. Checked exactly,
against the coordinate route, and against simulated iterates (slopes p + 1)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import sympy as sp

from nmech.derive import modified_equation, rules
from nmech.derive.algebra import trees as T
from nmech.derive.symbols import beta, beta1, beta2, lam, sign
from nmech.errors import NmechError
from nmech.numerics.flows import (
    convergence_slope,
    field_function,
    fitted_slope,
    gradient_function,
    state_function,
    tracking_error,
)
from nmech.numerics.simulate import iterate, step

from .coordinate_route import order_one_pairs

x, y = sp.symbols("x y", real=True)
COORDS = [x, y]
# ∇L = (x − 3 + y²/10 + cos(x)/5, 2(y + 3) + xy/5) keeps the signs (−, +) for t ≤ 1 from THETA0
LOSS = (x - 3) ** 2 / 2 + (y + 3) ** 2 + x * y**2 / 10 + sp.sin(x) / 5
THETA0 = np.array([0.5, -0.5])
PARAMS = {"beta": 0.5, "beta1": 0.9, "beta2": 0.99, "lam": 0.5}
ETAS = [0.04, 0.02, 0.01]
MAKERS = {"signsgd": rules.signsgd, "signum": rules.signum, "lion": rules.lion}
BUFFER_DECAY = {"signum": beta, "lion": beta2}

S = T.apply(sign(T.placeholder(0)), {T.placeholder(0): {T.GRAD: 1}})  # {sign ∇L: 1}
(SIGN_GRAD,) = S


def _equal(a: dict, b: dict) -> bool:
    """a = b as fields (element-wise nodes on the same arguments merged first)."""
    difference = T.combine([(1, {t: T.as_expr(c) for t, c in a.items()}), (-1, b)])
    return T.is_zero(difference)


@pytest.mark.parametrize("name", MAKERS)
def test_field_is_the_log_series_of_the_decay(name):
    me = modified_equation(MAKERS[name](weight_decay=True), 3)
    for k, term in enumerate(me.terms):
        c = -(lam**k) / (k + 1)
        assert _equal(term, {SIGN_GRAD: c, T.THETA: c * lam}), (name, k, term)
    plain = modified_equation(MAKERS[name](), 3)
    assert _equal(plain.terms[0], {SIGN_GRAD: -1})
    assert all(not term for term in plain.terms[1:])
    assert "no modified loss" in plain.modified_loss().verdict()


@pytest.mark.parametrize("name", ["signum", "lion"])
def test_buffer_is_the_geometric_average_along_the_path(name):
    """U_{m,k} = (E_k/k!) ∇^{k+1}L[s, …, s] with E_k/k! = [t^k] (1−b)eᵗ/(1 − b eᵗ)."""
    me = modified_equation(MAKERS[name](), 3)
    b, t = BUFFER_DECAY[name], sp.Symbol("t")
    levels = me.states["m"]
    moments = sp.series((1 - b) * sp.exp(t) / (1 - b * sp.exp(t)), t, 0, len(levels)).removeO()
    assert len(levels) >= 4
    for k, term in enumerate(levels):
        expected = {T.node([SIGN_GRAD] * k): moments.coeff(t, k)}
        assert _equal(term, expected), (name, k, term)


@pytest.mark.parametrize("name", MAKERS)
def test_agrees_with_the_coordinate_route(name):
    rule = MAKERS[name](weight_decay=True)
    values = {beta: sp.Rational(1, 3), beta1: sp.Rational(1, 2), beta2: sp.Rational(3, 5)}
    values[lam] = sp.Rational(1, 2)
    point = {x: sp.Rational(1, 2), y: -1}
    for k, (a, b) in enumerate(order_one_pairs(rule, values, LOSS, COORDS, point)):
        assert all(sp.simplify(u - v) == 0 for u, v in zip(a, b)), (name, k, a, b)


@pytest.mark.parametrize("name", MAKERS)
@pytest.mark.parametrize("p", [0, 1, 2])
def test_convergence_slope_is_p_plus_one(name, p):
    me = modified_equation(MAKERS[name](weight_decay=True), p)
    slope, errors = convergence_slope(me, LOSS, COORDS, THETA0, PARAMS, etas=ETAS, horizon=1.0)
    assert abs(slope - (p + 1)) < 0.2, (name, p, slope, errors)
    assert errors[-1] > 1e-11, errors


@pytest.mark.parametrize("name", MAKERS)
def test_without_decay_the_flow_is_exact(name):
    """All corrections vanish: the iterates lie on the order-0 flow to rounding."""
    me = modified_equation(MAKERS[name](), 0)
    params = {**PARAMS, "eta": 0.05}
    assert tracking_error(me, LOSS, COORDS, THETA0, params, horizon=1.0) < 1e-13
    wrong = dataclasses.replace(me, terms=({SIGN_GRAD: sp.Rational(-11, 10)},))  # control
    assert tracking_error(wrong, LOSS, COORDS, THETA0, params, horizon=1.0) > 0.1


@pytest.mark.parametrize("name", ["signum", "lion"])
def test_buffer_tracks_its_slow_manifold(name):
    """The simulated buffer m_n stays within O(η^{p+2}) of U_m(θ_n): an order-p equation
    carries the slow manifold through η^{p+1} (p = 1: slope 3)."""
    rule = MAKERS[name](weight_decay=True)
    me = modified_equation(rule, 1)
    grad_fn = gradient_function(LOSS, COORDS)
    errors = []
    for e in ETAS:
        # η/(1 − β₂) small: Lion's default β₂ = 0.99 puts these η far from the asymptotic range
        params = {**PARAMS, "beta2": 0.6, "eta": e}
        manifold = state_function(me, "m", LOSS, COORDS, params)
        state = {"theta": THETA0, "m": manifold(THETA0)}
        worst = 0.0
        for n in range(int(round(1.0 / e))):
            state, _ = step(rule, state, params, grad_fn, n=n + 1)
            worst = max(worst, float(np.abs(state["m"] - manifold(state["theta"])).max()))
        errors.append(worst)
    assert abs(fitted_slope(ETAS, errors) - 3) < 0.2, errors


def test_a_point_with_a_zero_gradient_entry_is_refused():
    me = modified_equation(rules.lion(weight_decay=True), 1)
    field = field_function(me, LOSS, COORDS, {**PARAMS, "eta": 0.01})
    assert np.all(np.isfinite(field(THETA0)))
    # ∂L/∂y = 2(y + 3) + xy/5 vanishes at x = 0, y = −3
    with pytest.raises(NmechError, match="region where the signs are fixed"):
        field(np.array([0.0, -3.0]))


@pytest.mark.parametrize(
    "text",
    [
        "theta_next = theta - eta*(sign(theta - theta_prev) + grad(theta))",
        "m_next = beta*m + (1 - beta)*grad(theta)\ntheta_next = theta - eta*sign(m_next - grad(theta))",
        "v_next = beta2*v + (1 - beta2)*grad(theta)*grad(theta)\n"
        "theta_next = theta - eta*(grad(theta) + sign(sqrt(v_next) - sqrt(grad(theta)**2)))",
        "m_next = beta*m\ntheta_next = theta - eta*(sign(m_next) + grad(theta))",
    ],
)
def test_a_sign_of_a_vanishing_vector_is_refused(text):
    with pytest.raises(NmechError, match="vanishes at eta = 0"):
        modified_equation(rules.parse(text), 1)


def test_simulated_sign_steps_are_the_rule():
    """The interpreter's sign is the entry-wise sign: one signSGD step by hand."""
    params = {"eta": 0.1, "lam": 0.5}
    grad_fn = gradient_function(LOSS, COORDS)
    out = iterate(rules.signsgd(weight_decay=True), THETA0, 1, params, grad_fn)
    g = grad_fn(THETA0)
    assert np.allclose(out[1], THETA0 - 0.1 * (np.sign(g) + 0.5 * THETA0), rtol=0, atol=1e-15)
