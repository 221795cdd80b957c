"""The modified equations checked on a real network: full-batch iterates vs modified flows.

For a rule, a network's full-batch loss L (float64) and several η at a fixed time T = nη:

1. iterate the rule itself (the numeric interpreter of :mod:`nmech.numerics.simulate`, on
   torch tensors) from θ_0 for n = T/η steps;
2. for each order p = 0..P integrate the order-p modified flow θ̃' = f̃_p(θ̃) (the torch
   hand-off, :mod:`nmech.numerics.torch_field`). Smooth fields (GD, momentum) go to scipy's
   DOP853 (8th order, adaptive, rtol 1e-13): its own error stays far below the smallest
   η^{p+1} compared, and a smooth flow needs ~10² field evaluations whatever η (measured:
   107 on the digits MLP over T = 1), where a fixed-step RK4 would need four per step of the
   rule. The adaptive rules' fields are only piecewise smooth (entry-wise |∇L| has a kink
   wherever a gradient entry changes sign, and a network has thousands of them), where
   DOP853's step control stalls (measured: 24,632 evaluations for Adam's p = 0 flow); they
   take the classical RK4 on the rule's step grid, one RK4 step per step of the rule (its
   O(η⁴) error is far below the O(η²) compared at p ≤ 1; measured on Adam: errors agree
   to 3 digits with two substeps);
3. measure e_p(η) = max_{N ≤ n ≤ T/η} ‖θ_n − θ̃(nη)‖₂ and fit the slope of log e_p against
   log η: p + 1 when the order-p equation is right.

Starts. ``manifold``: auxiliary states on the slow manifold at θ_0 (``ModifiedEquation.states``),
compared from n = 0. ``torch``: states as torch starts them (momentum buffer = first gradient,
Adam's m = v = 0 with bias correction). Where the initial-condition correction exists
(:mod:`nmech.derive.bea.initial_condition`: heavy ball, Nesterov, torch's SGD) the flow starts
from the shadow point Φ(θ_1, w_1) and the comparison counts from the step N with μ^N ≤ η^{p+1}
(μ the transient's decay rate, the residual being O(η μ^n)). Otherwise (Adam, RMSProp) no
closed form exists: after the same burn-in the iterate lies on the slow manifold to
O(η^{p+1}), so the flow starts from θ_N itself; φ_{−Nη}(θ_N), the flow integrated back, is
reported as the shadow start θ̃(0).

The modified-loss route (where L̃ exists through order 1, e.g. GD's L + (η/4)‖∇L‖²):
θ̃' = −s∇L̃ with ∇L̃ by autograd through the hand-off's jvps, compared the same way.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sympy as sp
import torch

from nmech.derive import modified_equation
from nmech.derive.algebra import trees as T
from nmech.derive.bea.initial_condition import initial_condition
from nmech.derive.rules import NEXT, Rule
from nmech.derive.symbols import HYPERPARAMETERS
from nmech.errors import NmechError
from nmech.numerics.coefficients import ExactValues
from nmech.numerics.differentials import shadow_start
from nmech.numerics.flows import fitted_slope, integrate, integrate_rk4
from nmech.numerics.simulate import initial_state, iterate, step
from nmech.numerics.torch_field import TorchField, TorchModifiedLoss, TorchState, TorchTrees
from nmech.numerics.torch_loss import Loss

STARTS = ("manifold", "torch")
MIN_STEPS = 4
RK4_SUBSTEPS = 1
POWER_ITERATIONS = 30


@dataclass(frozen=True)
class FlowSettings:
    """What one ``nmech flow`` run compares (the rule as trained: bias corrections and
    first-step overrides included; derivations take it after its transient)."""

    rule: Rule
    orders: int
    etas: tuple[float, ...]
    horizon: float
    start: str
    hyper: dict[str, float]
    modified_loss: bool = True


@dataclass
class OrderResult:
    errors: dict[float, float] = field(default_factory=dict)
    curves: dict[float, np.ndarray] = field(default_factory=dict)
    burn_in: dict[float, int] = field(default_factory=dict)
    slope: float | None = None


@dataclass
class FlowResult:
    settings: FlowSettings
    orders: dict[int, OrderResult]
    modified_loss: OrderResult | None
    start_note: str
    shadow_offset: dict[float, float]
    largest_curvature: float
    seconds: float
    integrator: str = ""


# ---------------------------------------------------------------- checks
def largest_curvature(loss: Loss, theta: torch.Tensor) -> float:
    """λ_max(∇²L(θ)) by power iteration with Hessian-vector products (no Hessian formed)."""
    gradient = torch.func.grad(loss)
    v = torch.randn(theta.shape, dtype=theta.dtype, generator=torch.Generator().manual_seed(0))
    value = 0.0
    for _ in range(POWER_ITERATIONS):
        v = v / v.norm()
        hv = torch.func.jvp(gradient, (theta,), (v,))[1]
        value = float(v @ hv)
        v = hv
    return abs(value)


def check_settings(settings: FlowSettings, curvature: float) -> None:
    """η > 0 with T/η a whole number of at least 4 steps, and η below the range where the
    flow stops existing: ηλ_max < 1 for GD (log(1 − ηλ) diverges), ηλ_max < (1−β)²/(2(1+β))
    for momentum (the slow root turns complex); at least two η for a slope."""
    if settings.start not in STARTS:
        raise NmechError(f"unknown start '{settings.start}'; choose from {', '.join(STARTS)}")
    if len(set(settings.etas)) < 2:
        raise NmechError("give at least two distinct learning rates (--etas) to fit a slope")
    if not 0 <= settings.orders <= 4:
        raise NmechError(f"--order must be 0..4 here, got {settings.orders}")
    if not (math.isfinite(settings.horizon) and settings.horizon > 0):
        raise NmechError(f"--horizon must be a positive time, got {settings.horizon}")
    beta = settings.hyper.get("beta", 0.0) if _has_momentum(settings.rule) else 0.0
    limit = 1.0 if beta == 0 else (1 - beta) ** 2 / (2 * (1 + beta))
    for eta in settings.etas:
        if not (math.isfinite(eta) and eta > 0):
            raise NmechError(f"learning rate {eta} must be positive and finite")
        steps = settings.horizon / eta
        if abs(steps - round(steps)) > 1e-9 * steps or round(steps) < MIN_STEPS:
            raise NmechError(
                f"--horizon {settings.horizon} is not a whole number (>= {MIN_STEPS}) of "
                f"steps of eta {eta}"
            )
        if not is_entrywise(settings.rule) and eta * curvature >= limit:
            raise NmechError(
                f"eta {eta} is outside the range where the modified flow exists here: "
                f"eta * lambda_max = {eta * curvature:.3g} >= {limit:.3g} "
                f"(lambda_max = {curvature:.3g} at the start); use a smaller eta"
            )


def _has_momentum(rule: Rule) -> bool:
    return bool(rule.states) and not is_entrywise(rule)


def is_entrywise(rule: Rule) -> bool:
    """Whether the rule has entry-wise (Hadamard) operations between vectors."""
    return any(
        e.is_Pow or (e.is_Mul and len([a for a in e.args if _is_vector(a, rule)]) > 1)
        for a in rule.step()
        for e in sp.preorder_traversal(a.expr)
        if _is_vector(e, rule)
    )


def _is_vector(e: sp.Expr, rule: Rule) -> bool:
    return any(str(s) in rule.vectors for s in e.free_symbols) or e.has(sp.Function)


def decay_rate(rule: Rule, hyper: dict[str, float]) -> float:
    """μ = the largest |∂X_next/∂X| at η = 0 over the states X (their linear memory; the
    temporaries of the step substituted), evaluated at the hyper-parameters: the transient
    decays like μ^n. A two-step state X_prev reads its coefficient in X's update."""
    exact = ExactValues(hyper)
    expanded: dict[str, sp.Expr] = {}
    for a in rule.step():
        temporaries = {sp.Symbol(k, commutative=True): v for k, v in expanded.items()}
        expanded[a.target] = a.expr.xreplace(temporaries).xreplace({HYPERPARAMETERS["eta"]: 0})
    rates = []
    for s in rule.states:
        target = s[: -len("_prev")] + NEXT if s.endswith("_prev") else s + NEXT
        rate = sp.diff(expanded[target], sp.Symbol(s, commutative=True))
        if any(str(v) in rule.vectors for v in rate.free_symbols) or rate.has(sp.Function):
            raise NmechError(f"cannot read the decay rate of state '{s}' from the rule")
        rates.append(abs(exact.coefficient(rate)))
    if not rates or max(rates) >= 1:
        raise NmechError(f"the rule's states do not decay (rate {max(rates or [1.0])}): no burn-in")
    return max(rates)


