"""Exact discrete dynamics of a symmetry's observable: a closed linear recursion.

No continuum approximation. At step n the rule's vectors are the states s (θ and auxiliary
ones) and the gradient g_n = ∇L(p_n) (linear step, :mod:`nmech.derive.rules.linear_step`). Every
scalar the observable can depend on is a "Gram" entry ⟨a, J b⟩ or ⟨c, a⟩ of two such vectors.
What is known at step n:

* the symmetry, ⟨g_n, J p_n⟩ + ⟨c, g_n⟩ = 0 (on every mini-batch);
* measured signals: ``grad_sq`` ⟨g_n, J g_n⟩, ``step_sq`` ⟨Δ_n, J Δ_n⟩, ``step_grad``
  ⟨Δ_n, J g_n⟩ with Δ_n = θ_{n+1} − θ_n;
* the step maps the state–state entries at n+1 bilinearly onto the entries at n.

Starting from the observable Q_n (⟨θ, Jθ⟩ + 2⟨c, θ⟩, or ⟨c, θ⟩ when J = 0), each quantity is
advanced one step and reduced: its gradient entries are eliminated with the symmetry and the
signals (a linear solve), leaving state–state entries; those not yet spanned become new hidden
quantities (a Krylov closure). The result is h_{n+1} = A h_n + B σ_n with Q_n = h_n[0]; the
first step (torch's buffer initialisation, X_prev = X(0)) gives h_1 = a_1 Q_0 + B_1 σ_0.
For heavy ball this reproduces p_n = β(p_{n−1} + s_{n−1}) − ηλ x_n, x_{n+1} = x_n + 2p_n + s_n.
Signal sets are tried smallest first, in the order of :data:`SIGNALS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from itertools import combinations

import sympy as sp

from nmech.derive.algebra import notation
from nmech.derive.rules.linear_step import Combination, LinearStep, linear_step
from nmech.derive.rules.rule import PARAMETER, Rule, rule_key
from nmech.derive.symbols import beta, eta, lam, tau
from nmech.derive.symmetry.generators import Symmetry
from nmech.errors import NmechError

SIGNALS = ("grad_sq", "step_sq", "step_grad")
SIGNAL_LATEX = {
    "grad_sq": "\\langle g_n, J g_n \\rangle",
    "step_sq": "\\langle \\Delta_n, J \\Delta_n \\rangle",
    "step_grad": "\\langle \\Delta_n, J g_n \\rangle",
    # the adaptive rules' signals (u_n the update direction, :mod:`nmech.derive.symmetry.adaptive`)
    "theta_u": "\\langle J\\theta_n, u_n \\rangle",
    "u_sq": "\\langle u_n, J u_n \\rangle",
    "c_u": "\\langle c, u_n \\rangle",
}


class _NotClosed(Exception):
    pass


def _gram(a: str, b: str) -> sp.Symbol:
    a, b = sorted((a, b))
    return sp.Symbol(f"J[{a},{b}]")


def _lin(a: str) -> sp.Symbol:
    return sp.Symbol(f"c[{a}]")


class _Algebra:
    """Gram entries of one step's vectors under a symmetry."""

    def __init__(self, sym: Symmetry, step: LinearStep) -> None:
        self.sym, self.step = sym, step
        self.state_symbols = set()
        for i, a in enumerate(step.states):
            if sym.has_c:
                self.state_symbols.add(_lin(a))
            if sym.has_J:
                self.state_symbols |= {_gram(a, b) for b in step.states[i:]}

    def bilinear(self, x: Combination, y: Combination) -> sp.Expr:
        if not self.sym.has_J:
            return sp.Integer(0)
        return sp.expand(sum(cx * cy * _gram(a, b) for a, cx in x.items() for b, cy in y.items()))

    def linear(self, x: Combination) -> sp.Expr:
        return (
            sp.expand(sum(c * _lin(a) for a, c in x.items())) if self.sym.has_c else sp.Integer(0)
        )

    def observable(self, x: Combination) -> sp.Expr:
        if self.sym.has_J:
            return self.bilinear(x, x) + 2 * self.linear(x)
        return self.linear(x)

    def constraints(self) -> list[sp.Expr]:
        return [self.bilinear({g: 1}, p) + self.linear({g: 1}) for g, p in self.step.gradients]

    def signals(self, names: tuple[str, ...]) -> list[sp.Expr]:
        if names and not self.sym.has_J:
            raise _NotClosed
        if names and len(self.step.gradients) != 1:
            raise NmechError(
                "the rule evaluates several gradients per step: its recursion needs signals "
                "outside the vocabulary (grad_sq, step_sq, step_grad are per single gradient)"
            )
        delta = self.step.step_of(PARAMETER)
        g = {self.step.gradients[0][0]: 1} if self.step.gradients else {}
        table = {
            "grad_sq": lambda: self.bilinear(g, g),
            "step_sq": lambda: self.bilinear(delta, delta),
            "step_grad": lambda: self.bilinear(delta, g),
        }
        return [table[n]() for n in names]

    def advance(self, f: sp.Expr) -> sp.Expr:
        """f(entries at n+1) as a function of the entries at step n."""
        nxt = self.step.next
        subs = {}
        for i, a in enumerate(self.step.states):
            if self.sym.has_c:
                subs[_lin(a)] = self.linear(nxt[a])
            if self.sym.has_J:
                for b in self.step.states[i:]:
                    subs[_gram(a, b)] = self.bilinear(nxt[a], nxt[b])
        return sp.expand(f.xreplace(subs))

    def reduce(self, f: sp.Expr, names: tuple[str, ...]) -> tuple[sp.Expr, list[sp.Expr]]:
        """Like :meth:`reduce_with`, using the fewest of the allowed signals (so that redundant
        signals never enter with large cancelling coefficients)."""
        for k in range(len(names) + 1):
            for subset in combinations(names, k):
                try:
                    remainder, alphas = self.reduce_with(f, subset)
                except _NotClosed:
                    continue
                used = dict(zip(subset, alphas))
                return remainder, [used.get(n, sp.Integer(0)) for n in names]
        raise _NotClosed

    def reduce_with(self, f: sp.Expr, names: tuple[str, ...]) -> tuple[sp.Expr, list[sp.Expr]]:
        """f = remainder(state entries) + Σ α_i σ_i + Σ ζ_j z_j: (remainder, α)."""
        sigmas, zs = self.signals(names), self.constraints()
        alphas = sp.symbols(f"alpha0:{len(sigmas)}")
        zetas = sp.symbols(f"zeta0:{len(zs)}")
        g = sp.expand(
            f - sum(a * s for a, s in zip(alphas, sigmas)) - sum(z * c for z, c in zip(zetas, zs))
        )
        grad_entries = [
            s for s in g.free_symbols if str(s)[:2] in ("J[", "c[") and s not in self.state_symbols
        ]
        unknowns = list(alphas) + list(zetas)
        values = _solve_linear([g.coeff(q) for q in grad_entries], unknowns)
        if values is None:
            raise _NotClosed
        remainder = sp.expand(g.xreplace(dict(zip(unknowns, values))))
        return remainder, values[: len(sigmas)]


