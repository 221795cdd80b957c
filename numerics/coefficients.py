"""Exact evaluation of the engine's symbolic coefficients at float hyper-parameter values.

A coefficient c(β, β₁, β₂, ε, …) of a modified equation is a rational function whose poles sit
at β = 1 (and β₁, β₂ = 1). Lambdifying it as sympy stores it (often an expanded denominator
4β⁷ − 28β⁶ + … − 4 for 4(β − 1)⁷) and evaluating in float64 cancels every digit near β = 1.
Here each value x is taken as the exact rational number of its shortest repr,
x ↦ p/q = ``sp.Rational(repr(x))`` (0.999 ↦ 999/1000), c(p/q) is computed exactly in rational
arithmetic, and only the result is rounded once to float64: the float is the correctly rounded
value of c at the decimal numbers the user typed. Element-wise functions f(_e0, …; β, ε) get the
same treatment for their hyper-parameter part: every sub-expression free of the placeholders
collapses to one exact rational before f is turned into array code.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

import sympy as sp

from nmech.derive.algebra import trees as T
from nmech.derive.symbols import exact_values, scalar
from nmech.errors import NmechError


class ExactValues:
    """Hyper-parameter values (one mapping keyed by the shared names: eta, beta, lam, tau,
    beta1, beta2, alpha, eps, or a rule file's own constants) as exact rationals
    (:func:`nmech.derive.symbols.exact_values`: finite, in each parameter's domain), with a
    cache of evaluated coefficients."""

    def __init__(self, values: Mapping[str, float]) -> None:
        names = [scalar(str(k)) for k in values] if isinstance(values, Mapping) else []
        exact = exact_values(values, names)
        self.rationals = {s.name: v for s, v in exact.items()}
        self.floats = {k: float(v) for k, v in self.rationals.items()}
        self._cache: dict[Any, float] = {}
        self._signs: dict[tuple, list[Callable[..., Any]]] = {}

    def exact(self, expr: Any) -> sp.Expr:
        """expr with every hyper-parameter that has a value replaced by its exact rational
        (other symbols -- placeholders, coordinates -- kept). Also for a sympy Matrix."""
        if not isinstance(expr, sp.MatrixBase):
            expr = T.as_expr(expr)
        return expr.xreplace(
            {s: self.rationals[str(s)] for s in expr.free_symbols if str(s) in self.rationals}
        )

    def coefficient(self, c: Any) -> float:
        """The float64 rounding of c at the exact values (c free of placeholders)."""
        key = T.as_expr(c)
        if key in self._cache:
            return self._cache[key]
        value = self.exact(key)
        _require_values(value, set())
        if value.has(sp.zoo, sp.nan, sp.oo, -sp.oo):
            raise NmechError(f"coefficient {key} is singular at the given hyper-parameters")
        number = float(value) if value.is_Rational else float(sp.N(value, 40))
        if not math.isfinite(number):
            raise NmechError(f"coefficient {key} overflows float64 at the given hyper-parameters")
        self._cache[key] = number
        return number

    def vec(self, v: Mapping[T.Tree, Any]) -> dict[T.Tree, float]:
        """A linear combination of trees with float coefficients (zeros dropped)."""
        out = {t: self.coefficient(c) for t, c in v.items()}
        return {t: c for t, c in out.items() if c != 0.0}

    def elementwise(self, f: sp.Expr, arity: int, module: str) -> Callable[..., Any]:
        """f(_e0, .., _e{arity-1}) as array code of ``module`` ("numpy" or "torch"), every
        hyper-parameter sub-expression folded to one exact rational first."""
        exact = self.exact(f)
        _require_values(exact, {T.placeholder(j) for j in range(arity)})
        return _lambdified(exact, arity, module)

    def sign_arguments(self, f: sp.Expr, arity: int, module: str) -> list[Callable[..., Any]]:
        """Array code of every sub-expression of f whose sign f depends on piecewise: the
        argument x of each sign x and of each 1/|x|^k (sign x = x/|x| in canonical form). f is
        the field of one region of fixed signs; where such an x has a zero entry it has none
        (:meth:`nmech.numerics.differentials.PointEvaluator.tree` refuses the point)."""
        key = (f, arity, module)
        if key not in self._signs:
            self._signs[key] = self._sign_arguments(f, arity, module)
        return self._signs[key]

    def _sign_arguments(self, f: sp.Expr, arity: int, module: str) -> list[Callable[..., Any]]:
        exact = self.exact(f)
        found = {a.args[0] for a in exact.atoms(sp.sign)}
        found |= {
            p.base.args[0]
            for p in exact.atoms(sp.Pow)
            if isinstance(p.base, sp.Abs) and p.exp.is_negative
        }
        return [_lambdified(x, arity, module) for x in sorted(found, key=sp.default_sort_key)]


def _require_values(expr: sp.Expr, allowed: set[sp.Symbol]) -> None:
    missing = sorted(str(s) for s in expr.free_symbols - allowed)
    if missing:
        raise NmechError(f"no value given for hyper-parameter(s) {', '.join(missing)}")


@lru_cache(maxsize=1024)
def _lambdified(f: sp.Expr, arity: int, module: str) -> Callable[..., Any]:
    # the engine's sign (derivative 0 on a region of fixed signs) is sympy's sign as a number
    f = f.replace(lambda e: isinstance(e, sp.sign), lambda e: sp.sign(*e.args))
    return sp.lambdify([T.placeholder(j) for j in range(arity)], f, modules=module)
