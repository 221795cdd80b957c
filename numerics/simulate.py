"""Iterate an update rule numerically: the ground truth the derivations are checked against.

One interpreter for numpy arrays and torch tensors alike: the rule's sympy assignments are
evaluated by walking the expression (sums, products and powers -- element-wise between
vectors --, the rule language's functions ``sqrt exp log sin cos tanh sign`` from the array's own
library, ``norm`` the global Euclidean norm (Σ x_i²)^{1/2}, ``grad(p)`` -> the user's gradient
function), never by ``eval``. Arrays keep their
type, dtype and device: a float64 torch tensor on a GPU is stepped there, without a host sync.
This module does not import torch; it uses the library of the arrays it is given.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import sympy as sp

from nmech.derive.rules import NEXT, PARAMETER, Rule
from nmech.derive.symbols import grad, norm
from nmech.errors import NmechError

Array = Any  # numpy.ndarray or torch.Tensor
GradFn = Callable[[Array], Array]
FUNCTIONS = frozenset({"exp", "log", "sin", "cos", "tanh", "sqrt", "sign"})


def is_torch(x: object) -> bool:
    """Whether x is a torch tensor (checked without importing torch)."""
    return type(x).__module__.startswith("torch")


def array_library(x: object) -> Any:
    """numpy, or torch for a torch tensor."""
    return sys.modules["torch"] if is_torch(x) else np


def _evaluate(
    expr: sp.Expr,
    env: Mapping[str, Array],
    scalars: Mapping[str, float],
    grad_fn: GradFn,
    used: list[Array],
) -> Array | float:
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
        out: Array | float = 1.0
        for a in expr.args:
            out = out * _evaluate(a, env, scalars, grad_fn, used)
        return out
    if expr.is_Pow:
        return _evaluate(expr.base, env, scalars, grad_fn, used) ** _evaluate(
            expr.exp, env, scalars, grad_fn, used
        )
    if isinstance(expr, grad):
        point = _evaluate(expr.args[0], env, scalars, grad_fn, used)
        g = grad_fn(point if is_torch(point) else np.asarray(point))
        g = g if is_torch(g) else np.asarray(g)
        used.append(g)
        return g
    if isinstance(expr, norm):
        x = _evaluate(expr.args[0], env, scalars, grad_fn, used)
        value = (x * x).sum() ** 0.5
        if not bool(value > 0):
            raise NmechError(f"'{expr}' vanishes: a normalised step is not defined there")
        return value
    name = type(expr).__name__
    if name in FUNCTIONS and len(expr.args) == 1:
        x = _evaluate(expr.args[0], env, scalars, grad_fn, used)
        return getattr(array_library(x), name)(x)
    raise NmechError(f"cannot evaluate '{expr}' numerically")


def _vector(value: Array | float, like: Array) -> Array:
    """An assignment's value as an array of θ's kind (a bare number broadcast to θ's shape)."""
    if isinstance(value, (int, float)):
        return like * 0.0 + value
    return value if is_torch(like) else np.asarray(value, dtype=float)


def step(
    rule: Rule,
    state: Mapping[str, Array],
    params: Mapping[str, float],
    grad_fn: GradFn,
    first: bool = False,
    n: int = 1,
) -> tuple[dict[str, Array], list[Array]]:
    """One step, the n-th (1-based; it sets ``step`` in bias corrections): the next state
    {θ, states...} and the gradients it evaluated, in order."""
    env = dict(state)
    like = state[PARAMETER]
    scalars = {**params, "step": float(n)}
    used: list[Array] = []
    for a in rule.step(first=first):
        env[a.target] = _vector(_evaluate(a.expr, env, scalars, grad_fn, used), like)
    names = (PARAMETER, *rule.states)
    return {s: env[s + NEXT] for s in names}, used


def initial_state(rule: Rule, theta0: Array) -> dict[str, Array]:
    """θ_0 with every auxiliary state at its initial value (X_prev = X(0), buffers 0)."""
    theta = theta0 if is_torch(theta0) else np.asarray(theta0, dtype=float)
    lib = array_library(theta)
    state = {PARAMETER: theta}
    for s in rule.states:
        value = rule.initial_value(s)
        state[s] = (
            lib.zeros_like(theta) + state[str(value)] if value != 0 else lib.zeros_like(theta)
        )
    return state


def iterate(
    rule: Rule,
    theta0: Array,
    steps: int,
    params: Mapping[str, float],
    grad_fn: GradFn,
    states0: Mapping[str, Array] | None = None,
    first_step: bool = True,
    on_step: Callable[[int], None] | None = None,
    record: str = PARAMETER,
) -> Array:
    """θ_0..θ_steps stacked as [steps+1, dim] (numpy, or a torch tensor on θ_0's device).
    ``states0`` overrides the initial auxiliary states (e.g. to start on the slow manifold);
    ``first_step`` applies the rule's first-step override (torch's buffer initialisation) on
    step 0; ``on_step(n)`` is called after step n (a progress bar); ``record`` names the state
    whose values are returned instead of θ's (an average of the iterates)."""
    state = initial_state(rule, theta0)
    if states0:
        state.update({k: _vector(v, state[PARAMETER]) for k, v in states0.items()})
    if record not in state:
        raise NmechError(f"rule '{rule.name}' has no state '{record}'")
    theta = state[record]
    shape = (steps + 1, theta.numel() if is_torch(theta) else theta.size)
    out = theta.new_empty(shape) if is_torch(theta) else np.empty(shape)
    out[0] = theta.reshape(-1)
    for n in range(steps):
        state, _ = step(rule, state, params, grad_fn, first=first_step and n == 0, n=n + 1)
        out[n + 1] = state[record].reshape(-1)
        if on_step is not None:
            on_step(n + 1)
    return out
