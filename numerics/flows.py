"""Modified flows of sympy losses as numeric ODEs, and the convergence-order (slope) test.

The numpy hand-off from :mod:`nmech.derive`: :func:`field_function` turns a
:class:`~nmech.derive.ModifiedEquation` and a concrete sympy loss into θ ↦ f̃(θ) =
Σ_k η^k Σ_t c_{k,t} t(θ), each elementary differential t evaluated from a lambdified symbolic
contraction ∇^{k+1}L[w_1..w_k] of the loss (:mod:`nmech.numerics.differentials`), each
coefficient c_{k,t} evaluated exactly at the given hyper-parameters and rounded once
(:mod:`nmech.numerics.coefficients`). Nothing is lambdified with a float hyper-parameter in an
expanded rational function, so the field keeps its digits at β = 0.999. Torch losses take the
same route with nested jvps instead of symbolic contractions (:mod:`nmech.numerics.torch_field`).

The slope test halves η at fixed time T and fits log max_{n ≤ T/η} |θ_n − θ̃(nη)| against
log η; keeping p corrections the slope is p + 1. Flows are integrated with scipy's DOP853
(8th order, adaptive) at rtol 1e-13.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import cache

import numpy as np
import sympy as sp
from scipy.integrate import solve_ivp

from nmech.derive.bea.averaged import AveragedEquation
from nmech.derive.bea.modified_equation import ModifiedEquation
from nmech.derive.rules.rule import PARAMETER
from nmech.errors import NmechError
from nmech.numerics.coefficients import ExactValues
from nmech.numerics.differentials import PointEvaluator, float_terms
from nmech.numerics.simulate import iterate

Field = Callable[[np.ndarray], np.ndarray]


def lambdify_vector(
    expr: sp.Matrix, coords: Sequence[sp.Symbol], params: Mapping[str, float]
) -> Field:
    """A numpy callable θ -> expr(θ), the parameters it uses substituted as exact rationals (so
    that their sub-expressions are folded exactly before any float arithmetic)."""
    expr = sp.Matrix(expr)
    used = {str(s) for s in expr.free_symbols}
    fixed = ExactValues({k: v for k, v in params.items() if k in used}).exact(expr)
    fn = sp.lambdify([list(coords)], list(fixed), modules="numpy")
    return lambda theta: np.asarray(fn(list(theta)), dtype=float).reshape(-1)


def gradient_function(loss: sp.Expr, coords: Sequence[sp.Symbol]) -> Field:
    """∇L of a sympy loss as a numpy callable θ -> ∇L(θ)."""
    return lambdify_vector(sp.Matrix([sp.diff(loss, x) for x in coords]), coords, {})


class SympyLoss:
    """A concrete sympy loss L(coords) as numeric contractions
    θ, w_1..w_k ↦ ∇^{k+1}L(θ)[w_1, …, w_k] (each lambdified once, on first use)."""

    def __init__(self, loss: sp.Expr, coords: Sequence[sp.Symbol]) -> None:
        if not coords:
            raise NmechError("coords must name at least one coordinate")
        self.loss, self.coords = sp.sympify(loss), list(coords)
        extra = sorted(str(s) for s in self.loss.free_symbols - set(self.coords))
        if extra:
            raise NmechError(f"the loss depends on {', '.join(extra)}: give a value or a coord")
        self.value = sp.lambdify([self.coords], self.loss, modules="numpy")

    @cache  # noqa: B019 -- one per loss
    def contraction(self, k: int) -> Callable[..., list[float]]:
        n = len(self.coords)
        slots = [list(sp.symbols(f"_w{i}_0:{n}")) for i in range(k)]
        directional = self.loss
        for w in slots:  # D_w of the previous directional derivative
            directional = sp.Add(*[sp.diff(directional, x) * wj for x, wj in zip(self.coords, w)])
        gradient = [sp.diff(directional, x) for x in self.coords]
        return sp.lambdify([self.coords, *slots], gradient, modules="numpy")

    def at(
        self, theta: np.ndarray, values: ExactValues, leaves: Mapping[str, np.ndarray] | None = None
    ) -> PointEvaluator:
        """A point evaluator at θ (``leaves``: values of vector leaves other than θ)."""
        point = np.asarray(theta, dtype=float).reshape(-1)
        if point.size != len(self.coords):
            raise NmechError(f"theta has {point.size} entries, the loss {len(self.coords)} coords")

        def differential(children: Sequence[np.ndarray]) -> np.ndarray:
            fn = self.contraction(len(children))
            return np.asarray(fn(list(point), *map(list, children)), dtype=float).reshape(-1)

        return PointEvaluator(
            point,
            values,
            differential,
            "numpy",
            loss=lambda: float(self.value(list(point))),
            leaves=leaves,
        )


def field_function(
    me: ModifiedEquation, loss: sp.Expr, coords: Sequence[sp.Symbol], values: Mapping[str, float]
) -> Field:
    """θ ↦ f̃(θ) = Σ_{k ≤ order} η^k F_k(θ) for a sympy loss, hyper-parameters in one mapping
    keyed by the shared names (``eta`` included; constants of the loss may be given there too)."""
    exact = ExactValues(values)
    eta = _eta(exact)
    terms = float_terms(exact, me.terms)
    concrete = SympyLoss(exact.exact(loss), coords)
    return lambda theta: concrete.at(theta, exact).series(terms, eta)


def state_function(
    me: ModifiedEquation,
    name: str,
    loss: sp.Expr,
    coords: Sequence[sp.Symbol],
    values: Mapping[str, float],
) -> Field:
    """θ ↦ U_s(θ) = Σ_k η^k U_{s,k}(θ), the slow-manifold value of auxiliary state ``name``."""
    if name not in me.states:
        raise NmechError(f"rule '{me.rule.name}' has no state '{name}'")
    exact = ExactValues(values)
    eta = _eta(exact)
    series = float_terms(exact, me.states[name])
    concrete = SympyLoss(exact.exact(loss), coords)
    return lambda theta: concrete.at(theta, exact).series(series, eta)


def _eta(values: ExactValues) -> float:
    if "eta" not in values.floats:
        raise NmechError("no value given for hyper-parameter 'eta'")
    eta = values.floats["eta"]
    if eta <= 0:
        raise NmechError(f"eta must be positive, got {eta}")
    return eta


def integrate(field: Field, theta0: np.ndarray, times: np.ndarray) -> np.ndarray:
    """θ̃(t) at the given times for θ̃' = field(θ̃), θ̃(times[0]) = θ_0 (DOP853, rtol 1e-13);
    ``times`` may run backwards."""
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
        raise NmechError(f"integration of the modified flow failed: {sol.message}")
    return sol.y.T


def integrate_rk4(field: Field, theta0: np.ndarray, times: np.ndarray, substeps: int) -> np.ndarray:
    """θ̃ at ``times`` (an evenly spaced grid) by the classical fixed-step Runge-Kutta method
    with ``substeps`` steps per grid interval: for fields that are only piecewise smooth
    (entry-wise |·| of adaptive rules), where an adaptive high-order method stalls at every
    kink; its error O(h⁴) per unit time, h = Δt/substeps, stays below the compared η^{p+1}."""
    out = np.empty((len(times), np.size(theta0)))
    y = np.asarray(theta0, dtype=float).copy()
    out[0] = y
    for i in range(1, len(times)):
        h = (times[i] - times[i - 1]) / substeps
        for _ in range(substeps):
            k1 = field(y)
            k2 = field(y + h / 2 * k1)
            k3 = field(y + h / 2 * k2)
            k4 = field(y + h * k3)
            y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        out[i] = y
    return out


def tracking_error(
    me: ModifiedEquation,
    loss: sp.Expr,
    coords: Sequence[sp.Symbol],
    theta0: np.ndarray,
    params: Mapping[str, float],
    horizon: float,
) -> float:
    """max_{n ≤ T/η} |θ_n − θ̃(nη)|, the rule started on its slow manifold (states from
    ``me.states`` at θ_0, no first-step override). For an
    :class:`~nmech.derive.AveragedEquation` the same for the average: θ̄_n against its flow
    started at θ̄_0 = Φ(θ_0), the slow-manifold value of the average."""
    eta = float(params["eta"])
    steps = int(round(horizon / eta))
    grad_fn = gradient_function(loss, coords)
    averaged = isinstance(me, AveragedEquation)
    source = me.iterate if averaged else me  # the equation that carries the slow manifold
    states0 = {s: state_function(source, s, loss, coords, params)(theta0) for s in source.states}
    record = me.average if averaged else PARAMETER
    iterates = iterate(
        me.rule, theta0, steps, params, grad_fn, states0=states0, first_step=False, record=record
    )
    field = field_function(me, loss, coords, params)
    start = states0[record] if averaged else theta0
    flow = integrate(field, start, eta * np.arange(steps + 1))
    return float(np.max(np.linalg.norm(iterates - flow, axis=1)))


def fitted_slope(etas: Sequence[float], errors: Sequence[float]) -> float:
    """Least-squares slope of log(error) against log(η)."""
    return float(np.polyfit(np.log(np.asarray(etas)), np.log(np.asarray(errors)), 1)[0])


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
    return fitted_slope(etas, errors), errors
