"""Rotational equilibrium: the derivation from the exact recursion gives Kosson, Messmer &
Jaggi's (2024, Table 1) formulas, and a simulated random walk on scale-invariant channels
settles at the predicted norm and angular update."""

import numpy as np
import pytest
import sympy as sp

from nmech.derive import rules
from nmech.derive.symbols import beta, beta1, eta, lam
from nmech.derive.symmetry.equilibrium import G_UNIT, C, equilibrium
from nmech.errors import NmechError
from nmech.numerics.simulate import initial_state, step


def test_adamw_matches_the_published_formulas():
    eq = equilibrium(rules.adamw())
    assert eq.root == 2 and sp.simplify(eq.norm_power - eta * C / (2 * lam)) == 0
    assert sp.simplify(eq.angular_sq - 2 * eta * lam * (1 - beta1) / (1 + beta1)) == 0
    assert "\\left(1 - \\beta_{1}\\right)" in eq.latex()


def test_sgd_momentum_matches_the_published_formulas():
    eq = equilibrium(rules.torch_sgd(momentum=True, weight_decay=True))
    assert eq.root == 4
    assert sp.simplify(eq.norm_power - eta * G_UNIT / (2 * lam * (1 - beta))) == 0
    assert sp.simplify(eq.angular_sq - 2 * eta * lam / (1 + beta)) == 0


@pytest.mark.parametrize(
    "rule",
    [
        rules.heavy_ball(weight_decay=True),
        rules.adam(weight_decay=True),
        rules.rmsprop(),
        rules.rmsprop(weight_decay=True, momentum=True),  # entry-wise buffer weight 1/(√v + ε)
    ],
)
def test_rules_outside_the_model_are_refused(rule):
    with pytest.raises(NmechError):
        equilibrium(rule)


BLOCKS, SIZE = 16, 64


def random_walk(rule, params, steps, seed=0):
    """Scale-invariant noise: g = P_perp(theta) xi / |theta| per block, xi ~ N(0, I)."""
    rng = np.random.default_rng(seed)

    def grad(theta):
        th = theta.reshape(BLOCKS, SIZE)
        r = np.linalg.norm(th, axis=1, keepdims=True)
        xi = rng.normal(size=th.shape)
        xi -= np.sum(xi * th, axis=1, keepdims=True) * th / r**2
        return (xi / r).reshape(-1)

    state = initial_state(rule, rng.normal(size=BLOCKS * SIZE))
    norms, angles = [], []
    for n in range(steps):
        new, _ = step(rule, state, params, grad, first=n == 0, n=n + 1)
        a, b = state["theta"].reshape(BLOCKS, SIZE), new["theta"].reshape(BLOCKS, SIZE)
        cos = np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        norms.append(np.linalg.norm(a, axis=1))
        angles.append(np.arccos(np.clip(cos, -1, 1)))
        state = new
    tail = slice(steps // 2, None)
    return np.mean(np.array(norms)[tail]), np.sqrt(np.mean(np.array(angles)[tail] ** 2))


def predicted(eq, values):
    subs = {sp.Symbol(k, real=True): v for k, v in values.items()}
    subs.update({C: SIZE, G_UNIT: SIZE - 1})  # E|P_perp xi|^2 = C - 1 at unit norm
    norm = float(eq.norm_power.subs(subs)) ** (1 / eq.root)
    return norm, float(sp.sqrt(eq.angular_sq.subs(subs)))


@pytest.mark.parametrize(
    "rule, values",
    [
        (rules.adamw(), {"eta": 0.01, "lam": 0.5, "beta1": 0.9, "beta2": 0.99, "eps": 1e-8}),
        (rules.torch_sgd(momentum=True, weight_decay=True), {"eta": 0.01, "lam": 0.5, "beta": 0.9}),
    ],
)
def test_simulated_random_walk_reaches_the_equilibrium(rule, values):
    norm, angle = random_walk(rule, values, 2000)
    norm_eq, angle_eq = predicted(equilibrium(rule), values)
    assert abs(norm / norm_eq - 1) < 0.02, (norm, norm_eq)  # measured: 0.4%, 0.1%
    assert abs(angle / angle_eq - 1) < 0.02, (angle, angle_eq)  # measured: 0.3%, 0.2%
