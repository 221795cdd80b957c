"""The initial-condition correction of a rule started off its slow manifold.

A state rule (θ, s) ↦ (θ⁺, s⁺) (momentum buffer, previous iterate, …) tracks its modified flow
φ_t at full order only on the slow manifold s = U(θ) (:mod:`~nmech.derive.bea.slow_manifold`).
Started elsewhere -- torch's momentum buffer = first gradient, heavy ball at rest -- the state
relaxes geometrically, and the iterates then shadow the flow from a *shifted* start. Write the
deviation from the manifold as s = U_s(θ) + η^{a_s} w_s (a_s = 1 for a state that tends to θ,
such as ``theta_prev``, else 0, so that w_s = O(1)) and look for the conjugacy

    Φ(θ⁺, w⁺) = φ_η(Φ(θ, w)),      Φ(θ, w) = θ + Σ_{k≥1} η^k Φ_k(θ, w),   Φ_k(θ, 0) = 0.

Then Φ(θ_n, w_n) = φ_{nη}(Φ(θ_0, w_0)) along every run, and since w_n → 0 geometrically,
θ_n − φ_{nη}(θ̃_0) = O(η |w_n|) with the shifted start θ̃_0 = Φ(θ_0, w_0) (the asymptotic
phase of the transient; cf. Kovachki & Stuart 2021 for heavy ball).

*Solving.* Expand both sides in η with w held O(1): w⁺ = M w + O(η). Where the rule is affine
in its states with M = diag(μ_s) (heavy ball, Nesterov, torch's SGD: μ = β), the η^k
coefficient of the conjugacy reads

    Φ_k(θ, M w) − Φ_k(θ, w) = −E_k(θ, w),

with E_k the residual of the lower orders. A term of Φ_k that holds the deviations
w_{s_1}, …, w_{s_d} (an elementary differential with d such leaves) is multiplied by
Π_i μ_{s_i} under w ↦ Mw, so Φ_k = Σ_t −E_k[t]/(Π_i μ_{s_i} − 1) · t: one division per term,
never singular for |μ| < 1; terms without a deviation must vanish (that is the slow manifold).
For heavy ball written as torch's SGD (v⁺ = βv + ∇L, θ⁺ = θ − ηv⁺) this gives
Φ_1 = −β/(1 − β)·w, w = v − U_v(θ): the torch start v_0 = 0 shifts the flow's start by
θ̃_0 − θ_0 = ηβ∇L(θ_0)/(1 − β)² + O(η²).

Where w enters non-polynomially -- the adaptive rules' entry-wise √v and |·| -- the
correction is an infinite sum over the transient with no closed form in these trees; the
solver refuses (NmechError), and callers use a burn-in instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from math import factorial

import sympy as sp
from sympy import QQ
from sympy.polys.rings import ring

from nmech.derive.algebra import trees as T
from nmech.derive.bea.expansion import Expander
from nmech.derive.bea.modified_equation import ModifiedEquation
from nmech.derive.rules.rule import NEXT, PARAMETER
from nmech.derive.symbols import eta
from nmech.errors import NmechError

DIRECTION = "?d"  # the direction leaf of a Taylor expansion (never a rule name)


def deviation(state: str) -> str:
    """The leaf name of state s's deviation w_s from the slow manifold."""
    return f"w[{state}]"


@dataclass(frozen=True)
class InitialCondition:
    """Φ(θ, w) = θ + Σ_k η^k terms[k-1](θ, w) through η^order; ``scales[s]`` is a_s in
    s = U_s(θ) + η^{a_s} w_s and ``rates[s]`` the decay μ_s of w_s (w_s⁺ = μ_s w_s + O(η))."""

    equation: ModifiedEquation
    terms: tuple[T.Vec, ...]
    scales: dict[str, int]
    rates: dict[str, sp.Expr]

    @property
    def order(self) -> int:
        """p: Φ is known through η^p."""
        return self.equation.order