def burn_in_steps(rate: float, eta: float, order: int) -> int:
    """The first step N with rate^N ≤ η^{order+1} (at least 1)."""
    return max(1, math.ceil((order + 1) * math.log(eta) / math.log(rate)))


# ---------------------------------------------------------------- one run
def _numpy_field(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[np.ndarray], np.ndarray]:
    return lambda y: fn(torch.from_numpy(y)).detach().numpy()


def _flow(field_fn, start: np.ndarray, times: np.ndarray, smooth: bool) -> np.ndarray:
    """θ̃ at ``times`` from θ̃(times[0]) = start: DOP853 for smooth fields, RK4 otherwise."""
    if len(times) < 2:
        return np.asarray(start)[None]
    if smooth:
        return integrate(_numpy_field(field_fn), start, times)
    return integrate_rk4(_numpy_field(field_fn), start, times, RK4_SUBSTEPS)


def _compare(iterates: np.ndarray, field_fn, start, first: int, eta: float, smooth: bool):
    """Errors ‖θ_n − θ̃(nη)‖ for n ≥ first, the flow started at step ``first`` from ``start``."""
    times = eta * np.arange(first, iterates.shape[0])
    flow = _flow(field_fn, np.asarray(start), times, smooth)
    return np.linalg.norm(iterates[first:] - flow, axis=1)