def _solve_linear(eqs: list[sp.Expr], unknowns: list[sp.Symbol]) -> list[sp.Expr] | None:
    """A particular solution (free unknowns set to 0) of linear equations, or None."""
    eqs = [e for e in (sp.cancel(sp.together(e)) for e in eqs) if e != 0]
    if any(not (e.free_symbols & set(unknowns)) for e in eqs):
        return None
    if not eqs:
        return [sp.Integer(0)] * len(unknowns)
    solution = sp.linsolve(eqs, unknowns)
    if not solution:
        return None
    (values,) = solution
    return [sp.cancel(v.xreplace({u: 0 for u in unknowns})) for v in values]


def _express(r: sp.Expr, basis: list[sp.Expr], symbols: set[sp.Symbol]) -> list[sp.Expr] | None:
    """Coefficients k with r = Σ k_i basis_i as functionals, or None."""
    ks = list(sp.symbols(f"k0:{len(basis)}"))
    diff = sp.expand(r - sum(k * b for k, b in zip(ks, basis)))
    return _solve_linear([diff.coeff(s) for s in symbols], ks)


@dataclass(frozen=True)
class NumericRecursion:
    """The exact recursion at numbers, as plain float64 data (each entry an exact rational
    rounded once): h_{n+1} = A h_n + B σ_n (n ≥ 1), h_1 = a1·Q_0 + B1 σ_0, Q_n = h_n[0], σ_n the
    per-step values of ``signals``. What :func:`nmech.numerics.predict` runs as a filter."""

    A: tuple[tuple[float, ...], ...]
    B: tuple[tuple[float, ...], ...]
    a1: tuple[float, ...]
    B1: tuple[tuple[float, ...], ...]
    signals: tuple[str, ...]


