"""The naive coordinate route to a modified equation: the independent reference.

Everything is a concrete sympy vector in the coordinates of one given loss: the unknown field
coefficients F_k and slow-manifold coefficients U_{s,k} are solved order by order from

    Θ(θ, U(θ)) = φ_η(θ),   Ψ_s(θ, U(θ)) = U_s(φ_η(θ)),   φ_η = Σ_j (η^j/j!) (J_· f̃)^j

with Jacobians, composition (∇L evaluated at the rule's points) and η-derivatives at η = 0.
It shares no code with the tree algebra of :mod:`nmech.derive`, so agreement is a real check;
it is also the baseline the derivation benchmark measures against.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import factorial

import sympy as sp

from nmech.derive.rules import NEXT, PARAMETER, Rule
from nmech.derive.symbols import eta, grad


def _jacobian_apply(G: sp.Matrix, coords: Sequence[sp.Symbol], f: sp.Matrix) -> sp.Matrix:
    return G.jacobian(list(coords)) * f


def _coefficient(expr: sp.Matrix, n: int) -> sp.Matrix:
    return expr.applyfunc(lambda e: sp.expand(sp.diff(e, eta, n).subs(eta, 0) / factorial(n)))


def _evaluate(
    expr: sp.Expr, env: dict[str, sp.Matrix], loss_grad: sp.Matrix, coords: Sequence[sp.Symbol]
) -> sp.Matrix:
    """Substitute vector names by matrices and grad(p) by ∇L(p)."""
    dim = len(coords)
    if expr.is_Symbol and str(expr) in env:
        return env[str(expr)]
    if isinstance(expr, grad):
        p = _evaluate(expr.args[0], env, loss_grad, coords)
        return loss_grad.xreplace(dict(zip(coords, p)))
    if expr.is_Add:
        out = sp.zeros(dim, 1)
        for a in expr.args:
            out += _evaluate(a, env, loss_grad, coords)
        return out
    if expr.is_Mul:
        vec = [a for a in expr.args if a.has(grad) or {str(s) for s in a.free_symbols} & set(env)]
        scalar = sp.Mul(*[a for a in expr.args if a not in vec])
        return scalar * _evaluate(vec[0], env, loss_grad, coords)
    raise ValueError(f"cannot evaluate {expr}")


def naive_modified_field(
    rule: Rule, order: int, loss: sp.Expr, coords: Sequence[sp.Symbol]
) -> list[sp.Matrix]:
    """F_0..F_order of the modified field for a concrete loss, by the coordinate route."""
    dim = len(coords)
    theta = sp.Matrix(coords)
    loss_grad = sp.Matrix([sp.diff(loss, x) for x in coords])
    F: list[sp.Matrix] = []
    U: dict[str, list[sp.Matrix]] = {s: [] for s in rule.states}
    for n in range(order + 2):
        unknown_f = sp.Matrix(sp.symbols(f"f0:{dim}")) if n > 0 else None
        unknown_u = {s: sp.Matrix(sp.symbols(f"u_{i}_0:{dim}")) for i, s in enumerate(U)}
        fields = F + ([unknown_f] if n > 0 else [])
        field = sum((eta**k * f for k, f in enumerate(fields)), sp.zeros(dim, 1))
        series = {s: U[s] + [unknown_u[s]] for s in U}
        env = {PARAMETER: theta}
        env.update(
            {s: sum((eta**k * u for k, u in enumerate(series[s])), sp.zeros(dim, 1)) for s in U}
        )

        def flowed(G: sp.Matrix, field: sp.Matrix = field, n: int = n) -> sp.Matrix:
            out, term = G, G
            for j in range(1, n + 1):
                term = _jacobian_apply(term, coords, field)
                out = out + eta**j / factorial(j) * term
            return out

        for a in rule.step():
            env[a.target] = _evaluate(a.expr, env, loss_grad, coords)
        equations = []
        if n > 0:
            equations += list(_coefficient(env[PARAMETER + NEXT] - flowed(theta), n))
        for s in U:
            equations += list(_coefficient(env[s + NEXT] - flowed(env[s]), n))
        unknowns = ([*unknown_f] if n > 0 else []) + [x for s in U for x in unknown_u[s]]
        (solution,) = sp.solve(equations, unknowns, dict=True) if unknowns else [{}]
        if n > 0:
            F.append(unknown_f.xreplace(solution).applyfunc(sp.simplify))
        for s in U:
            U[s].append(unknown_u[s].xreplace(solution).applyfunc(sp.simplify))
    return F[: order + 1]