def run_flow(
    settings: FlowSettings,
    loss: Loss,
    theta0: torch.Tensor,
    progress: Callable[[str], None],
    curvature: float | None = None,
    checkpoint: Callable[[FlowResult], None] | None = None,
) -> FlowResult:
    """The comparison of the module docstring; ``progress(label)`` after each unit of work;
    ``curvature`` λ_max(∇²L(θ_0)) if already measured (:func:`largest_curvature`);
    ``checkpoint(result so far)`` after each η (slopes once two η are done)."""
    began = time.perf_counter()
    rule, top = settings.rule, settings.orders
    if curvature is None:
        curvature = largest_curvature(loss, theta0)
    check_settings(settings, curvature)
    equations = [modified_equation(rule, p) for p in range(top + 1)]
    gradient = torch.func.grad(loss)
    corrections, start_note = _corrections(settings, equations)
    rate = decay_rate(rule, settings.hyper) if settings.start == "torch" and rule.states else None
    orders = {p: OrderResult() for p in range(top + 1)}
    wanted = settings.modified_loss and top >= 1 and _has_modified_loss(rule)
    modified = OrderResult() if wanted else None
    shadow_offset: dict[float, float] = {}
    smooth = not is_entrywise(rule)
    theta0_np = theta0.detach().numpy()
    for eta in settings.etas:
        values = {**settings.hyper, "eta": eta}
        steps = round(settings.horizon / eta)
        states0, first_step = None, settings.start == "torch"
        if settings.start == "manifold":
            states0 = _manifold_states(equations[-1], loss, values, theta0)
            run_rule = equations[-1].rule
        else:
            run_rule = rule
        iterates = (
            iterate(run_rule, theta0, steps, values, gradient, states0, first_step).detach().numpy()
        )
        progress(f"iterates eta={eta}")
        for p in range(top + 1):
            field_fn = TorchField(equations[p], loss, values)
            first, start = _start(settings, p, eta, rate, corrections, loss, values, theta0)
            if start is None:
                start = iterates[first]
            errors = _compare(iterates, field_fn, start, first, eta, smooth)
            if settings.start == "torch" and p == top:
                shadow_offset[eta] = _shadow_offset(field_fn, start, first, eta, theta0_np, smooth)
            _record(orders[p], eta, errors, first)
            progress(f"order {p} eta={eta}")
        if modified is not None:
            route = TorchModifiedLoss(equations[1], loss, values)
            grad_route = torch.func.grad(route)

            def gradient_flow(theta, g=grad_route, s=route.scale):
                return -s * g(theta)

            first, start = _start(settings, 1, eta, rate, corrections, loss, values, theta0)
            start = iterates[first] if start is None else np.asarray(start)
            errors = _compare(iterates, gradient_flow, start, first, eta, smooth)
            _record(modified, eta, errors, first)
            progress(f"modified loss eta={eta}")
        for result in [*orders.values(), *([modified] if modified else [])]:
            if len(result.errors) > 1:
                result.slope = fitted_slope(list(result.errors), list(result.errors.values()))
        finished = FlowResult(
            settings,
            orders,
            modified,
            start_note,
            shadow_offset,
            curvature,
            time.perf_counter() - began,
            "DOP853 rtol 1e-13" if smooth else f"RK4, {RK4_SUBSTEPS} step per step",
        )
        if checkpoint is not None:
            checkpoint(finished)
    return finished


