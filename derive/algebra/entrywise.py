"""Canonical forms of element-wise (scalar) functions, computed in exact polynomial arithmetic.

An element-wise node of the tree algebra applies a scalar function f(x_0, …, x_{k−1}) entry by
entry; f is a rational function of its arguments, of their absolute values |x_j| (Adam's √v on
its slow manifold is |∇L|) and of the parameters, possibly with other functions (exp, log, …)
of these as opaque atoms. Its canonical form is found as follows. For every argument met as
|x| (or sign x), write x = s·a with a = |x| > 0 and s² = 1. Then

    f = Σ_S (Π_{j∈S} s_j) R_S(a, x, p),

with each R_S a rational function (a reduced fraction of polynomials) of the magnitudes, the
other arguments, the parameters and the opaque atoms: the denominator is freed of the signs by
multiplying with its conjugates s_j → −s_j, and s_j² = 1 is the only relation, so the form is
unique. Back in x (s_j a_j = x_j) it reads Σ_S (Π_{j∈S} x_j) R_S/Π_{j∈S}|x_j|, each quotient
factored: e.g. ε/(|x| + ε)², not a quotient of expanded polynomials in x and |x|.

The arithmetic is that of :mod:`nmech.derive.algebra.ratfunc` (FLINT); only the way in (walking
the sympy expression) and out (factored sympy products) touch sympy.
"""

from __future__ import annotations

from collections.abc import Iterable

import sympy as sp

from nmech.derive.algebra.ratfunc import RatFunc, RationalField
from nmech.derive.symbols import HYPERPARAMETERS

Form = dict  # {sign mask (frozenset of signed symbols): RatFunc}
#: The symbols a canonical form's coefficients are factored in (the shared hyper-parameters;
#: every other symbol is an element-wise variable).
PARAMETERS = frozenset(HYPERPARAMETERS.values())


def _signed(f: sp.Expr) -> list[sp.Symbol]:
    """The real symbols met as |x| or sign x (written x = s·a)."""
    found = {a.args[0] for a in f.atoms(sp.Abs, sp.sign) if a.args[0].is_Symbol}
    return sorted(found, key=str)


class _Walker:
    """Converts one sympy expression into its :data:`Form`."""

    def __init__(self, f: sp.Expr) -> None:
        self.signed = _signed(f)
        self.magnitude = {x: sp.Symbol(f"_mag_{x.name}", positive=True) for x in self.signed}
        self.atoms: dict[sp.Expr, sp.Symbol] = {}
        self._named: dict[sp.Expr, sp.Symbol] = {}  # canonical atom -> its generator
        self._collect(f)
        symbols = (f.free_symbols - set(self.signed)) | set(self.magnitude.values())
        self.field = RationalField(symbols | set(self.atoms.values()))
        # each polynomial factor is written in these, with factored coefficients in the
        # parameters (RationalField.to_sympy): (β₂ − β₁)|x| + ε(β₁ + 1)(β₂ − 1)/2, not
        # β₁β₂ε/2 − β₁ε/2 − β₁|x| + β₂ε/2 + β₂|x| − ε/2, whose terms cancel in float64 where
        # β₁ and β₂ meet near 1 (docs/math.md §7)
        self.variables = [s for s in self.field.symbols if s not in PARAMETERS]
        self.back = {m: sp.Abs(x) for x, m in self.magnitude.items()}
        self.back.update({s: e for e, s in self._named.items()})

    def _is_rational_node(self, e: sp.Expr) -> bool:
        if e.is_Atom:
            return e.is_Rational or e.is_Symbol
        if e.is_Add or e.is_Mul:
            return True
        if e.is_Pow:
            return e.exp.is_Integer
        return isinstance(e, (sp.Abs, sp.sign)) and e.args[0] in self.magnitude

    def _collect(self, e: sp.Expr) -> None:
        """Register every opaque atom (a function, a fractional power, a non-rational
        number), its arguments in canonical form."""
        if self._is_rational_node(e):
            for a in e.args:
                self._collect(a)
            return
        if e not in self.atoms:
            inner = e.func(*[canonical(a) for a in e.args]) if e.args else e
            if inner not in self._named:
                self._named[inner] = sp.Symbol(f"_atom{len(self._named)}")
            self.atoms[e] = self._named[inner]

    def form(self, e: sp.Expr) -> Form:
        """The sign-mask form of e."""
        K = self.field
        if e in self.atoms:
            return {frozenset(): K.gen(self.atoms[e])}
        if e.is_Rational:
            return {frozenset(): K.rational(e)}
        if e.is_Symbol:
            if e in self.magnitude:
                return {frozenset({e}): K.gen(self.magnitude[e])}
            return {frozenset(): K.gen(e)}
        if isinstance(e, sp.Abs):
            return {frozenset(): K.gen(self.magnitude[e.args[0]])}
        if isinstance(e, sp.sign):
            return {frozenset({e.args[0]}): K.one}
        if e.is_Add:
            out: Form = {}
            for a in e.args:
                out = add(out, self.form(a))
            return out
        if e.is_Mul:
            out = {frozenset(): K.one}
            for a in e.args:
                out = multiply(out, self.form(a))
            return out
        base, k = self.form(e.base), int(e.exp)
        if k < 0:
            base, k = inverse(base), -k
        out = {frozenset(): K.one}
        for _ in range(k):
            out = multiply(out, base)
        return out

    def expr(self, form: Form) -> sp.Expr:
        """The canonical sympy expression of a form (module docstring)."""
        parts = []
        for mask in sorted(form, key=lambda m: sorted(map(str, m))):
            r = form[mask]
            for x in mask:
                r = r / self.field.gen(self.magnitude[x])
            quotient = self.field.to_sympy(r, self.variables)
            parts.append(sp.Mul(*mask) * quotient.xreplace(self.back))
        return sp.Add(*parts)


