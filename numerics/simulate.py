"""Iterate an update rule numerically (numpy float64): the ground truth the derivations are
checked against.

The rule's sympy assignments are evaluated by a small interpreter (sums, products and powers --
element-wise between vectors, as numpy does --, ``grad(p)`` -> the user's gradient function),
not by ``eval``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import sympy as sp

from nmech.derive.rules import NEXT, PARAMETER, Rule
from nmech.derive.symbols import grad
from nmech.errors import NmechError

GradFn = Callable[[np.ndarray], np.ndarray]


def _evaluate(
    expr: sp.Expr,
    env: Mapping[str, np.ndarray],
    scalars: Mapping[str, float],
    grad_fn: GradFn,
    used: list[np.ndarray],
) -> np.ndarray | float:
    if expr.is_Number:
        return float(expr)
    if expr.is_Symbol:
        name = str(expr)
        if name in env:
            return env[name]
        if name in scalars:
            return float(scalars[name])
        raise NmechError(f"no value given for '{name}'")
    if expr.is_Add:
        return sum(_evaluate(a, env, scalars, grad_fn, used) for a in expr.args)
    if expr.is_Mul:
        out: np.ndarray | float = 1.0
        for a in expr.args:
            out = out * _evaluate(a, env, scalars, grad_fn, used)
        return out
    if expr.is_Pow:
        return _evaluate(expr.base, env, scalars, grad_fn, used) ** _evaluate(
            expr.exp, env, scalars, grad_fn, used
        )
    if isinstance(expr, grad):
        g = np.asarray(grad_fn(np.asarray(_evaluate(expr.args[0], env, scalars, grad_fn, used))))
        used.append(g)
        return g
    raise NmechError(f"cannot evaluate '{expr}' numerically")


def step(
    rule: Rule,
    state: Mapping[str, np.ndarray],
    params: Mapping[str, float],
    grad_fn: GradFn,
    first: bool = False,
    n: int = 1,
) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
    """One step, the n-th (1-based; it sets ``step`` in bias corrections): the next state
    {θ, states...} and the gradients it evaluated, in order."""
    env = dict(state)
    scalars = {**params, "step": float(n)}
    used: list[np.ndarray] = []
    for a in rule.step(first=first):
        env[a.target] = np.asarray(_evaluate(a.expr, env, scalars, grad_fn, used), dtype=float)
    names = (PARAMETER, *rule.states)
    return {s: env[s + NEXT] for s in names}, used


def initial_state(rule: Rule, theta0: np.ndarray) -> dict[str, np.ndarray]:
    """θ_0 with every auxiliary state at its initial value (X_prev = X(0), buffers 0)."""
    state = {PARAMETER: np.asarray(theta0, dtype=float)}
    for s in rule.states:
        value = rule.initial_value(s)
        state[s] = state[str(value)].copy() if value != 0 else np.zeros_like(state[PARAMETER])
    return state


def iterate(
    rule: Rule,
    theta0: np.ndarray,
    steps: int,
    params: Mapping[str, float],
    grad_fn: GradFn,
    states0: Mapping[str, np.ndarray] | None = None,
    first_step: bool = True,
) -> np.ndarray:
    """θ_0..θ_steps as an array [steps+1, dim]. ``states0`` overrides the initial auxiliary
    states (e.g. to start on the slow manifold); ``first_step`` applies the rule's first-step
    override (torch's buffer initialisation) on step 0."""
    state = initial_state(rule, theta0)
    if states0:
        state.update({k: np.asarray(v, dtype=float) for k, v in states0.items()})
    out = np.empty((steps + 1, state[PARAMETER].size))
    out[0] = state[PARAMETER]
    for n in range(steps):
        state, _ = step(rule, state, params, grad_fn, first=first_step and n == 0, n=n + 1)
        out[n + 1] = state[PARAMETER]
    return out
