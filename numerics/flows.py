"""Modified flows as numeric ODEs and the convergence-order (slope) test.

The hand-off from :mod:`nmech.derive`: a :class:`~nmech.derive.ModifiedEquation` and a concrete
sympy loss give a lambdified field θ ↦ f̃(θ), integrated with scipy's DOP853 at tight
tolerance. The slope test halves η at fixed time T and fits
log max_{n ≤ T/η} |θ_n − θ̃(nη)| against log η; keeping p corrections the slope is p + 1.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import sympy as sp
from scipy.integrate import solve_ivp

from nmech.derive.bea.modified_equation import ModifiedEquation
from nmech.derive.symbols import HYPERPARAMETERS
from nmech.numerics.simulate import iterate

Field = Callable[[np.ndarray], np.ndarray]


def _values(params: Mapping[str, float]) -> dict[sp.Symbol, float]:
    return {HYPERPARAMETERS.get(k, sp.Symbol(k, real=True)): float(v) for k, v in params.items()}


def lambdify_vector(
    expr: sp.Matrix, coords: Sequence[sp.Symbol], params: Mapping[str, float]
) -> Field:
    """A numpy callable θ -> expr(θ) with the parameters substituted."""
    fixed = expr.xreplace(_values(params))
    fn = sp.lambdify([list(coords)], list(fixed), modules="numpy")
    return lambda theta: np.asarray(fn(list(theta)), dtype=float).reshape(-1)


def gradient_function(loss: sp.Expr, coords: Sequence[sp.Symbol]) -> Field:
    """∇L of a sympy loss as a numpy callable θ -> ∇L(θ)."""
    return lambdify_vector(sp.Matrix([sp.diff(loss, x) for x in coords]), coords, {})


def integrate(field: Field, theta0: np.ndarray, times: np.ndarray) -> np.ndarray:
    """θ̃(t) at the given times for θ̃' = field(θ̃), θ̃(0) = θ_0 (DOP853, rtol 1e-13)."""
    sol = solve_ivp(
        lambda _t, y: field(y),
        (times[0], times[-1]),
        np.asarray(theta0, float),
        method="DOP853",
        t_eval=times,
        rtol=1e-13,
        atol=1e-15,
    )
    if not sol.success:
        raise RuntimeError(f"integration failed: {sol.message}")
    return sol.y.T


def tracking_error(
    me: ModifiedEquation,
    loss: sp.Expr,
    coords: Sequence[sp.Symbol],
    theta0: np.ndarray,
    params: Mapping[str, float],
    horizon: float,
) -> float:
    """max_{n ≤ T/η} |θ_n − θ̃(nη)|, the rule started on its slow manifold (states from
    ``me.state`` at θ_0, no first-step override)."""
    eta = float(params["eta"])
    steps = int(round(horizon / eta))
    grad_fn = gradient_function(loss, coords)
    states0 = {
        s: lambdify_vector(me.state(s, loss, coords), coords, params)(theta0) for s in me.states
    }
    iterates = iterate(me.rule, theta0, steps, params, grad_fn, states0=states0, first_step=False)
    field = lambdify_vector(me.field(loss, coords), coords, params)
    flow = integrate(field, theta0, eta * np.arange(steps + 1))
    return float(np.max(np.linalg.norm(iterates - flow, axis=1)))


def convergence_slope(
    me: ModifiedEquation,
    loss: sp.Expr,
    coords: Sequence[sp.Symbol],
    theta0: np.ndarray,
    params: Mapping[str, float],
    etas: Sequence[float],
    horizon: float,
) -> tuple[float, list[float]]:
    """Least-squares slope of log(error) vs log(η) over ``etas`` and the errors themselves."""
    errors = [tracking_error(me, loss, coords, theta0, {**params, "eta": e}, horizon) for e in etas]
    slope = float(np.polyfit(np.log(etas), np.log(errors), 1)[0])
    return slope, errors