def add(a: Form, b: Form) -> Form:
    """a + b, zero entries dropped."""
    out = dict(a)
    for mask, r in b.items():
        total = out.get(mask, 0) + r
        if total == 0:
            out.pop(mask, None)
        else:
            out[mask] = total
    return out


def multiply(a: Form, b: Form) -> Form:
    """a·b with s_j² = 1 (sign masks multiply by symmetric difference)."""
    out: Form = {}
    for ma, ra in a.items():
        for mb, rb in b.items():
            out = add(out, {ma ^ mb: ra * rb})
    return out


def inverse(a: Form) -> Form:
    """1/a: the denominator freed of signs by its conjugates (s_j → −s_j, one sign at a time)."""
    if not a:
        raise ZeroDivisionError("division by an element-wise function that vanishes")
    if len(a) == 1:
        ((mask, r),) = a.items()
        return {mask: 1 / r}
    numerator: Form = {frozenset(): 1}
    for x in sorted(set().union(*a), key=str):
        conjugate = {m: (-r if x in m else r) for m, r in a.items()}
        a, numerator = multiply(a, conjugate), multiply(numerator, conjugate)
    ((mask, r),) = a.items()
    return {m ^ mask: c / r for m, c in numerator.items()}


def canonical(f: sp.Expr) -> sp.Expr:
    """The canonical form of an element-wise function (module docstring)."""
    f = sp.sympify(f)
    if not f.free_symbols and f.is_Rational:
        return f
    walker = _Walker(f)
    return walker.expr(walker.form(f))


def split_linear(
    f: sp.Expr, variables: Iterable[sp.Symbol]
) -> tuple[dict[sp.Symbol, sp.Expr], sp.Expr]:
    """({x: c}, rest) with f = Σ c·x + rest, c free of ``variables`` and rest canonical with no
    such term: the part of f that is linear in its arguments, split off."""
    variables = list(variables)
    f = sp.sympify(f)
    walker = _Walker(f)
    field = walker.field
    form = walker.form(f)
    slopes = {}
    for x in variables:
        # c·x is c·a in the sign-x entry of a signed argument (x = s·a), c·x in the plain one
        signed = x in walker.magnitude
        mask = frozenset({x}) if signed else frozenset()
        v = walker.magnitude[x] if signed else x
        r = form.get(mask)
        term = None if r is None or v not in field.symbols else _linear_term(r, field, v)
        if term is None:
            continue
        slope, linear = term
        if _constant_in(slope, walker, variables):
            slopes[x] = field.to_sympy(slope).xreplace(walker.back)
            form = add(form, {mask: -linear})
    return slopes, walker.expr(form)


def _linear_term(r: RatFunc, field: RationalField, v: sp.Symbol) -> tuple[RatFunc, RatFunc] | None:
    """(c, c·v) for r = N/D with D free of v and c = [v¹]N / D (None when there is no such
    term, or D depends on v)."""
    i = field.symbols.index(v)
    r = r.reduced()
    if r.den.degrees()[i] != 0:
        return None
    linear = {}
    for monom, coeff in zip(r.num.monoms(), r.num.coeffs()):
        if monom[i] == 1:
            linear[monom[:i] + (0,) + monom[i + 1 :]] = coeff
    if not linear:
        return None
    c = field.fraction(field.ctx.from_dict(linear), r.den)
    return c, c * field.gen(v)


def _constant_in(r: RatFunc, walker: _Walker, variables: list[sp.Symbol]) -> bool:
    """Whether r depends on none of the arguments (nor their magnitudes or atoms)."""
    field = walker.field
    r = r.reduced()
    dependent = {walker.magnitude[x] for x in variables if x in walker.magnitude}
    dependent |= {x for x in variables if x in field.symbols}
    dependent |= {s for e, s in walker.atoms.items() if e.free_symbols & set(variables)}
    for i, s in enumerate(field.symbols):
        if s in dependent and (r.num.degrees()[i] or r.den.degrees()[i]):
            return False
    return True
