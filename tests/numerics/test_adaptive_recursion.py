"""Adaptive rules: the exact recursion in terms of the update direction u_n reproduces simulated
invariant problems (u_n evaluated from the rule's u expression and the optimizer state, not
from the parameter difference); the continuous form is first order in eta."""

import numpy as np
import pytest

from nmech.derive import rules, symmetry
from nmech.derive.symmetry import dynamics
from nmech.numerics import predict
from nmech.numerics.simulate import _evaluate, initial_state, step

from .test_predict import Problem

PARAMS = {"eta": 0.01, "lam": 0.05, "beta1": 0.9, "beta2": 0.99, "eps": 1e-8,
          "alpha": 0.95, "beta": 0.8}  # fmt: skip
RULES = {
    "adamw": rules.adamw(),
    "adam_coupled": rules.adam(weight_decay=True),
    "adamw_no_bias_correction": rules.adamw(bias_correction=False),
    "rmsprop_momentum_coupled": rules.rmsprop(weight_decay=True, momentum=True),
}


def simulate(rule, problem, params, steps):
    """Q_n and the signals theta_u, u_sq, c_u per block, u_n from the rule's u expression."""
    dyn = dynamics.derive(rule, symmetry.scale())
    state = initial_state(rule, problem.rng.normal(size=problem.size))
    Q, sig = [], {"theta_u": [], "u_sq": [], "c_u": []}
    for n in range(steps):
        Q.append(problem.observable(state["theta"]))
        new, _ = step(rule, state, params, problem.grad, n=n + 1)
        env = {**state, **{k + "_next": v for k, v in new.items()}}
        u = _evaluate(dyn.adaptive.u, env, {**params, "step": n + 1}, problem.grad, [])
        u = np.broadcast_to(u, state["theta"].shape)
        if problem.kind == "translation":
            sig["c_u"].append(problem.blocks(u).sum(1))
        else:
            sig["theta_u"].append(problem.pair(state["theta"], u))
            sig["u_sq"].append(problem.pair(u, u))
        state = new
    Q.append(problem.observable(state["theta"]))
    return np.array(Q), {k: np.array(v) for k, v in sig.items() if v}


@pytest.mark.parametrize("kind", ["scale", "rescale", "translation"])
@pytest.mark.parametrize("name", list(RULES))
def test_exact_recursion_reproduces_simulation(name, kind):
    rule, problem = RULES[name], Problem(kind)
    Q, sig = simulate(rule, problem, PARAMS, 400)
    dyn = dynamics.derive(rule, getattr(symmetry, kind)())
    assert set(dyn.signals) == set(sig)
    pred = predict(
        dyn, Q[0], sig, form="exact", values={"eta": PARAMS["eta"], "lam": PARAMS["lam"]}
    )
    err = np.max(np.abs(pred - Q) / np.abs(Q).max(axis=0))
    assert err <= 1e-12
    assert np.max(np.abs(Q[-1] - Q[0]) / np.abs(Q).max(axis=0)) > 1e-3  # Q really moved


def test_cross_term_does_not_vanish_under_adam():
    """<J theta, u> != 0 under Adam on a scale-invariant loss (it is 0 for plain gradients)."""
    problem = Problem("scale", seed=1)
    _, sig = simulate(rules.adamw(), problem, PARAMS, 50)
    assert np.max(np.abs(sig["theta_u"])) > 1e-3 * np.max(np.abs(sig["u_sq"]))


def test_continuous_error_shrinks_with_eta():
    errors = []
    for eta in (0.02, 0.01, 0.005):
        problem = Problem("scale", seed=3)
        params = {**PARAMS, "eta": eta, "lam": 0.5}
        Q, sig = simulate(rules.adamw(), problem, params, int(round(1.0 / eta)))
        dyn = dynamics.derive(rules.adamw(), symmetry.scale())
        pred = predict(dyn, Q[0], sig, form="continuous", values={"eta": eta, "lam": params["lam"]})
        errors.append(np.max(np.abs(pred - Q) / np.abs(Q).max(axis=0)))
    slopes = np.diff(np.log(errors)) / np.log(0.5)
    assert np.all(slopes > 0.7), (errors, slopes)  # first order: 0.75, 0.86 -> 1
