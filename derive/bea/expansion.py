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
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cache, lru_cache
from math import factorial
from typing import Any

import sympy as sp

from nmech.derive.algebra import trees as T
from nmech.derive.algebra.series import Series, gradient_at, zero_series
from nmech.derive.symbols import eta, grad, sign
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