# ---------------------------------------------------------------- η-polynomial combinations
class _Series:
    """Linear combinations whose coefficients are polynomials in η over the field
    Q(parameters) (sympy's polys: exact and fast), truncated at η^order."""

    def __init__(self, parameters: set[sp.Symbol], order: int) -> None:
        params = sorted(parameters - {eta}, key=str)
        self.K = QQ.frac_field(*params) if params else QQ
        self.R, self.eta = ring([eta], self.K)
        self.order = order

    def scalar(self, c: object) -> object:
        """A sympy coefficient (rational function of the parameters, maybe η) in the ring."""
        c = T.as_expr(c)
        num, den = sp.fraction(sp.cancel(c))
        if den.has(eta):
            raise NmechError(f"coefficient {c} has eta in its denominator")
        return self.R(self.K.from_sympy(1 / den)) * self.R.from_expr(num)

    def convert(self, v: Mapping[T.Tree, object]) -> T.Vec:
        return {t: self.scalar(c) for t, c in v.items()}

    def truncate(self, v: Mapping[T.Tree, object], shift: int = 0) -> T.Vec:
        """v / η^shift with powers of η above ``order`` dropped (lower powers must vanish)."""
        out: T.Vec = {}
        for t, c in v.items():
            if any(m[0] < shift and a != 0 for m, a in c.items()):
                raise NmechError(f"internal: term {t} is not O(eta^{shift})")
            kept = {(m[0] - shift,): a for m, a in c.items() if shift <= m[0] <= self.order + shift}
            if kept:
                out[t] = self.R(kept)
        return out

    def coefficient(self, v: Mapping[T.Tree, object], k: int) -> dict[T.Tree, object]:
        """The η^k part, as elements of Q(parameters)."""
        out = {t: c.coeff(self.eta**k) for t, c in v.items()}
        return {t: c for t, c in out.items() if c != 0}

    def from_series(self, series: list[T.Vec]) -> T.Vec:
        return T.combine((self.eta**k, self.convert(v)) for k, v in enumerate(series))

    def lowest(self, v: Mapping[T.Tree, object]) -> int:
        """The lowest power of η in v (order + 1 for an empty v)."""
        return min(
            (m[0] for c in v.values() for m, a in c.items() if a != 0), default=self.order + 1
        )

    def compose(
        self, g: Mapping[T.Tree, object], shift: T.Vec, leaves: Mapping[str, T.Vec]
    ) -> T.Vec:
        """G(θ + shift) by Taylor's formula Σ_m (1/m!) D^m G[shift, …] (shift = O(η)), with
        the other vector leaves replaced by ``leaves`` afterwards. Each of the m copies of
        the shift is cut at the highest power of η that can still reach η^order."""
        d = {T.leaf(DIRECTION): self.R.one}
        out: T.Vec = {}
        term, base = dict(g), self.lowest(g)
        for m in range(self.order + 1 - base):
            if not term:
                break
            top = self.order - base - (m - 1) if m else 0
            cut = self.truncate_at(shift, top)
            part = (
                T.substitute(term, {DIRECTION: cut, **leaves}) if m else T.substitute(term, leaves)
            )
            T.add_to(out, self.truncate(part), self.scalar(sp.Rational(1, factorial(m))))
            term = T.derivative(term, d)
        return out

    def truncate_at(self, v: Mapping[T.Tree, object], top: int) -> T.Vec:
        saved, self.order = self.order, top
        try:
            return self.truncate(v)
        finally:
            self.order = saved


# ---------------------------------------------------------------- the solver
def _deviation_degrees(t: T.Tree, names: Mapping[str, str]) -> dict[str, int]:
    """How many times each state's deviation leaf occurs in t."""
    if T.is_leaf(t):
        return {names[t[1]]: 1} if t[1] in names else {}
    out: dict[str, int] = {}
    for c in T.children(t):
        for s, n in _deviation_degrees(c, names).items():
            out[s] = out.get(s, 0) + n
    return out


def _refuse(rule_name: str, why: str) -> NmechError:
    return NmechError(
        f"no closed-form initial-condition correction for rule '{rule_name}': {why}; "
        "compare after a burn-in instead"
    )