def _manifold_states(me, loss: Loss, values: dict, theta0: torch.Tensor) -> dict:
    """The states' slow-manifold values at θ_0, refusing a truncated series that leaves the
    range of its state (a second-moment buffer v ≈ ∇L⊙∇L + O(η) turning negative where
    gradient entries are small: the expansion is not uniform there)."""
    states = {}
    for s in me.states:
        value = TorchState(me, s, loss, values)(theta0)
        leading = me.states[s][0]
        nonnegative = leading and all(
            T.is_elementwise(t) and t[2].is_nonnegative and c > 0 for t, c in leading.items()
        )
        if nonnegative and bool((value < 0).any()):
            count = int((value < 0).sum())
            raise NmechError(
                f"--start manifold: the slow-manifold series of state '{s}' is negative in "
                f"{count} entries at eta {values['eta']} (it is not uniform where gradient "
                "entries are small); use --start torch"
            )
        states[s] = value
    return states


def _record(result: OrderResult, eta: float, errors: np.ndarray, first: int) -> None:
    result.errors[eta] = float(errors.max())
    result.curves[eta] = errors
    result.burn_in[eta] = first


def _has_modified_loss(rule: Rule) -> bool:
    try:
        return modified_equation(rule, 1).modified_loss().exists_through >= 1
    except NmechError:
        return False


def _corrections(settings: FlowSettings, equations) -> tuple[list | None, str]:
    if settings.start == "manifold":
        return None, "auxiliary states on the slow manifold at theta_0; compared from step 0"
    if not settings.rule.states:
        return None, "a one-step rule: no transient, compared from step 0"
    try:
        found = [initial_condition(me) for me in equations]
    except NmechError as exc:
        return None, (
            f"{exc}. The flow starts from theta_N after a burn-in of N steps with "
            "mu^N <= eta^(p+1) (mu the slowest decay rate of the states); phi_(-N eta)(theta_N) "
            "is the shadow start"
        )
    return found, (
        "torch's start corrected: the flow starts from the shadow point Phi(theta_1, w_1) "
        "(initial-condition correction through eta^p); compared from the step N with "
        "mu^N <= eta^(p+1), mu the transient's decay rate"
    )


def _start(settings, p, step_size, rate, corrections, loss, values, theta0):
    """(first compared step, flow start or None for 'the iterate at that step')."""
    if settings.start == "manifold" or not settings.rule.states:
        return 0, theta0.detach().numpy()
    first = burn_in_steps(rate, step_size, p)
    if corrections is None:
        return first, None
    rule = settings.rule
    exact = ExactValues(values)
    gradient = torch.func.grad(loss)
    state, _ = step(rule, initial_state(rule, theta0), values, gradient, first=True, n=1)
    trees = TorchTrees(loss, exact)
    shifted = shadow_start(
        corrections[p],
        trees.at,
        state["theta"],
        {s: state[s] for s in rule.states},
        exact,
    )
    if first == 1:
        return first, shifted.detach().numpy()
    flow = TorchField(corrections[p].equation, loss, values)
    times = step_size * np.arange(1, first + 1)
    return first, _flow(flow, shifted.detach().numpy(), times, True)[-1]


def _shadow_offset(field_fn, start, first: int, eta: float, theta0, smooth: bool) -> float:
    """‖θ̃(0) − θ_0‖ for θ̃(0) = φ_{−first·η}(start), the flow integrated back."""
    back = _flow(field_fn, np.asarray(start), eta * np.arange(first, -1, -1), smooth)
    return float(np.linalg.norm(back[-1] - theta0))


def summary(result: FlowResult) -> dict[str, Any]:
    """flow.json's body (see :mod:`nmech.validation.flow.report`)."""
    s = result.settings

    def table(r: OrderResult) -> dict[str, Any]:
        return {
            "errors": {repr(e): v for e, v in r.errors.items()},
            "burn_in": {repr(e): n for e, n in r.burn_in.items()},
            "slope": r.slope,
        }

    return {
        "rule": s.rule.name,
        "orders": list(result.orders),
        "etas": list(s.etas),
        "errors": {str(p): table(r)["errors"] for p, r in result.orders.items()},
        "slopes": {str(p): r.slope for p, r in result.orders.items()},
        "expected_slopes": {str(p): p + 1 for p in result.orders},
        "burn_in": {str(p): table(r)["burn_in"] for p, r in result.orders.items()},
        "modified_loss": table(result.modified_loss) if result.modified_loss else None,
        "start": s.start,
        "start_note": result.start_note,
        "shadow_start_offset": {repr(e): v for e, v in result.shadow_offset.items()},
        "largest_curvature": result.largest_curvature,
        "seconds": result.seconds,
    }
