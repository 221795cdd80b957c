"""A rule's step as a linear map: next states = combinations of current states and gradients.

For the SGD family every assignment is a linear combination, with scalar coefficients, of the
current states (θ and auxiliary vectors) and of gradients ∇L(p_k) at points p_k that are
themselves such combinations. This is the structure the exact symmetry recursions and the
second-order modified flow are derived from.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from nmech.derive.rules.rule import NEXT, PARAMETER, Rule
from nmech.derive.symbols import grad
from nmech.errors import NmechError

Combination = dict  # dict[str, sp.Expr]: basis name -> coefficient


@dataclass(frozen=True)
class LinearStep:
    """``states``: θ first, then the auxiliary states; ``gradients``: name -> point, in the
    order evaluated; ``next``: state -> combination of states and gradient names."""

    states: tuple[str, ...]
    gradients: tuple[tuple[str, Combination], ...]
    next: dict[str, Combination]

    @property
    def basis(self) -> tuple[str, ...]:
        """The names combinations are written in: the states, then the gradients."""
        return self.states + tuple(g for g, _ in self.gradients)

    def step_of(self, state: str = PARAMETER) -> Combination:
        """Δ = state_next − state as a combination."""
        out = dict(self.next[state])
        out[state] = out.get(state, 0) - 1
        return {k: v for k, v in out.items() if sp.simplify(v) != 0}


def _combination(
    expr: sp.Expr, env: dict[str, Combination], gradients: list[tuple[str, Combination]]
) -> Combination:
    if expr.is_Symbol and str(expr) in env:
        return dict(env[str(expr)])
    if isinstance(expr, grad):
        point = _combination(expr.args[0], env, gradients)
        for name, p in gradients:
            if p == point:
                return {name: sp.Integer(1)}
        name = f"g{len(gradients)}"
        gradients.append((name, point))
        return {name: sp.Integer(1)}
    if expr.is_Add:
        out: Combination = {}
        for a in expr.args:
            for k, v in _combination(a, env, gradients).items():
                out[k] = out.get(k, 0) + v
        return out
    if expr.is_Mul:
        vectors = [
            a for a in expr.args if a.has(grad) or {str(s) for s in a.free_symbols} & set(env)
        ]
        if len(vectors) != 1:
            raise NmechError(f"'{expr}' is not linear in the rule's vectors")
        scalar = sp.Mul(*[a for a in expr.args if a is not vectors[0]])
        return {k: scalar * v for k, v in _combination(vectors[0], env, gradients).items()}
    raise NmechError(f"'{expr}' is not a linear combination of states and gradients")


def linear_step(rule: Rule, first: bool = False) -> LinearStep:
    """The linear structure of one step (``first``: with the first-step overrides)."""
    states = (PARAMETER, *rule.states)
    env: dict[str, Combination] = {s: {s: sp.Integer(1)} for s in states}
    gradients: list[tuple[str, Combination]] = []
    for a in rule.step(first=first):
        env[a.target] = _combination(a.expr, env, gradients)
    nxt = {s: {k: sp.expand(v) for k, v in env[s + NEXT].items()} for s in states}
    return LinearStep(states=states, gradients=tuple(gradients), next=nxt)
