"""The initial-condition correction of a run started off the slow manifold (torch's start):
the known first-order shift, and numerically the full-order match it restores."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from nmech.derive import modified_equation, rules
from nmech.derive.algebra import trees as T
from nmech.derive.bea.initial_condition import deviation, initial_condition
from nmech.derive.symbols import beta
from nmech.errors import NmechError
from nmech.numerics.coefficients import ExactValues
from nmech.numerics.differentials import shadow_start
from nmech.numerics.flows import (
    SympyLoss,
    field_function,
    fitted_slope,
    gradient_function,
    integrate,
)
from nmech.numerics.simulate import initial_state, iterate, step


def test_heavy_ball_first_order_shift():
    """torch's SGD v⁺ = βv + ∇L, θ⁺ = θ − ηv⁺: by hand, Φ₁ = −β/(1−β)·w with w = v − U_v(θ)
    and w⁺ = βw + O(η); the two-step form with w = (θ_prev − U(θ))/η has the same Φ₁ (the
    buffer is (θ_prev − θ)/η)."""
    for rule in (rules.torch_sgd(), rules.heavy_ball()):
        ic = initial_condition(modified_equation(rule, 1))
        (state,) = rule.states
        assert ic.rates == {state: beta}
        assert ic.terms[0] == {T.leaf(deviation(state)): beta / (beta - 1)}
    assert initial_condition(modified_equation(rules.heavy_ball(), 1)).scales == {"theta_prev": 1}


def test_gd_needs_no_correction():
    ic = initial_condition(modified_equation(rules.gd(), 2))
    assert ic.terms == ({}, {}) and ic.rates == {}


@pytest.mark.parametrize("rule", [rules.rmsprop(), rules.adam()], ids=["rmsprop", "adam"])
def test_adaptive_rules_are_refused(rule):
    with pytest.raises(
        NmechError, match="no closed-form initial-condition correction.*entry-wise"
    ) as info:
        initial_condition(modified_equation(rule, 1))
    assert "burn-in" in str(info.value) and "\n" not in str(info.value)


x, y = sp.symbols("x y", real=True)
LOSS = x**2 / 2 + y**2 + x**4 / 4 + x * y**2 / 2 + sp.Rational(3, 10) * sp.sin(x)
THETA0 = np.array([0.8, -0.5])
ETAS = [0.005, 0.0025, 0.00125]
BETA = 0.5


def _errors(rule, p: int, corrected: bool) -> list[float]:
    """max_{n ≥ N} |θ_n − θ̃(nη)| for torch's start, N the burn-in with β^N ≤ η^{p+1}; θ̃ from
    the shadow start Φ(θ₁, w₁) (corrected) or from θ₀ (not)."""
    me = modified_equation(rule, p)
    ic = initial_condition(me)
    grad = gradient_function(LOSS, [x, y])
    out = []
    for eta in ETAS:
        values = {"eta": eta, "beta": BETA}
        steps = int(round(1.0 / eta))
        iterates = iterate(rule, THETA0, steps, values, grad)
        first, _ = step(rule, initial_state(rule, THETA0), values, grad, first=True)
        exact, concrete = ExactValues(values), SympyLoss(LOSS, [x, y])
        start = shadow_start(
            ic,
            lambda t, leaves, c=concrete, e=exact: c.at(t, e, leaves),
            first["theta"],
            {s: first[s] for s in rule.states},
            exact,
        )
        field = field_function(me, LOSS, [x, y], values)
        times = eta * np.arange(steps + 1)
        flow = integrate(field, start, times[1:]) if corrected else integrate(field, THETA0, times)
        flow = np.vstack([THETA0, flow]) if corrected else flow
        burn_in = max(1, int(np.ceil((p + 1) * np.log(eta) / np.log(BETA))))
        out.append(float(np.linalg.norm(iterates - flow, axis=1)[burn_in:].max()))
    return out


@pytest.mark.parametrize("p", [1, 2])
def test_corrected_start_restores_the_full_order(p):
    """torch's SGD started as torch starts it: from the shifted start the error after the
    burn-in is O(η^{p+1}); from θ₀ it stays O(η) whatever p (negative control)."""
    corrected = _errors(rules.torch_sgd(), p, corrected=True)
    assert abs(fitted_slope(ETAS, corrected) - (p + 1)) < 0.3, corrected
    plain = _errors(rules.torch_sgd(), p, corrected=False)
    assert abs(fitted_slope(ETAS, plain) - 1) < 0.3, plain
