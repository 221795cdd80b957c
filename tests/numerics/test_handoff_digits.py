"""The numeric hand-off keeps its digits: float64 fields against exact rational evaluation of
the symbolic field, for β, β₁, β₂ up to 0.999 and η from 1e-4 to 0.5 (issue 12)."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from nmech.derive import modified_equation, rules
from nmech.derive.symbols import HYPERPARAMETERS
from nmech.errors import NmechError
from nmech.numerics.coefficients import ExactValues
from nmech.numerics.flows import field_function
from nmech.numerics.torch_field import torch_field

a, z = sp.Symbol("a", positive=True), sp.Symbol("z", real=True)
HEAVY_BALL_3 = modified_equation(rules.heavy_ball(), order=3)


def _exact_terms(me, loss, coords, point, values):
    """Each term η^k c_t t(θ) of the field as an exact rational vector."""
    subs = {HYPERPARAMETERS[k]: sp.Rational(repr(v)) for k, v in values.items() if k != "a"}
    subs.update({x: sp.Rational(repr(v)) for x, v in zip(coords, point)})
    eta = subs[HYPERPARAMETERS["eta"]]
    from nmech.derive.algebra.concrete import ConcreteEvaluator

    ev = ConcreteEvaluator(loss, coords)
    out = []
    for k, f in enumerate(me.terms):
        for t, c in f.items():
            out.append([eta**k * (c * e).xreplace(subs) for e in ev.tree(t)])
    return np.array(out, dtype=object)


def _check(value, terms, tol=1e-12):
    """|float − exact| ≤ tol·|exact| where the sum is well conditioned (Σ|terms| ≤ 10|sum|),
    and ≤ 1e-14·Σ|terms| always (each term correctly rounded, then summed)."""
    total = terms.sum(axis=0)
    magnitude = np.abs(terms).sum(axis=0)
    for i in range(len(total)):
        err = abs(sp.Rational(repr(float(value[i]))) - total[i])
        assert err <= sp.Rational(1, 10**14) * magnitude[i] * len(terms), (i, float(err))
        if magnitude[i] <= 10 * abs(total[i]):
            assert err <= tol * abs(total[i]), (i, float(err / abs(total[i])))


def test_the_issues_example_is_right_at_beta_0999():
    """Issue 12: heavy ball order 3 on L = a z²/2 at a = 1.3, z = 1, η = 1e-3; sympy's
    lambdify of the stored field was 29 % off at β = 0.99 and 99.97 % at β = 0.999."""
    for beta in (0.99, 0.999):
        values = {"eta": 0.001, "beta": beta, "a": 1.3}
        fn = field_function(HEAVY_BALL_3, a * z**2 / 2, [z], values)
        terms = _exact_terms(HEAVY_BALL_3, (sp.Rational(13, 10)) * z**2 / 2, [z], [1.0], values)
        _check(fn(np.array([1.0])), terms)
    assert abs(fn(np.array([1.0]))[0] / float(terms.sum()) - 1) < 1e-13


@settings(max_examples=40, deadline=None)
@given(
    beta=st.floats(0.0, 0.999),
    eta=st.floats(1e-4, 0.5),
    coef=st.floats(0.1, 3.0),
    point=st.floats(-2.0, 2.0).filter(lambda v: abs(v) > 1e-3),
)
@example(beta=0.999, eta=1e-4, coef=1.3, point=1.0)
def test_heavy_ball_field_matches_exact_rationals(beta, eta, coef, point):
    values = {"eta": eta, "beta": beta}
    loss = sp.Rational(repr(coef)) * z**2 / 2 + z**4 / 4
    terms = _exact_terms(HEAVY_BALL_3, loss, [z], [point], values)
    numpy_value = field_function(HEAVY_BALL_3, loss, [z], values)(np.array([point]))
    _check(numpy_value, terms)

    def torch_loss(theta):
        return coef * theta[0] ** 2 / 2 + theta[0] ** 4 / 4

    theta = torch.tensor([point], dtype=torch.float64)
    _check(torch_field(HEAVY_BALL_3, torch_loss, theta, values).numpy(), terms)


ADAM_1 = modified_equation(rules.adam(), order=1)
x, y = sp.symbols("x y", real=True)
ADAM_LOSS = 3 * x - 2 * y + x * y / 4 + y**2 / 2 + x**4 / 8


@settings(max_examples=15, deadline=None)
@given(
    beta1=st.floats(0.0, 0.999),
    beta2=st.floats(0.0, 0.999),
    eta=st.floats(1e-4, 0.5),
    eps=st.floats(1e-8, 1.0),
)
@example(beta1=0.999, beta2=0.999, eta=0.1, eps=1e-3)  # where the lambdified route loses digits
@example(beta1=0.999, beta2=0.998999, eta=0.1, eps=1e-8)
def test_adam_entrywise_field_matches_exact_rationals(beta1, beta2, eta, eps):
    """Element-wise nodes: the hyper-parameter part of f folded exactly before torch/numpy."""
    values = {"eta": eta, "beta1": beta1, "beta2": beta2, "eps": eps}
    point = [0.3, -0.5]
    terms = _exact_terms(ADAM_1, ADAM_LOSS, [x, y], point, values)
    _check(field_function(ADAM_1, ADAM_LOSS, [x, y], values)(np.array(point)), terms, 1e-12)

    def torch_loss(t):
        return 3 * t[0] - 2 * t[1] + t[0] * t[1] / 4 + t[1] ** 2 / 2 + t[0] ** 4 / 8

    theta = torch.tensor(point, dtype=torch.float64)
    _check(torch_field(ADAM_1, torch_loss, theta, values).numpy(), terms, 1e-12)


def test_naive_lambdify_of_the_same_coefficient_loses_the_digits():
    """Negative control: the float route the hand-off replaces is really wrong at β = 0.999."""
    c = next(iter(HEAVY_BALL_3.terms[3].values()))
    beta = HYPERPARAMETERS["beta"]
    naive = sp.lambdify(
        beta, sp.expand(sp.numer(sp.together(c))) / sp.expand(sp.denom(sp.together(c)))
    )
    exact = c.xreplace({beta: sp.Rational(999, 1000)})
    assert abs(naive(0.999) / float(exact) - 1) > 1e-3
    assert abs(ExactValues({"beta": 0.999}).coefficient(c) / float(exact) - 1) < 1e-15


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"eta": float("nan"), "beta": 0.5}, "parameter eta must be finite"),
        ({"eta": 0.1}, "no value given for hyper-parameter(s) beta"),
        ({"eta": "fast", "beta": 0.5}, "parameter eta must be a real number"),
        ({"eta": -0.1, "beta": 0.5}, "parameter eta = -0.1 is outside its domain"),
        ({"eta": 0.1, "beta": 1.0}, "parameter beta = 1.0 is outside its domain"),
    ],
)
def test_bad_hyperparameters_are_one_line_errors(values, message):
    with pytest.raises(NmechError) as info:
        field_function(HEAVY_BALL_3, a * z**2 / 2, [z], {**values, "a": 1.0})(np.array([1.0]))
    assert message in str(info.value) and "\n" not in str(info.value)