def _floats(m: sp.Matrix) -> tuple[tuple[float, ...], ...]:
    if m.free_symbols:
        names = ", ".join(sorted(str(s) for s in m.free_symbols))
        raise NmechError(f"the recursion still depends on {names}: give its value")
    return tuple(tuple(float(x) for x in row) for row in m.tolist())


@dataclass(frozen=True)
class Recursion:
    """h_{n+1} = A h_n + B σ_n (n ≥ 1); h_1 = a1·Q_0 + B1 σ_0; Q_n = h_n[0]."""

    hidden: tuple[sp.Expr, ...]
    signals: tuple[str, ...]
    A: sp.Matrix
    B: sp.Matrix
    a1: sp.Matrix
    B1: sp.Matrix

    def numeric(self) -> NumericRecursion:
        """The matrices as floats (a recursion derived at numbers: no symbol left)."""
        a1 = tuple(row[0] for row in _floats(self.a1))
        return NumericRecursion(
            _floats(self.A), _floats(self.B), a1, _floats(self.B1), self.signals
        )

    def latex(self) -> str:
        """The hidden quantities and the recursion, a line each (signals named in a % line)."""
        h = [sp.Symbol(f"h^{{({i})}}_{{n}}") for i in range(len(self.hidden))]
        h1 = [sp.Symbol(f"h^{{({i})}}_{{n+1}}") for i in range(len(self.hidden))]
        sig = [sp.Symbol("\\mathrm{{{}}}_n".format(n.replace("_", "\\_"))) for n in self.signals]
        lines = [
            f"% signals: {', '.join(f'{n} = {SIGNAL_LATEX[n]}' for n in self.signals) or 'none'}"
        ]
        for i, name in enumerate(self.hidden):
            expr, names = _readable(name)
            lines.append(f"h^{{({i})}}_n = {notation.coefficient(expr, names=names)}")
        for i in range(len(self.hidden)):
            body = notation.coefficient(self._row(i, h, sig))
            lines.append(f"{sp.latex(h1[i])} = {body}")
        return "\n".join(lines)

    def text(self) -> str:
        """The same in plain text: h_i[n] = ⟨Gram entries⟩, h_i[n+1] = Σ A h[n] + Σ B σ[n]."""
        h = [sp.Symbol(f"h{i}[n]") for i in range(len(self.hidden))]
        sig = [sp.Symbol(f"{n}[n]") for n in self.signals]
        lines = [f"h{i}[n] = {notation.plain(name)}" for i, name in enumerate(self.hidden)]
        for i in range(len(self.hidden)):
            lines.append(f"h{i}[n+1] = {notation.plain(self._row(i, h, sig))}")
        return "\n".join(lines)

    def _row(self, i: int, h: list[sp.Symbol], sig: list[sp.Symbol]) -> sp.Expr:
        """Σ_j A_ij h_j + Σ_k B_ik σ_k, each coefficient factored."""
        return sp.Add(
            *[sp.factor(self.A[i, j]) * h[j] for j in range(len(h))],
            *[sp.factor(self.B[i, k]) * sig[k] for k in range(len(sig))],
        )


def _vector_latex(name: str) -> str:
    base, _, suffix = name.partition("_prev")
    base = "\\theta" if base == "theta" else base
    return f"{base}_{{n-1}}" if _ else f"{base}_n"


def _readable(expr: sp.Expr) -> tuple[sp.Expr, dict]:
    """Gram entries J[a,b], c[a] shown as ⟨a_n, J b_n⟩, ⟨c, a_n⟩: (factored expr, LaTeX names)."""
    names = {}
    for s in expr.free_symbols:
        name = str(s)
        if name.startswith("J["):
            a, b = name[2:-1].split(",")
            names[s] = f"\\langle {_vector_latex(a)}, J {_vector_latex(b)} \\rangle"
        elif name.startswith("c["):
            names[s] = f"\\langle c, {_vector_latex(name[2:-1])} \\rangle"
    return sp.factor(expr), names


