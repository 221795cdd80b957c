"""Exact rational functions of the hyper-parameters: the coefficient field of the engine.

A coefficient of a derivation is an element of Q(p_1, …, p_k), the field of rational functions
of the rule's parameters (β, λ, τ, β₁, β₂, ε, …) with rational coefficients. It is held as a
fraction N/D of integer polynomials (python-flint's ``fmpz_mpoly``, FLINT in C). Its canonical
form (:meth:`RatFunc.reduced`)

    N/D with gcd(N, D) = 1 and the leading coefficient of D positive

is unique; arithmetic reduces lazily: a sum over equal denominators, or over denominators of
which one divides the other ((1 − β)⁵ and (1 − β)⁷, the common case), and a product with a
constant take no gcd; other sums and products take one. Equality is N₁D₂ = N₂D₁, hashing and
output use the canonical form. This is about 30–100× faster than sympy's pure-Python fraction
field, whose gcds were most of the engine's time.

:meth:`RationalField.to_sympy` gives the *stored form* of a coefficient: numerator and
denominator factored into irreducible factors over Q, each factor (p − 1) of a decay parameter p
(β, β₁, β₂, α, γ) written (1 − p). Evaluated in float64 such a product loses only a few ulps per
factor (1 − β is exact for β ∈ [1/2, 1]); the expanded denominator 4β⁷ − 28β⁶ + … − 4 of
4(β − 1)⁷ loses every digit near β = 1. A factor in several parameters that vanishes where its
decays are all 1 is written as a polynomial in their (1 − p) (:meth:`RationalField._at_corner`):
β²γ² + 4β²γ + … − 32βγ + … + 1 as 6(1 − β)² + 12(1 − γ)² − …, whose terms do not cancel near
β = γ = 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from fractions import Fraction
from functools import reduce

import flint
import sympy as sp

from nmech.errors import NmechError

#: Parameters whose factors p − 1 are written 1 − p (the papers' convention, 1 − p > 0).
DECAYS = frozenset({"beta", "beta1", "beta2", "alpha", "gamma"})


class RatFunc:
    """N/D, reduced lazily (see the module docstring); immutable, hashable, and mixes with
    Python ints in arithmetic."""

    __slots__ = ("field", "num", "den", "_hash")

    def __init__(self, field: RationalField, num: flint.fmpz_mpoly, den: flint.fmpz_mpoly) -> None:
        self.field, self.num, self.den = field, num, den
        self._hash: int | None = None

    # -- construction in lowest terms
    def _make(self, num: flint.fmpz_mpoly, den: flint.fmpz_mpoly) -> RatFunc:
        return self.field.fraction(num, den)

    def _lift(self, other: object) -> RatFunc | None:
        if isinstance(other, RatFunc):
            return other
        if isinstance(other, int):
            return self.field.integer(other)
        return None

    def _scaled(self, k: int) -> RatFunc:
        if k == 0:
            return self.field.zero
        return RatFunc(self.field, self.num * k, self.den)

    def reduced(self) -> RatFunc:
        """The canonical form (module docstring)."""
        return self.field.fraction(self.num, self.den)

    # -- arithmetic
    def __add__(self, other: object) -> RatFunc:
        o = self._lift(other)
        if o is None:
            return NotImplemented
        if self.den == o.den:
            return RatFunc(self.field, self.num + o.num, self.den)
        if self.den.is_one():
            return RatFunc(self.field, self.num * o.den + o.num, o.den)
        if o.den.is_one():
            return RatFunc(self.field, self.num + o.num * self.den, self.den)
        q, r = divmod(o.den, self.den)
        if r.is_zero():
            return RatFunc(self.field, self.num * q + o.num, o.den)
        q, r = divmod(self.den, o.den)
        if r.is_zero():
            return RatFunc(self.field, self.num + o.num * q, self.den)
        return self._make(self.num * o.den + o.num * self.den, self.den * o.den)

    __radd__ = __add__

    def __neg__(self) -> RatFunc:
        return RatFunc(self.field, -self.num, self.den)

    def __sub__(self, other: object) -> RatFunc:
        o = self._lift(other)
        return NotImplemented if o is None else self + (-o)

    def __rsub__(self, other: object) -> RatFunc:
        o = self._lift(other)
        return NotImplemented if o is None else o + (-self)

    def __mul__(self, other: object) -> RatFunc:
        if isinstance(other, int):
            return self._scaled(other)
        o = self._lift(other)
        if o is None:
            return NotImplemented
        if self.num.is_zero() or o.num.is_zero():
            return self.field.zero
        if o.den.is_one() and o.num.is_constant():
            return RatFunc(self.field, self.num * o.num, self.den)
        if self.den.is_one() and self.num.is_constant():
            return RatFunc(self.field, self.num * o.num, o.den)
        a, b = self.field.cancelled(self.num, o.den)
        c, d = self.field.cancelled(o.num, self.den)
        return RatFunc(self.field, a * c, b * d)

    __rmul__ = __mul__

    def __truediv__(self, other: object) -> RatFunc:
        o = self._lift(other)
        if o is None:
            return NotImplemented
        return self * o.inverse()

    def __rtruediv__(self, other: object) -> RatFunc:
        o = self._lift(other)
        return NotImplemented if o is None else o * self.inverse()

    def __pow__(self, k: int) -> RatFunc:
        if k < 0:
            return self.inverse() ** (-k)
        return RatFunc(self.field, self.num**k, self.den**k)

    def inverse(self) -> RatFunc:
        """1/(N/D) = D/N."""
        if self.num.is_zero():
            raise ZeroDivisionError("division by a zero coefficient")
        return self._make(self.den, self.num)

    # -- comparison
    def is_zero(self) -> bool:
        """Whether the function is 0."""
        return self.num.is_zero()

    def __bool__(self) -> bool:
        return not self.num.is_zero()

    def __eq__(self, other: object) -> bool:
        o = self._lift(other)
        if o is None:
            return NotImplemented
        if self.den == o.den:
            return self.num == o.num
        return self.num * o.den == o.num * self.den

    def __hash__(self) -> int:
        if self._hash is None:
            r = self.reduced()
            self._hash = hash((str(r.num), str(r.den)))
        return self._hash

    def __repr__(self) -> str:
        return f"({self.num})/({self.den})"

    # -- hand-off
    def as_expr(self) -> sp.Expr:
        """The stored (factored) sympy form, :meth:`RationalField.to_sympy`."""
        return self.field.to_sympy(self)


class RationalField:
    """Q(symbols): see the module docstring. ``convert`` takes sympy rational expressions in
    the symbols (and ints); anything else is an :class:`~nmech.errors.NmechError`. Without
    symbols the field is Q itself and its elements are FLINT rationals (``fmpq``)."""

    def __init__(self, symbols: Iterable[sp.Symbol]) -> None:
        self.symbols = tuple(sorted(set(symbols), key=str))
        names = [f"p{i}" for i in range(len(self.symbols))] or ["p0"]
        self.ctx = flint.fmpz_mpoly_ctx.get(tuple(names), "degrevlex")
        self._gen = {s: self.ctx.gens()[i] for i, s in enumerate(self.symbols)}
        self.zero = self.integer(0)
        self.one = self.integer(1)
        self._cache: dict[sp.Expr, RatFunc] = {}
        one = self.ctx.constant(1)
        self._decay_index = [
            i for i, s in enumerate(self.symbols) if s.is_Symbol and s.name in DECAYS
        ]
        self._decays = {str(self.ctx.gens()[i] - one): self.symbols[i] for i in self._decay_index}

    # -- elements
    def integer(self, n: int) -> RatFunc | flint.fmpq:
        """The constant n."""
        if not self.symbols:
            return flint.fmpq(n)
        return RatFunc(self, self.ctx.constant(n), self.ctx.constant(1))

    def rational(self, q: Fraction | sp.Rational) -> RatFunc | flint.fmpq:
        """The constant p/q."""
        p, d = (int(q.p), int(q.q)) if isinstance(q, sp.Rational) else (q.numerator, q.denominator)
        if not self.symbols:
            return flint.fmpq(p, d)
        return self.fraction(self.ctx.constant(p), self.ctx.constant(d))

    def gen(self, symbol: sp.Symbol) -> RatFunc:
        """The generator for ``symbol``."""
        return RatFunc(self, self._gen[symbol], self.ctx.constant(1))

    def cancelled(
        self, num: flint.fmpz_mpoly, den: flint.fmpz_mpoly
    ) -> tuple[flint.fmpz_mpoly, flint.fmpz_mpoly]:
        """(num, den) divided by their gcd (no sign normalisation)."""
        if den.is_one() or num.is_zero():
            return num, den
        g = num.gcd(den)
        return (num, den) if g.is_one() else (num / g, den / g)

    def fraction(self, num: flint.fmpz_mpoly, den: flint.fmpz_mpoly) -> RatFunc:
        """num/den in lowest terms, the denominator's leading coefficient positive."""
        if den.is_zero():
            raise ZeroDivisionError("division by a zero coefficient")
        if num.is_zero():
            return self.zero
        num, den = self.cancelled(num, den)
        if den.leading_coefficient() < 0:
            num, den = -num, -den
        return RatFunc(self, num, den)

    def convert(self, expr: object) -> RatFunc | flint.fmpq:
        """A sympy rational expression of the symbols (or an int, or an element) as an
        element."""
        if isinstance(expr, (RatFunc, flint.fmpq)):
            return expr
        if isinstance(expr, int):
            return self.integer(expr)
        expr = sp.sympify(expr)
        cached = self._cache.get(expr)
        if cached is None:
            cached = self._cache[expr] = self._from_expr(expr, expr)
        return cached

    def _from_expr(self, e: sp.Expr, whole: sp.Expr) -> RatFunc:
        if e.is_Rational:
            return self.rational(e)
        if e.is_Symbol and e in self._gen:
            return self.gen(e)
        if e.is_Add:
            return reduce(lambda a, b: a + b, (self._from_expr(a, whole) for a in e.args))
        if e.is_Mul:
            return reduce(lambda a, b: a * b, (self._from_expr(a, whole) for a in e.args))
        if e.is_Pow and e.exp.is_Integer:
            base = self._from_expr(e.base, whole)
            if base.is_zero() and e.exp < 0:
                raise NmechError(f"coefficient {whole} divides by zero")
            return base ** int(e.exp)
        raise NmechError(f"coefficient {whole} is not a rational function of the rule's parameters")

    # -- the stored form
    def _poly_expr(self, p: flint.fmpz_mpoly) -> sp.Expr:
        terms = {tuple(m): int(c) for m, c in zip(p.monoms(), p.coeffs())}
        return sp.Poly.from_dict(terms, *self.symbols).as_expr()

    def _at_corner(self, f: flint.fmpz_mpoly) -> sp.Expr | None:
        """f written as a polynomial in (1 − p) for the decays p it reads, when it vanishes
        where they all are 1 (None otherwise): near that corner its terms in powers of p
        cancel, while those in powers of 1 − p are each small (1 − p is exact for
        p ∈ [1/2, 1])."""
        degrees = f.degrees()
        used = [i for i in self._decay_index if degrees[i] > 0]
        if not used:
            return None
        names = self.ctx.names()
        if not f.subs({names[i]: 1 for i in used}).is_zero():
            return None
        gens = self.ctx.gens()
        shifted = f.compose(*(1 - g if i in used else g for i, g in enumerate(gens)))
        base = [sp.Add(1, -s) if i in used else s for i, s in enumerate(self.symbols)]
        return sp.Add(*(
            int(c) * sp.Mul(*(b**e for b, e in zip(base, m, strict=True) if e))
            for m, c in zip(shifted.monoms(), shifted.coeffs(), strict=True)
        ))  # fmt: skip

    def _factored(
        self, p: flint.fmpz_mpoly, variables: frozenset[int] = frozenset()
    ) -> tuple[int, list[tuple[sp.Expr, int]]]:
        """p = content · Π f_i^k_i with each (p − 1) factor of a decay flipped to (1 − p), each
        other factor that vanishes where its decays are 1 written in their 1 − p, and each
        factor in both the generators ``variables`` (indices) and others collected in the
        variables (:meth:`_collected`)."""
        content, factors = p.factor()
        sign = 1
        out = []
        for f, k in factors:
            decay = self._decays.get(str(f))
            if decay is not None:  # f = p − 1 written −(1 − p)
                out.append((sp.Add(1, -decay), int(k)))
                sign *= (-1) ** k
                continue
            used = {i for i, d in enumerate(f.degrees()) if d}
            if used & variables and used - variables:
                out.append((self._collected(f, variables), int(k)))
                continue
            corner = self._at_corner(f)
            out.append((self._poly_expr(f) if corner is None else corner, int(k)))
        return int(content) * sign, out

    @staticmethod
    def _product(content: Fraction, factors: Iterable[tuple[sp.Expr, int]], *more: sp.Expr
                 ) -> sp.Expr:  # fmt: skip
        """content · Π f^k · Π more as one product (sympy distributes a number over a sum only
        when the two are alone: 2(β₂ − β₁)|x| stays so)."""
        rational = sp.Rational(content.numerator, content.denominator)
        return sp.Mul(rational, *(f**k for f, k in factors), *more)

    def _collected(self, f: flint.fmpz_mpoly, variables: frozenset[int]) -> sp.Expr:
        """f as a polynomial in the generators ``variables`` whose coefficients, polynomials in
        the other generators, are each in their stored form (factored, (1 − p) flipped)."""
        by_monomial: dict[tuple[int, ...], dict[tuple[int, ...], int]] = {}
        for m, c in f.to_dict().items():
            key = tuple(e if i in variables else 0 for i, e in enumerate(m))
            rest = tuple(0 if i in variables else e for i, e in enumerate(m))
            by_monomial.setdefault(key, {})[rest] = int(c)
        terms = []
        for key, coefficient in by_monomial.items():
            content, factors = self._factored(self.ctx.from_dict(coefficient))
            monomial = sp.Mul(*(s**e for s, e in zip(self.symbols, key, strict=True) if e))
            terms.append(self._product(Fraction(content), factors, monomial))
        return sp.Add(*terms)

    def to_sympy(self, r: RatFunc | flint.fmpq, variables: Iterable[sp.Symbol] = ()) -> sp.Expr:
        """The stored form of r (module docstring): c · Π n_i^a_i / Π d_j^b_j, factored; a
        factor in both ``variables`` and other symbols is written as a polynomial in the
        variables with coefficients in stored form (e.g. (β₂ − β₁)|x| + ε(β₁ + 1)(β₂ − 1)/2
        in x, not β₁β₂ε/2 − β₁ε/2 − β₁|x| + …, whose terms cancel where β₁ and β₂ meet near
        1)."""
        if isinstance(r, flint.fmpq):
            return sp.Rational(int(r.p), int(r.q))
        if r.is_zero():
            return sp.Integer(0)
        r = r.reduced()
        index = frozenset(self.symbols.index(v) for v in variables)
        cn, num = self._factored(r.num, index)
        cd, den = self._factored(r.den, index)
        return self._product(Fraction(cn, cd), [*num, *((f, -k) for f, k in den)])


def solve_linear(
    matrix: Sequence[Sequence[RatFunc]], field: RationalField
) -> list[list[RatFunc]] | None:
    """The inverse of a square matrix over the field by Gauss–Jordan elimination, or None when
    it is singular."""
    n = len(matrix)
    rows = [
        list(r) + [field.one if i == j else field.zero for j in range(n)]
        for i, r in enumerate(matrix)
    ]
    for col in range(n):
        pivot = next((r for r in range(col, n) if rows[r][col] != 0), None)
        if pivot is None:
            return None
        rows[col], rows[pivot] = rows[pivot], rows[col]
        inv = 1 / rows[col][col]
        rows[col] = [x * inv for x in rows[col]]
        for r in range(n):
            if r != col and rows[r][col] != 0:
                f = rows[r][col]
                rows[r] = [a - f * b for a, b in zip(rows[r], rows[col])]
    return [row[n:] for row in rows]
