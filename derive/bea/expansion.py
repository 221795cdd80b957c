"""η-expansion of a rule's expressions along its slow manifold.

Every vector name of a rule is given as a power series in η whose coefficients are linear
combinations of trees (:mod:`nmech.derive.algebra.trees`); ``expand`` turns an expression of the rule
into such a series, truncated at a given order. ``grad(p)`` with p = θ + δ, δ = O(η), is
expanded by Taylor's formula  ∇L(θ + δ) = Σ_m (1/m!) ∇^{m+1}L(θ)[δ, …, δ]
(:func:`nmech.derive.algebra.series.gradient_at`).

Expressions that are not linear in their vectors (element-wise products, quotients, powers and
``sqrt`` of vectors: the adaptive optimizers) are scalar functions h(a_1, …, a_k) applied
entry-wise to vector atoms a_i (names and gradients); with a_i = Σ_j η^j A_ij their η^n
coefficient is (1/n!) dⁿ/dηⁿ h(Σ_j η^j A_ij)|_{η=0}, a scalar function of the A_ij computed by
sympy and applied entry-wise (:func:`nmech.derive.algebra.trees.apply`).

``sign(X)`` (:class:`~nmech.derive.symbols.sign`) is locally constant on a region where X keeps
its signs, so with X = Σ_j η^j X_j its series is sign(X_0) alone: every higher coefficient is 0.
X_0 must not vanish (a sign of zero has no such region, and is refused).

``norm(X)`` (:class:`~nmech.derive.symbols.norm`, the global Euclidean norm) is a scalar that
may only multiply a vector, raised to an integer power. With X = Σ_j η^j X_j and X_0 = c·t one
tree (c a coefficient of known sign),

    ‖X‖^k = |c|^k ‖t‖^k (1 + y)^{k/2},   y = Σ_{n≥1} η^n Σ_{i+j=n} ⟨X_i, X_j⟩ / (c²‖t‖²),

expanded by the binomial series; its coefficients are monomials in ‖·‖ and ⟨·,·⟩ of trees
(scaled trees, :class:`~nmech.derive.algebra.trees.Scaled`). X_0 = 0 has no smooth norm and is
refused, as are several trees at η = 0 and norms of a rule's state (unknowns of the solver).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cache, lru_cache
from math import factorial
from typing import Any

import sympy as sp

from nmech.derive.algebra import trees as T
from nmech.derive.algebra.series import Series, gradient_at, zero_series
from nmech.derive.symbols import eta, grad, norm, sign
from nmech.errors import NmechError


@lru_cache(maxsize=4096)
def scalar_series(c: sp.Expr, order: int) -> tuple[sp.Expr, ...]:
    """Coefficients c_0..c_order of a scalar c(η) = Σ c_k η^k, for c = P(η)/Q(η) a rational
    function of η with Q(0) ≠ 0 (power-series division c_k = (p_k − Σ_{i≥1} q_i c_{k−i})/q_0).
    Anything else (η**β, √η, 1/η, …) has no Taylor series at η = 0 and is refused."""
    if not c.has(eta):
        return (c,) + (sp.Integer(0),) * order
    if not c.is_rational_function(eta):
        raise NmechError(
            f"coefficient {c} is not a rational function of eta (no Taylor series at eta = 0)"
        )
    num, den = sp.fraction(sp.cancel(sp.together(c)))
    p, q = sp.Poly(num, eta), sp.Poly(den, eta)
    q0 = q.coeff_monomial(1)
    if q0 == 0:
        raise NmechError(f"coefficient {c} is singular at eta = 0 (no Taylor series)")
    coeffs: list[sp.Expr] = []
    for k in range(order + 1):
        lagged = sum(q.coeff_monomial(eta**i) * coeffs[k - i] for i in range(1, k + 1))
        coeffs.append(sp.cancel((p.coeff_monomial(eta**k) - lagged) / q0))
    return tuple(coeffs)


class Expander:
    """Expands rule expressions given the series of the rule's vector names.

    ``assume_theta_points``: at the lowest level the slow manifold is not yet known, so a
    gradient's point is taken to be θ at O(1); the solver checks this afterwards.
    """

    def __init__(
        self,
        env: Mapping[str, Series],
        vectors: frozenset[str],
        assume_theta_points: bool = False,
        convert: Callable[[sp.Expr], Any] = lambda c: c,
    ) -> None:
        self.env = dict(env)
        self.vectors = vectors
        self.assume = assume_theta_points
        self.convert = convert  # sympy coefficient -> the solver's coefficient domain

    def is_vector(self, expr: sp.Expr) -> bool:
        """Whether ``expr`` involves a gradient or one of the rule's vectors."""
        return expr.has(grad) or any(str(s) in self.vectors for s in expr.free_symbols)

    def expand(self, expr: sp.Expr, order: int) -> Series:
        """The η-series of a vector expression of the rule through η^order."""
        if order < 0:
            return []
        if expr.is_Symbol:
            if str(expr) not in self.vectors:
                raise NmechError(f"'{expr}' is a scalar where a vector is expected")
            series = self.env[str(expr)]
            return [series[k] if k < len(series) else {} for k in range(order + 1)]
        if expr.is_Add:
            out = zero_series(order)
            for arg in expr.args:
                if not self.is_vector(arg):
                    raise NmechError(f"term '{arg}' has no vector factor (unknown state name?)")
                for k, v in enumerate(self.expand(arg, order)):
                    T.add_to(out[k], v)
            return out
        if isinstance(expr, norm):
            raise NmechError(f"'{expr}' is a scalar: a norm can only multiply a vector")
        if expr.is_Mul and any(map(_is_norm_power, expr.args)):
            rest = sp.Mul(*[a for a in expr.args if not _is_norm_power(a)])
            if not self.is_vector(rest):
                raise NmechError(f"'{expr}' is a scalar: a norm can only multiply a vector")
            factors = [self._norm_power(a, order) for a in expr.args if _is_norm_power(a)]
            out = self.expand(rest, order)
            for factor in factors:
                out = _series_product(factor, out, order, T.with_factor)
            return out
        if expr.is_Mul:
            vectors = [a for a in expr.args if self.is_vector(a)]
            coeff = sp.Mul(*[a for a in expr.args if not self.is_vector(a)])
            if len(vectors) != 1 or vectors[0].is_Pow:  # entry-wise in its vectors
                inner = self._elementwise(sp.Mul(*vectors), order)
            else:
                inner = self.expand(vectors[0], order)
            return self._scaled(coeff, inner, order)
        if isinstance(expr, grad):
            return self._grad(expr.args[0], order)
        if isinstance(expr, sign):
            return self._sign(expr.args[0], order)
        if expr.is_Pow and self.is_vector(expr.base) and not self.is_vector(expr.exp):
            return self._elementwise(expr, order)
        raise NmechError(f"cannot expand '{expr}' as a vector")

    def _scaled(self, coeff: sp.Expr, inner: Series, order: int) -> Series:
        """The series of c(η)·v for a scalar c and the series ``inner`` of a vector v."""
        cs = [self.convert(c) for c in scalar_series(coeff, order)]
        out = zero_series(order)
        for i, c in enumerate(cs):
            if c != 0:
                for k in range(order + 1 - i):
                    T.add_to(out[i + k], inner[k], c)
        return out

    def _elementwise(self, expr: sp.Expr, order: int) -> Series:
        """η-series of an entry-wise function of the vector atoms of ``expr``."""
        if expr.has(norm):
            raise NmechError(
                f"'{expr}': a norm inside an entry-wise function is not supported (a norm may "
                "only multiply a vector)"
            )
        atoms = sorted(
            {a for a in sp.preorder_traversal(expr) if isinstance(a, grad)}
            | {
                s
                for s in expr.free_symbols
                if str(s) in self.vectors and not self._inside_grad(expr, s)
            },
            key=sp.default_sort_key,
        )
        slots = [sp.Symbol(f"_a{i}", real=True) for i in range(len(atoms))]
        h = expr.xreplace(dict(zip(atoms, slots)))
        if any(str(s) in self.vectors for s in h.free_symbols) or h.has(grad):
            raise NmechError(f"cannot expand '{expr}' entry-wise")
        series = [self.expand(a, order) for a in atoms]
        coefficient = {
            (i, j): sp.Symbol(f"_a{i}_{j}", real=True)
            for i in range(len(atoms))
            for j in range(order + 1)
        }
        h_eta = h.xreplace(
            {
                slot: sp.Add(*[eta**j * coefficient[i, j] for j in range(order + 1)])
                for i, slot in enumerate(slots)
            }
        )
        out = zero_series(order)
        derivative = h_eta
        for n in range(order + 1):
            if n > 0:
                derivative = sp.diff(derivative, eta)
            at_zero = derivative.subs(eta, 0) / factorial(n)
            if at_zero == 0:
                continue
            values = {
                coefficient[i, j]: series[i][j]
                for i in range(len(atoms))
                for j in range(order + 1)
                if at_zero.has(coefficient[i, j])
            }
            if any(not v for v in values.values()):
                at_zero = at_zero.xreplace({x: 0 for x, v in values.items() if not v})
                values = {x: v for x, v in values.items() if v}
            out[n] = T.apply(at_zero, values, convert=self.convert)
        return out

    def _sign(self, argument: sp.Expr, order: int) -> Series:
        """sign(X) = sign(X_0) + 0·η + 0·η² + …, on the region where X_0 keeps its signs."""
        leading = self.expand(argument, 0)[0]
        if not leading:
            raise NmechError(
                f"sign({argument}) of a vector that vanishes at eta = 0: the sign has no region "
                "of fixed signs to expand on"
            )
        x = sp.Dummy("x", real=True)
        return [T.apply(sign(x), {x: leading}, convert=self.convert)] + zero_series(order)[1:]

    def _norm_power(self, expr: sp.Expr, order: int) -> list[dict]:
        """The η-series of ‖X‖^k (module docstring), as {monomial: coefficient} per power."""
        base, k = (expr.base, expr.exp) if expr.is_Pow else (expr, sp.Integer(1))
        if not k.is_Integer:
            raise NmechError(f"'{expr}': a norm may only be raised to an integer power")
        argument = base.args[0]
        X = self.expand(argument, order)
        if any(unknowns(x) for x in X):
            raise NmechError(
                f"norm({argument}) of a rule's state is not supported (only norms of "
                "expressions in theta and gradients)"
            )
        if len(X[0]) != 1:
            what = "vanishes" if not X[0] else "is a sum of several differentials"
            raise NmechError(
                f"norm({argument}) of a vector that {what} at eta = 0: the expansion needs "
                "one nonzero differential there"
            )
        ((t0, c0),) = X[0].items()
        magnitude = sp.Abs(T.as_expr(c0))
        if magnitude.has(sp.Abs):
            raise NmechError(
                f"norm({argument}): the sign of the coefficient {T.as_expr(c0)} is not known"
            )
        n0 = T.norm_atom(t0)
        inverse_square = T.factor_power(n0, -2)
        scale = self.convert(sp.Integer(1)) / (c0 * c0)
        y: list[dict] = [{}]
        for n in range(1, order + 1):
            y_n: dict = {}
            for i in range(n + 1):
                for m, c in T.dot(X[i], X[n - i]).items():
                    T.add_to(y_n, {T.factor_product(m, inverse_square): c * scale})
            y.append(y_n)
        q = sp.Rational(int(k), 2)
        power: list[dict] = [{(): 1}] + [{} for _ in range(order)]  # y^0
        total = [dict(p) for p in power]
        for j in range(1, order + 1):
            power = _series_product(power, y, order, T.factor_product)
            weight = self.convert(sp.binomial(q, j))
            for n in range(order + 1):
                T.add_to(total[n], power[n], weight)
        front, lead = self.convert(magnitude ** int(k)), T.factor_power(n0, int(k))
        return [{T.factor_product(m, lead): c * front for m, c in t.items()} for t in total]

    @staticmethod
    def _inside_grad(expr: sp.Expr, s: sp.Symbol) -> bool:
        """Whether every occurrence of s in expr is inside a gradient's point."""
        return not expr.xreplace({g: sp.Dummy() for g in expr.atoms(grad)}).has(s)

    def _grad(self, point: sp.Expr, order: int) -> Series:
        p = self.expand(point, order)
        base = p[0]
        if not (self.assume and unknowns(base)) and not (len(base) == 1 and base.get(T.THETA) == 1):
            raise NmechError(
                f"grad({point}) is evaluated at a point that does not tend to theta as eta -> 0"
            )
        return gradient_at(p, order, convert=self.convert)


