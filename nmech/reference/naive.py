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
from sympy.solvers.solveset import NonlinearError

from nmech.derive.rules import NEXT, PARAMETER, Rule
from nmech.derive.symbols import eta, grad, norm


def _jacobian_apply(G: sp.Matrix, coords: Sequence[sp.Symbol], f: sp.Matrix) -> sp.Matrix:
    return G.jacobian(list(coords)) * f


def _coefficient(expr: sp.Matrix, n: int, expand: bool = True) -> sp.Matrix:
    tidy = sp.expand if expand else (lambda e: e)
    return expr.applyfunc(lambda e: tidy(sp.diff(e, eta, n).subs(eta, 0) / factorial(n)))


def _evaluate(
    expr: sp.Expr, env: dict[str, sp.Matrix], loss_grad: sp.Matrix, coords: Sequence[sp.Symbol]
) -> sp.Matrix:
    """Substitute vector names by matrices and grad(p) by ∇L(p), entry by entry (products,
    quotients, powers and functions of vectors act entry-wise; scalars broadcast; norm(x) is
    the scalar √(x·x))."""
    norms = {}
    for n in expr.atoms(norm):
        x = _evaluate(n.args[0], env, loss_grad, coords)
        norms[n] = sp.sqrt(x.dot(x))
    expr = expr.xreplace(norms)
    values = {}
    for g in expr.atoms(grad):
        p = _evaluate(g.args[0], env, loss_grad, coords)
        values[g] = loss_grad.xreplace(dict(zip(coords, p)))
    values.update({s: env[str(s)] for s in expr.free_symbols if str(s) in env})
    entries = [expr.xreplace({k: v[i] for k, v in values.items()}) for i in range(len(coords))]
    return sp.Matrix(entries)


def _is_linear(equation: sp.Expr, unknowns: list[sp.Symbol]) -> bool:
    try:
        sp.linear_eq_to_matrix([equation], unknowns)
    except NonlinearError:
        return False
    return True


def _solve_triangular(equations: list[sp.Expr], unknowns: list[sp.Symbol]) -> dict:
    """Each level's equations are linear in its unknowns once the states they depend on are
    known (an adaptive rule's buffer b⁺ = βb + g/(√v⁺ + ε) needs v's first): solve the linear
    block, substitute, repeat."""
    solution: dict = {}
    pending, remaining = list(equations), list(unknowns)
    while remaining:
        linear = [
            e for e in pending if e.free_symbols & set(remaining) and _is_linear(e, remaining)
        ]
        names = [u for u in remaining if any(e.has(u) for e in linear)]
        if not linear or len(linear) != len(names):
            raise ValueError("the level's equations are not triangular-linear in the unknowns")
        A, b = sp.linear_eq_to_matrix(linear, names)
        solved = dict(zip(names, A.LUsolve(b)))
        solution = {k: v.xreplace(solved) for k, v in solution.items()} | solved
        pending = [e.xreplace(solved) for e in pending if e not in linear]
        remaining = [u for u in remaining if u not in solved]
    return solution


def naive_modified_field(
    rule: Rule, order: int, loss: sp.Expr, coords: Sequence[sp.Symbol], simplify: bool = True
) -> list[sp.Matrix]:
    """F_0..F_order of the modified field for a concrete loss, by the coordinate route.
    ``simplify=False`` skips expanding and simplifying the entries (the |·| and √ of adaptive
    rules make sympy's simplification very slow); compare such results numerically."""
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
            equations += list(_coefficient(env[PARAMETER + NEXT] - flowed(theta), n, simplify))
        for s in U:
            equations += list(_coefficient(env[s + NEXT] - flowed(env[s]), n, simplify))
        unknowns = ([*unknown_f] if n > 0 else []) + [x for s in U for x in unknown_u[s]]
        solution = _solve_triangular(equations, unknowns)
        tidy = sp.simplify if simplify else (lambda e: e)
        if n > 0:
            F.append(unknown_f.xreplace(solution).applyfunc(tidy))
        for s in U:
            U[s].append(unknown_u[s].xreplace(solution).applyfunc(tidy))
    return F[: order + 1]
