"""Trees evaluated on a concrete sympy loss: the bridge from dimension-free results to a given
L(x_1, …, x_n).

∇^{k+1}L[c_1, …, c_k] is the gradient of the k-fold directional derivative
Σ_{i_1..i_k} ∂^k L/∂x_{i_1}⋯∂x_{i_k} w^{(1)}_{i_1}⋯w^{(k)}_{i_k}, computed once per k with dummy
directions w^{(j)} that are then replaced by the children's values; element-wise nodes apply
their scalar function entry by entry; labelled nodes ∇^{k+1}L̂_j[..] use ``batches[j]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache

import sympy as sp

from nmech.derive.algebra import trees as T
from nmech.errors import NmechError


class ConcreteEvaluator:
    """Evaluates trees on a concrete loss: ∇^{k+1}L[c_1..c_k] by symbolic differentiation;
    labelled nodes ∇^{k+1}L̂_j[..] on ``batches[j]``."""

    def __init__(
        self, loss: sp.Expr, coords: list[sp.Symbol], batches: Mapping[str, sp.Expr] | None = None
    ) -> None:
        if not coords:
            raise NmechError("coords must name at least one coordinate")
        self.loss, self.coords = sp.sympify(loss), list(coords)
        self.batches = {j: sp.sympify(b) for j, b in (batches or {}).items()}
        self.cache: dict[T.Tree, sp.Matrix] = {}

    @cache  # noqa: B019 -- one evaluator per (loss, coords)
    def _contraction(
        self, k: int, label: str | None = None
    ) -> tuple[sp.Matrix, tuple[tuple[sp.Symbol, ...], ...]]:
        n = len(self.coords)
        dummies = tuple(sp.symbols(f"w{i}_0:{n}") for i in range(k))
        if label is not None and label not in self.batches:
            raise NmechError(f"no mini-batch loss given for label '{label}'")
        expr = self.loss if label is None else self.batches[label]
        for w in dummies:
            expr = sum(sp.diff(expr, x) * wj for x, wj in zip(self.coords, w))
        return sp.Matrix([sp.diff(expr, x) for x in self.coords]), dummies

    def tree(self, t: T.Tree) -> sp.Matrix:
        """The vector value of one tree (cached)."""
        if t in self.cache:
            return self.cache[t]
        if T.is_leaf(t):
            if t != T.THETA:
                raise NmechError(f"cannot evaluate vector '{t.name}' on a concrete loss")
            value = sp.Matrix(self.coords)
        elif T.is_elementwise(t):
            args = [self.tree(a) for a in t.args]
            value = sp.Matrix(
                [
                    t.f.xreplace({T.placeholder(j): a[i] for j, a in enumerate(args)})
                    for i in range(len(self.coords))
                ]
            )
        elif T.is_scaled(t):
            value = self._factor(t.factor) * self.tree(t.w)
        else:
            base, dummies = self._contraction(len(T.children(t)), T.label(t))
            subs = {}
            for w, child in zip(dummies, T.children(t)):
                subs.update(dict(zip(w, self.tree(child))))
            value = base.xreplace(subs)
        self.cache[t] = value
        return value

    def _factor(self, factor: T.Factor) -> sp.Expr:
        """Π_j s_j^{e_j} of a scaled tree: ‖a‖ = √(a·a), ⟨a, b⟩ = a·b."""
        total = sp.Integer(1)
        for atom, e in factor:
            a, b = self.tree(atom[1]), self.tree(atom[-1])
            total *= (sp.sqrt(a.dot(a)) if atom[0] == "norm" else a.dot(b)) ** e
        return total

    def vec(self, v: T.Vec) -> sp.Matrix:
        """Σ c·t over a linear combination of trees."""
        total = sp.zeros(len(self.coords), 1)
        for t, c in v.items():
            total += c * self.tree(t)
        return total
