"""η-series of tree combinations, and the two operations every derivation shares.

A :data:`Series` is a list whose entry p is the coefficient of η^p, a linear combination of
trees (:data:`~nmech.derive.algebra.trees.Vec`).

* Taylor's formula for a gradient at a displaced point (:func:`gradient_at`): with
  δ = Σ_{p≥1} η^p δ_p,

      ∇L(θ + δ) = Σ_m (1/m!) ∇^{m+1}L(θ)[δ, …, δ],

  whose η^k coefficient is Σ_m (1/m!) Σ_{k_1+…+k_m = k} ∇^{m+1}L[δ_{k_1}, …, δ_{k_m}] over the
  ordered compositions of k (every k_i ≥ 1).
* The flow of a modified field f̃ = Σ_k η^k F_k applied to a series G (:class:`Flow`): the
  time-τη map of f̃ acts on functions by the Lie series

      exp(τη L_f̃) G = Σ_j ((τη)^j / j!) L_f̃^j G,        L_f̃ G = G′ f̃,

  whose η^n coefficient is Σ_j (τ^j / j!) [η^{n−j}] L_f̃^j G, with
  [η^m] L_f̃^j G = Σ_{a ≤ m} D([η^a] L_f̃^{j−1} G)[F_{m−a}]. Backward error analysis inverts
  this map order by order: the slow manifold of a rule (:mod:`nmech.derive.bea.slow_manifold`,
  τ = 1) and the epoch of mini-batch SGD (:mod:`nmech.derive.stochastic.minibatch`, τ = the
  number of steps).
* The field of a given near-identity map (:func:`field_of_map`): the f̃ whose time-τη flow is
  θ ↦ θ + Σ_{p≥1} η^p d_p(θ), from τF_{p−1} = d_p − Σ_{j≥2} (τ^j/j!) [η^{p−j}] L_f̃^j θ (the
  mean epoch of mini-batch SGD, and the change of variables to an averaged iterate,
  :mod:`nmech.derive.bea.averaged`).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from math import factorial, gcd, lcm
from typing import Any

import flint
import sympy as sp

from nmech.derive.algebra import trees as T

Series = list  # list[T.Vec], index = power of η
Convert = Callable[[sp.Expr], Any]


def zero_series(order: int) -> Series:
    """The series 0 + 0·η + … + 0·η^order."""
    return [{} for _ in range(order + 1)]


def _identity(c: sp.Expr) -> Any:
    return c


def gradient_at(
    delta: Series, order: int, label: str | None = None, convert: Convert = _identity
) -> Series:
    """∇L(θ + δ) through η^order (∇L̂_label with a label), δ = Σ_{p≥1} η^p ``delta[p]``
    (``delta[0]`` is not read: it is the base point θ). ``convert`` maps the rational Taylor
    weights 1/m! into the coefficient domain of ``delta``."""
    out = zero_series(order)
    out[0] = {T.node((), label): 1}
    compositions: dict[int, list[tuple[int, ...]]] = {0: [()]}
    for m in range(1, order + 1):
        grown: dict[int, list[tuple[int, ...]]] = {}
        for total, seqs in compositions.items():
            for k in range(1, order + 1 - total):
                if k < len(delta) and delta[k]:
                    grown.setdefault(total + k, []).extend(s + (k,) for s in seqs)
        compositions = grown
        weight = convert(sp.Rational(1, factorial(m)))
        for total, seqs in compositions.items():
            for seq in seqs:
                T.add_to(out[total], T.multilinear([delta[k] for k in seq], label), weight)
    return out


#: A combination w/d keyed by tree numbers (:func:`~nmech.derive.algebra.trees.interned`), as
#: (d, w): with rational coefficients w holds integers over their common denominator d, else
#: w holds the coefficients themselves and d = 1 (:class:`Flow`).
Part = tuple[int, dict[int, Any]]


class Flow:
    """exp(τη L_f̃) applied to series, for the field f̃ = Σ_k η^k ``F[k]`` (module docstring).

    ``F`` may grow while it is used (the solvers append coefficients order by order, the last one
    possibly a placeholder); [η^m] L_f̃^j G is cached once it is built from final coefficients
    only, i.e. from ``F[:final]`` and G's coefficients through η^m, with ``final`` set by the
    caller (default: every coefficient of ``F`` is final).

    The derivatives of the Lie series are millions of terms at high order (GD at order 12), so
    inside, combinations are :data:`Part` s: keyed by tree numbers (no re-hashing of deep trees)
    and, when ``convert`` maps into Q (FLINT's ``fmpq``: a rule without hyper-parameters), with
    Python integers over a common denominator, whose sums are several times cheaper than
    ``fmpq`` ones. What the methods return is keyed by trees, with coefficients in the domain of
    ``convert``."""

    def __init__(self, F: list[T.Vec], time: Any = 1, convert: Convert = _identity) -> None:
        self.F = F
        self.time = time
        self.convert = convert
        self.final: int | None = None
        self._rational = isinstance(convert(sp.Integer(1)), flint.fmpq)
        self._cache: dict[tuple[Hashable, int, int], Part] = {}
        self._field: dict[int, Part] = {}  # F[k] as a Part, for final k

    def _final(self) -> int:
        return len(self.F) if self.final is None else self.final

    def _scalar(self, c: Any) -> tuple[int, Any]:
        """c = n/d as (d, n): integers for a rational (``fmpq`` or int), else (1, c)."""
        return (int(c.denominator), int(c.numerator)) if self._rational else (1, c)

    def _part(self, v: T.Vec) -> Part:
        """v as a :data:`Part`."""
        pairs = {T.tree_number(t): self._scalar(c) for t, c in v.items()}
        d = lcm(*(q for q, _ in pairs.values()))
        return d, {i: p if q == d else p * (d // q) for i, (q, p) in pairs.items()}

    def _vec(self, part: Part) -> T.Vec:
        """The :data:`Part` (d, w) as the combination w/d keyed by trees."""
        d, w = part
        return T.uninterned({i: flint.fmpq(c, d) for i, c in w.items()} if self._rational else w)

    def _field_part(self, k: int) -> Part:
        """F[k] as a :data:`Part` (kept once F[k] is final)."""
        out = self._field.get(k)
        if out is None:
            out = self._part(self.F[k])
            if k < self._final():
                self._field[k] = out
        return out

    def _lie(self, key: Hashable, G: Series, j: int, m: int) -> Part:
        """[η^m] L_f̃^j G as a :data:`Part`."""
        if j == 0:
            return self._part(G[m]) if m < len(G) else (1, {})
        cached = self._cache.get((key, j, m))
        if cached is not None:
            return cached
        terms = [(self._lie(key, G, j - 1, a), self._field_part(m - a)) for a in range(m + 1)]
        d = lcm(*(dv * df for (dv, _), (df, _) in terms))
        out: dict[int, Any] = {}
        for (dv, v), (df, f) in terms:
            s = d // (dv * df)
            T.add_derivative(out, v, f if s == 1 else {t: s * c for t, c in f.items()})
        part = _lowest(d, {t: c for t, c in out.items() if c != 0})
        if m < self._final():
            self._cache[(key, j, m)] = part
        return part

    def lie(self, key: Hashable, G: Series, j: int, m: int) -> T.Vec:
        """[η^m] L_f̃^j G; ``key`` names G for the cache."""
        return self._vec(self._lie(key, G, j, m))

    def coefficient(self, key: Hashable, G: Series, n: int, first: int = 0) -> T.Vec:
        """[η^n] of Σ_{j ≥ first} ((τη)^j / j!) L_f̃^j G (``first`` = 0: the whole flow)."""
        terms = [
            (
                self._scalar(self.convert(sp.sympify(self.time) ** j / factorial(j))),
                self._lie(key, G, j, n - j),
            )
            for j in range(first, n + 1)
        ]
        d = lcm(*(dw * dv for (dw, _), (dv, _) in terms))
        out: dict[int, Any] = {}
        for (dw, w), (dv, v) in terms:
            T.add_to(out, v, w * (d // (dw * dv)))
        return self._vec(_lowest(d, out))


def _lowest(d: int, w: dict[int, Any]) -> Part:
    """The :data:`Part` (d, w) with d and the integers of w divided by their gcd (d = 1: as
    is), so that denominators stay the least common ones."""
    g = 1 if d == 1 else gcd(d, *w.values())
    return (d, w) if g == 1 else (d // g, {t: c // g for t, c in w.items()})


def field_of_map(
    displacement: Series, time: int, order: int, convert: Convert = _identity
) -> list[T.Vec]:
    """F_0..F_order of the field f̃ = Σ_k η^k F_k whose time-(``time``·η) flow is the map
    θ ↦ θ + Σ_{p≥1} η^p d_p (d_p = ``displacement[p]``; needs d_1..d_{order+1}), inverting the
    Lie series order by order: τF_{p−1} = d_p − Σ_{j≥2} (τ^j/j!) [η^{p−j}] L_f̃^j θ, τ = ``time``.
    ``convert`` maps rational numbers into the coefficient domain of ``displacement``."""
    scale = convert(sp.Rational(1, time))
    F: list[T.Vec] = []
    flow, theta = Flow(F, time=time, convert=convert), [{T.THETA: 1}]
    for p in range(1, order + 2):
        d = displacement[p] if p < len(displacement) else {}
        rhs = T.combine([(1, d), (-1, flow.coefficient("theta", theta, p, first=2))])
        F.append(T.simplify(T.scaled(rhs, scale)))
    return F
