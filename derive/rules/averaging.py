"""Rules built from a base rule: an average of its iterates, Lookahead, schedule-free SGD.

* :func:`ema` adds the exponential (Polyak–Ruppert) average θ̄⁺ = γθ̄ + (1 − γ)θ⁺ of the base
  rule's iterates, declared as the rule's average (its flow is derived by
  :func:`~nmech.derive.bea.averaged.averaged_equation`).
* :func:`lookahead` (Zhang, Lucas, Hinton & Ba 2019) writes one outer step as one rule: from the
  slow weights θ, k inner steps of the base rule (θ_1 … θ_k; the base's states, e.g. a momentum
  buffer, carried from one outer step to the next), then θ⁺ = θ + ρ(θ_k − θ), the fast weights
  reset to θ⁺. Its modified equation is that of the slow weights with one outer step taking
  time η: t = nη after n outer steps (k·n inner steps), so its leading term is −kρ∇L; in the
  inner steps' time t' = knη the field is the same divided by k.
* :func:`schedule_free` is schedule-free SGD (Defazio et al. 2024) with a constant averaging
  weight 1 − γ: y = (1 − β)z + βx, z⁺ = z − η∇L(y), x⁺ = γx + (1 − γ)z⁺, the average x
  declared. Its weights c_{t+1} = 1/(t + 1) do not fit (docs/math.md §11): x then keeps the
  memory of the whole path and there is no slow manifold and no autonomous modified equation.
"""

from __future__ import annotations

import sympy as sp

from nmech.derive.rules.rule import NEXT, PARAMETER, PREV, Assignment, Rule
from nmech.derive.symbols import beta, eta, gamma, grad, rho, vector
from nmech.errors import NmechError

AVERAGE = "avg"
MAX_INNER_STEPS = 16


def ema(base: Rule, average: str = AVERAGE) -> Rule:
    """``base`` with the exponential average θ̄⁺ = γθ̄ + (1 − γ)θ⁺ of its iterates as the
    declared state ``average`` (γ = ``gamma``; θ̄ starts at θ_0)."""
    if average in base.vectors or average + NEXT in base.vectors:
        raise NmechError(f"rule '{base.name}' already uses the name '{average}'")
    update = gamma * vector(average) + (1 - gamma) * vector(PARAMETER + NEXT)
    return Rule(
        name=f"ema({base.name})",
        assignments=(*base.assignments, Assignment(average + NEXT, update)),
        first_step=base.first_step,
        defaults=base.defaults,
        averages=(*base.averages, average),
    )


def schedule_free() -> Rule:
    """Schedule-free SGD with constant weight: y = (1 − β)z + βx, z⁺ = z − η∇L(y),
    x⁺ = γx + (1 − γ)z⁺ (module docstring); z is the rule's θ, x its declared average."""
    z, x, y = vector(PARAMETER), vector("x"), vector("y")
    return Rule(
        name="schedule-free",
        assignments=(
            Assignment("y", (1 - beta) * z + beta * x),
            Assignment(PARAMETER + NEXT, z - eta * grad(y)),
            Assignment("x" + NEXT, gamma * x + (1 - gamma) * vector(PARAMETER + NEXT)),
        ),
        averages=("x",),
    )


def lookahead(base: Rule, k: int) -> Rule:
    """One outer step of Lookahead over ``base`` with ``k`` inner steps and slow step ρ
    (module docstring), as one rule on the slow weights θ. The base's states are carried
    across outer steps (the inner optimizer keeps its state; its first-step override applies to
    the very first inner step); a two-step base (``theta_prev``)
    is refused, its state being undefined across the reset: write its momentum as a buffer
    (``torch-sgd``). Temporaries of inner step i are suffixed ``_i``."""
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_INNER_STEPS:
        raise NmechError(f"lookahead: k must be an integer in 1..{MAX_INNER_STEPS}, got {k!r}")
    if base.implicit_previous() or base.averages:
        raise NmechError(
            f"lookahead: the inner rule '{base.name}' needs states defined across the reset of "
            "the fast weights: no X_prev (write momentum as a buffer, e.g. torch-sgd) and no "
            "average"
        )
    if any(s.endswith(PREV) for s in base.states):
        raise NmechError(f"lookahead: state names ending in '{PREV}' are reserved")
    current = {PARAMETER: vector(PARAMETER), **{s: vector(s) for s in base.states}}
    body: list[Assignment] = []
    first: list[Assignment] = []  # the base's first-step overrides, on the very first inner step
    overrides = {a.target: a.expr for a in base.first_step}
    for i in range(1, k + 1):
        renamed: dict[sp.Symbol, sp.Expr] = {vector(n): v for n, v in current.items()}
        for a in base.assignments:
            name = f"{a.target.removesuffix(NEXT)}_{i}"
            body.append(Assignment(name, a.expr.xreplace(renamed)))
            if i == 1 and a.target in overrides:
                first.append(Assignment(name, overrides[a.target].xreplace(renamed)))
            renamed[vector(a.target)] = vector(name)
        current = {s: vector(f"{s}_{i}") for s in (PARAMETER, *base.states)}
    fast = current[PARAMETER]
    theta = vector(PARAMETER)
    body += [Assignment(s + NEXT, current[s]) for s in base.states]
    body.append(Assignment(PARAMETER + NEXT, theta + rho * (fast - theta)))
    return Rule(
        name=f"lookahead({base.name}, k={k})",
        assignments=tuple(body),
        first_step=tuple(first),
        defaults=base.defaults,
    )