def _is_norm_power(a: sp.Expr) -> bool:
    """Whether a is ‖X‖ or a power of it."""
    return isinstance(a, norm) or (a.is_Pow and isinstance(a.base, norm))


def _series_product(
    a: list[dict], b: list[dict], order: int, times: Callable[[Any, Any], Any]
) -> list[dict]:
    """Σ_n η^n Σ_{i+j=n} a_i b_j through η^order, for a a series of scalar monomial combinations
    and b one of monomial or tree combinations; ``times(monomial, key)`` multiplies keys."""
    out: list[dict] = [{} for _ in range(order + 1)]
    for i, ai in enumerate(a):
        for j in range(min(order + 1 - i, len(b))):
            for m, c in ai.items():
                for key, d in b[j].items():
                    T.add_to(out[i + j], {times(m, key): c * d})
    return out


def unknowns(v: Mapping[T.Tree, object]) -> set[str]:
    """Names of the solver's unknown leaves (named ``?...``) occurring in v."""
    names: set[str] = set()
    for t in v:
        names |= _unknowns_in(t)
    return names


@cache
def _unknowns_in(t: T.Tree) -> frozenset[str]:
    """The unknown leaves of one tree (each subtree looked at once)."""
    if T.is_leaf(t):
        return frozenset({t.name}) if t.name.startswith("?") else frozenset()
    return frozenset().union(*map(_unknowns_in, T.children(t)))
