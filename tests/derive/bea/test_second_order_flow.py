"""The second-order modified flow of momentum rules: the paper's form, and numerically."""

import numpy as np
import pytest
import sympy as sp
from scipy.integrate import solve_ivp

from nmech.derive import modified_flow, rules
from nmech.derive.symbols import beta, eta, lam, tau
from nmech.numerics.flows import gradient_function
from nmech.numerics.simulate import iterate


def _eq(a, b):
    return sp.simplify(a - b) == 0


@pytest.mark.parametrize(
    "rule", [rules.heavy_ball(weight_decay=True), rules.torch_sgd(momentum=True, weight_decay=True)]
)
def test_heavy_ball_is_the_papers_form(rule):
    f = modified_flow(rule)
    assert _eq(f.m, eta * (1 + beta) / 2) and _eq(f.gamma, 1 - beta)
    assert _eq(f.lam_eff, lam) and f.rho == 0 and f.kappa == 1


def test_dampening_scales_gradient_and_weight_decay():
    f = modified_flow(rules.torch_sgd(momentum=True, dampening=True, weight_decay=True))
    assert _eq(f.kappa, 1 - tau) and _eq(f.lam_eff, (1 - tau) * lam)
    assert _eq(f.m, eta * (1 + beta) / 2) and _eq(f.gamma, 1 - beta)


@pytest.mark.parametrize("rule", [rules.nesterov(), rules.torch_sgd(nesterov=True)])
def test_nesterov_adds_hessian_damping(rule):
    f = modified_flow(rule)
    assert _eq(f.rho, beta) and _eq(f.gamma, 1 - beta) and _eq(f.m, eta * (1 + beta) / 2)


def test_gd_limit():
    f = modified_flow(rules.gd(weight_decay=True))
    assert _eq(f.m, eta / 2) and f.gamma == 1 and _eq(f.lam_eff, lam)


def _tracking_error(
    step_size: float, b: float = 0.5, horizon: float = 2.0, gamma_scale: float = 1.0
) -> float:
    """max |θ_n − θ(nη)| for heavy ball vs its second-order flow, started at rest."""
    x, y = sp.symbols("x y")
    loss = x**2 / 2 + y**2 + x**4 / 4 + x * y**2 / 2
    grad = gradient_function(loss, [x, y])
    th0 = np.array([0.8, -0.5])
    steps = int(round(horizon / step_size))
    its = iterate(rules.heavy_ball(), th0, steps, {"eta": step_size, "beta": b}, grad)
    m, g = step_size * (1 + b) / 2, gamma_scale * (1 - b)

    def rhs(_t, z):
        th, v = z[:2], z[2:]
        return np.r_[v, (-grad(th) - g * v) / m]

    ts = step_size * np.arange(steps + 1)
    sol = solve_ivp(rhs, (0, ts[-1]), np.r_[th0, 0, 0], t_eval=ts, rtol=1e-10, atol=1e-12)
    return float(np.max(np.linalg.norm(its - sol.y[:2].T, axis=1)))


def test_second_order_flow_tracks_heavy_ball_at_first_order():
    etas = [0.02, 0.01, 0.005]
    errors = [_tracking_error(e) for e in etas]
    slope = np.polyfit(np.log(etas), np.log(errors), 1)[0]
    assert 0.8 < slope < 1.3  # O(η), like the first-order modified equation started at rest


def test_damping_coefficient_matters():
    """A wrong damping (1 instead of 1 − β, or ×1.5) does not track: the error stays O(1)."""
    right = _tracking_error(0.01)
    assert _tracking_error(0.01, gamma_scale=2.0) > 10 * right
    assert _tracking_error(0.01, gamma_scale=1.5) > 5 * right