def initial_condition(me: ModifiedEquation) -> InitialCondition:
    """Φ_1..Φ_p for the modified equation ``me`` of order p (see the module docstring)."""
    rule, order = me.rule, me.order
    states = rule.states
    if not states:  # a one-step rule has no transient: Φ = θ
        return InitialCondition(me, tuple({} for _ in range(order)), {}, {})
    S = _Series(set(rule.parameters()), order + 1)
    scales = {s: 1 if me.states[s][0] == {T.THETA: 1} else 0 for s in states}
    names = {deviation(s): s for s in states}
    env = {PARAMETER: [{T.THETA: S.R.one}]}
    for s in states:
        series = [S.convert(u) for u in me.states[s]]
        T.add_to(series[scales[s]], {T.leaf(deviation(s)): S.R.one})
        env[s] = series
    leading = Expander(env, rule.vectors, convert=S.scalar)
    for a in rule.step():  # a cheap pass through η first: refuse entry-wise deviations early
        leading.env[a.target] = leading.expand(a.expr, 1)
        if any(
            T.is_elementwise(t) and _deviation_degrees(t, names)
            for v in leading.env[a.target]
            for t in _walk(v)
        ):
            raise _refuse(
                rule.name, f"a state deviation enters an entry-wise function in '{a.target}'"
            )
    expander = Expander(env, rule.vectors, convert=S.scalar)
    for a in rule.step():
        expander.env[a.target] = expander.expand(a.expr, order + 1)
    stepped = {
        s: T.combine((S.eta**k, v) for k, v in enumerate(expander.env[s + NEXT]))
        for s in (PARAMETER, *states)
    }
    shift = T.combine([(1, stepped[PARAMETER]), (-1, {T.THETA: S.R.one})])
    following: dict[str, T.Vec] = {}
    for s in states:
        on_manifold = S.compose(S.from_series(list(me.states[s])), shift, {})
        w_next = S.truncate(T.combine([(1, stepped[s]), (-1, on_manifold)]))
        following[deviation(s)] = S.truncate(w_next, scales[s])
    rates = _rates(rule.name, S, following, names)
    for v in following.values():
        if any(T.is_elementwise(t) and _deviation_degrees(t, names) for t in _walk(v)):
            raise _refuse(rule.name, "the state deviation enters an entry-wise function")
    S.order = order
    field = S.truncate(S.from_series(list(me.terms)))
    lie = [{T.THETA: S.R.one}]
    for _ in range(order):
        lie.append(S.truncate(T.derivative(lie[-1], field)))
    flow_map = T.combine(
        (S.eta**i * S.scalar(sp.Rational(1, factorial(i))), g) for i, g in enumerate(lie)
    )
    solved: list[T.Vec] = []
    for k in range(1, order + 1):
        phi = T.combine((S.eta ** (j + 1), v) for j, v in enumerate(solved))
        lhs = T.combine([(1, stepped[PARAMETER]), (1, S.compose(phi, shift, following))])
        rhs = S.compose(flow_map, phi, {})
        residual = S.coefficient(T.combine([(1, lhs), (-1, rhs)]), k)
        level = _solve_level(rule.name, residual, rates, names)
        solved.append({t: S.R(c) for t, c in level.items()})
    return InitialCondition(
        me,
        tuple({t: sp.factor(S.K.to_sympy(c.coeff(S.R.one))) for t, c in v.items()} for v in solved),
        scales,
        {s: sp.factor(S.K.to_sympy(r)) for s, r in rates.items()},
    )


def _walk(v: Mapping[T.Tree, object]):
    stack = list(v)
    while stack:
        t = stack.pop()
        yield t
        stack.extend(T.children(t))


def _rates(rule_name: str, S: _Series, following: Mapping[str, T.Vec], names: Mapping[str, str]):
    """μ_s from w⁺ = M w + O(η), refusing a non-diagonal or non-scalar M."""
    rates = {}
    for leaf_name, v in following.items():
        lead = S.coefficient(v, 0)
        if set(lead) - {T.leaf(leaf_name)}:
            raise _refuse(rule_name, f"the deviation of '{names[leaf_name]}' is not rescaled alone")
        rates[names[leaf_name]] = lead.get(T.leaf(leaf_name), S.K.zero)
    return rates


def _solve_level(
    rule_name: str, residual: Mapping[T.Tree, object], rates: Mapping, names: Mapping[str, str]
) -> dict[T.Tree, object]:
    """Φ_k with Φ_k(θ, Mw) − Φ_k(θ, w) = −residual, term by term (in Q(parameters))."""
    out = {}
    for t, c in residual.items():
        degrees = _deviation_degrees(t, names)
        if not degrees:
            raise NmechError(
                f"rule '{rule_name}': the conjugacy has a term without a deviation ({t}); "
                "the slow manifold is inconsistent"
            )
        multiplier = rates[next(iter(degrees))] ** 0
        for s, n in degrees.items():
            multiplier = multiplier * rates[s] ** n
        out[t] = -c / (multiplier - 1)
    return out
