"""Backward error analysis of a rule on its slow manifold, order by order in η.

Unknowns: the modified field f̃(θ) = Σ_k η^k F_k(θ) and, for every auxiliary state s of the rule,
its value on the slow manifold U_s(θ) = Σ_k η^k U_{s,k}(θ). They satisfy, with φ_η the time-η
flow of f̃ and Θ, Ψ_s the rule's updates of θ and s,

    Θ(θ, U(θ)) = φ_η(θ) = exp(η L_f̃) θ,      Ψ_s(θ, U(θ)) = U_s(φ_η(θ)) = exp(η L_f̃) U_s,

where L_f̃ G = G′ f̃ is the Lie derivative. For a one-step rule (no state) this is the
Hairer–Lubich–Wanner recursion f_n = d_n − Σ_{i≥2} (1/i!) Σ D_{f_{k_i}}⋯D_{f_{k_2}} f_{k_1}; a
two-step rule ``theta_prev`` gets U = φ_{−η}, the slow manifold on which the fast mode (root
near β) has decayed. At level n the coefficient of η^n in these equations is linear in the
unknowns (F_{n−1}, U_{s,n}) with scalar coefficients on their bare occurrences, so each level is
a small linear system; occurrences inside derivatives of L (e.g. ∇²L·F_{n−1}) are resolved by
substitution, which terminates because their dependencies form no cycle -- if they do, the
rule has no dimension-free modified equation and the solver says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sympy as sp
from sympy import QQ
from sympy.polys.matrices import DomainMatrix

from nmech.derive.algebra import trees as T
from nmech.derive.algebra.series import Flow, Series
from nmech.derive.bea.expansion import Expander, unknowns
from nmech.derive.rules.rule import NEXT, PARAMETER, Rule
from nmech.derive.symbols import eta
from nmech.errors import NmechError

MAX_ORDER = 12
FIELD = "?F"


def _unknown(state: str) -> str:
    return "?" + state


@dataclass
class SlowManifold:
    """F[k]: coefficient of η^k in the modified field; U[s][k]: of η^k in state s."""

    rule: Rule
    F: list[T.Vec]
    U: dict[str, list[T.Vec]]


class _Solver:
    """Coefficients live in the field Q(parameters) of sympy's polys (canonical and fast);
    they are converted back to sympy expressions at the end."""

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        params = sorted(rule.parameters() - {eta}, key=str)
        self.K = QQ.frac_field(*params) if params else QQ
        self.states = rule.states
        self.F: list[T.Vec] = []
        self.U: dict[str, list[T.Vec]] = {s: [] for s in self.states}
        self.flow = Flow(self.F, convert=self.K.convert)

    # -- series of the known solution, with the level's unknowns in place
    def _state_series(self, s: str) -> Series:
        return [{T.THETA: 1}] if s == PARAMETER else self.U[s]

    def _flowed(self, s: str, n: int) -> T.Vec:
        """Coefficient of η^n in exp(η L_f̃) U_s (θ for s = theta); at level n, F[n−1] and
        U_s[n] are the level's unknowns, so only terms built from F[:n−1] are cached."""
        self.flow.final = n - 1
        return self.flow.coefficient(s, self._state_series(s), n)

    def _updates(self, n: int, assume: bool) -> dict[str, Series]:
        env = {PARAMETER: [{T.THETA: 1}], **{s: self.U[s] for s in self.states}}
        vectors = self.rule.vectors
        expander = Expander(env, vectors, assume_theta_points=assume, convert=self._convert)
        for a in self.rule.step():
            expander.env[a.target] = expander.expand(a.expr, n)
        return expander.env

    def _residuals(self, n: int, assume: bool) -> list[T.Vec]:
        env = self._updates(n, assume)
        eqs = []
        if n > 0:
            eqs.append(T.combine([(1, env[PARAMETER + NEXT][n]), (-1, self._flowed(PARAMETER, n))]))
        for s in self.states:
            eqs.append(T.combine([(1, env[s + NEXT][n]), (-1, self._flowed(s, n))]))
        return eqs

    def _convert(self, c: sp.Expr) -> Any:
        try:
            return self.K.from_sympy(sp.sympify(c))
        except (sp.polys.polyerrors.CoercionFailed, TypeError, ValueError):
            raise NmechError(
                f"coefficient {c} is not a rational function of the rule's parameters"
            ) from None

    def to_sympy(self, v: T.Vec) -> T.Vec:
        """Back to sympy (p/q in lowest terms; factoring is left to the presentation)."""
        return {t: self.K.to_sympy(c) for t, c in v.items() if c != 0}

    # -- one level of the linear system
    def level(self, n: int) -> None:
        names = ([FIELD] if n > 0 else []) + [_unknown(s) for s in self.states]
        if n > 0:
            self.F.append({T.leaf(FIELD): 1})
        for s in self.states:
            self.U[s].append({T.leaf(_unknown(s)): 1})
        solution = self._solve(n, names, self._residuals(n, assume=(n == 0)))
        if n > 0:
            self.F[n - 1] = solution[FIELD]
        for s in self.states:
            self.U[s][n] = solution[_unknown(s)]
        if n == 0:
            self._check_consistent()

    def _solve(self, n: int, names: list[str], eqs: list[T.Vec]) -> dict[str, T.Vec]:
        K = self.K
        bare = DomainMatrix(
            [[K.convert(eq.get(T.leaf(u), 0)) for u in names] for eq in eqs],
            (len(eqs), len(names)),
            K,
        )
        rest = []
        for eq in eqs:
            known, inner = {}, {}
            for t, c in eq.items():
                if T.is_leaf(t) and t[1] in names:
                    continue
                (inner if unknowns({t: 1}) else known)[t] = c
            rest.append((known, inner))
        if not names:
            return {}
        if bare.det() == 0:
            raise NmechError(
                f"the slow manifold is degenerate at order {n}: the rule's states are not "
                "determined by theta (is a state unused, or the momentum equal to 1?)"
            )
        inverse = bare.inv().to_list()
        solution: dict[str, T.Vec] = {u: {} for u in names}
        for _ in range(len(names) + 2):
            rhs = [
                T.combine([(-1, known), (-1, T.substitute(inner, solution))])
                for known, inner in rest
            ]
            new = {
                u: T.simplify(T.combine((inverse[i][r], rhs[r]) for r in range(len(eqs))))
                for i, u in enumerate(names)
            }
            if all(T.is_zero(T.combine([(1, new[u]), (-1, solution[u])])) for u in names):
                return new
            solution = new
        raise NmechError(
            f"no dimension-free slow manifold at order {n}: a state enters its own update "
            "through a derivative of L"
        )

    def _check_consistent(self) -> None:
        env = self._updates(0, assume=False)
        if not T.is_zero(T.combine([(1, env[PARAMETER + NEXT][0]), (-1, {T.THETA: 1})])):
            raise NmechError(
                "theta_next - theta does not vanish as eta -> 0: the rule has no slow flow "
                "(does every change of theta carry a factor eta?)"
            )


def _merged(v: T.Vec) -> T.Vec:
    """The element-wise nodes of a field on the same arguments merged into one."""
    return T.merge_elementwise(v) if any(map(T.is_elementwise, v)) else v


def solve(rule: Rule, order: int) -> SlowManifold:
    """F_0..F_order and the slow manifold of every state through η^{order+1}."""
    if not isinstance(order, int) or isinstance(order, bool):
        raise NmechError(f"order must be an integer, got {order!r}")
    if order < 0 or order > MAX_ORDER:
        raise NmechError(f"order {order} is outside the supported range 0..{MAX_ORDER}")
    solver = _Solver(rule)
    for n in range(order + 2):
        solver.level(n)
    return SlowManifold(
        rule=rule,
        F=[_merged(solver.to_sympy(f)) for f in solver.F],
        U={s: [solver.to_sympy(u) for u in us] for s, us in solver.U.items()},
    )