def _close(rule: Rule, sym: Symmetry, names: tuple[str, ...]) -> Recursion:
    main = _Algebra(sym, linear_step(rule))
    hidden = [main.observable({PARAMETER: 1})]
    rows_a: list[list[sp.Expr]] = []
    rows_b: list[list[sp.Expr]] = []
    i = 0
    while i < len(hidden):
        if len(hidden) > len(main.state_symbols) + 1:
            raise _NotClosed
        remainder, alphas = main.reduce(main.advance(hidden[i]), names)
        coeffs = _express(remainder, hidden, main.state_symbols)
        if coeffs is None:
            hidden.append(remainder)
            coeffs = [0] * (len(hidden) - 1) + [1]
        rows_a.append(coeffs)
        rows_b.append(alphas)
        i += 1
    n = len(hidden)
    A = sp.Matrix([r + [0] * (n - len(r)) for r in rows_a])
    B = sp.Matrix(rows_b) if names else sp.zeros(n, 0)
    first = _Algebra(sym, linear_step(rule, first=True))
    initial: dict[str, Combination] = {}
    for s in first.step.states:
        value = rule.initial_value(s) if s != PARAMETER else sp.Symbol(PARAMETER)
        initial[s] = {str(value): 1} if value != 0 else {}
    q0 = first.observable({PARAMETER: 1})
    a1, b1 = [], []
    for h in hidden:
        remainder, alphas = first.reduce(first.advance(h), names)
        at_start = {}
        for i_, a in enumerate(first.step.states):
            if sym.has_c:
                at_start[_lin(a)] = first.linear(initial[a])
            if sym.has_J:
                for b in first.step.states[i_:]:
                    at_start[_gram(a, b)] = first.bilinear(initial[a], initial[b])
        start = sp.expand(remainder.xreplace(at_start))
        k = _express(start, [q0], first.state_symbols)
        if k is None:
            raise NmechError(
                "the first step needs <theta, J theta> and <c, theta> separately; "
                "give a symmetry with J = 0 or c = 0"
            )
        a1.append(k[0])
        b1.append(alphas)
    B1 = sp.Matrix(b1) if names else sp.zeros(n, 0)
    return Recursion(tuple(hidden), names, A, B, sp.Matrix(a1), B1)


DOMAIN_EDGES = ({lam: 0}, {beta: 0}, {tau: 1}, {lam: 0, beta: 0}, {lam: 0, tau: 1})


def _singular(rec: Recursion) -> bool:
    """Whether a coefficient's denominator vanishes somewhere in the domain (λ = 0, β = 0, τ = 1)."""
    for m in (rec.A, rec.B, rec.a1, rec.B1):
        for c in m:
            den = sp.denom(sp.cancel(c))
            if den.free_symbols - {eta} and any(den.subs(e) == 0 for e in DOMAIN_EDGES):
                return True
    return False


@lru_cache(maxsize=64)
def _derive_cached(rule_key: str, rule: Rule, sym: Symmetry) -> Recursion:
    for k in range(len(SIGNALS) + 1):
        closing = []
        for names in combinations(SIGNALS, k):
            try:
                closing.append(_close(rule, sym, names))
            except _NotClosed:
                continue
        if closing:
            return min(closing, key=lambda r: (_singular(r), len(r.hidden)))
    raise NmechError(
        f"no closed recursion for the {sym.name} observable under rule '{rule.name}' with the "
        f"signals {', '.join(SIGNALS)}"
    )


def derive_recursion(rule: Rule, sym: Symmetry) -> Recursion:
    """The exact recursion: smallest signal set, then regular on the whole parameter domain,
    then fewest hidden quantities. Numeric evaluation re-derives it with the parameter values
    substituted (:meth:`SymmetryDynamics.recursion_at`), so a symbolic form that is singular at an edge
    of the domain (λ = 0, ...) is never evaluated there."""
    return _derive_cached(rule_key(rule), rule, sym)
