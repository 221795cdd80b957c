"""Gradient test and potential of a dimension-free vector field (the modified loss).

A scalar elementary differential is an unrooted tree: its vertices are derivatives of L (a
vertex of degree d is ∇^d L; ``L|k`` for a labelled loss L̂_k) and vector atoms (θ, u, v, …),
its edges contractions. ⟨a, b⟩ of two vector trees joins their roots by an edge.

*Curl test.* F is a gradient iff its Jacobian is symmetric, ⟨v, F′u⟩ = ⟨u, F′v⟩ for all u, v.
Both sides are sums of scalar differentials with two marked atoms; distinct unrooted trees are
linearly independent functions (in high enough dimension), so the test is exact: it compares
canonical forms, it does not sample.

*Potential.* If F = ∇Φ, each tree of Φ is a tree of F with its open slot closed; Φ is found by
matching ∇Φ against F with one unknown coefficient per such candidate, and checked exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from nmech.derive.algebra import notation
from nmech.derive.algebra import trees as T

Key = tuple
LOSS = "L"


def _vertex(t: T.Tree) -> str:
    """The vertex label of a node: L, or L|k for the labelled loss L̂_k."""
    return LOSS if T.label(t) is None else f"{LOSS}|{T.label(t)}"


def _loss_label(vertex: str) -> tuple[bool, str | None]:
    """(is it a loss vertex, its label)."""
    if vertex == LOSS:
        return True, None
    if vertex.startswith(LOSS + "|"):
        return True, vertex[len(LOSS) + 1 :]
    return False, None


@dataclass(frozen=True)
class Scalar:
    """An unrooted tree: vertex labels ('L' or an atom name) and adjacency lists."""

    labels: tuple[str, ...]
    adjacency: tuple[tuple[int, ...], ...]

    @property
    def key(self) -> Key:
        """A canonical form of the unrooted tree (the least rooted form over all roots): equal keys, equal scalars."""
        if not self.labels:
            return ()
        return min(self._rooted(r, -1) for r in range(len(self.labels)))

    def _rooted(self, r: int, parent: int) -> Key:
        below = sorted(self._rooted(w, r) for w in self.adjacency[r] if w != parent)
        return (self.labels[r], tuple(below))

    def loss_labels(self) -> list[str]:
        """The labels of its labelled-loss vertices (L̂_k), sorted, each once."""
        return sorted({_loss_label(v)[1] for v in self.labels} - {None})

    def vector_from(self, w: int, parent: int) -> T.Tree:
        """The vector tree hanging at w, seen from its neighbour ``parent``."""
        is_loss, label = _loss_label(self.labels[w])
        if not is_loss:
            return T.leaf(self.labels[w])
        return T.node((self.vector_from(x, w) for x in self.adjacency[w] if x != parent), label)

    def gradient(self) -> T.Vec:
        """∇_θ of the scalar: one open slot at each L-vertex and at each θ atom."""
        out: T.Vec = {}
        for v, vertex in enumerate(self.labels):
            is_loss, label = _loss_label(vertex)
            if is_loss:
                kids = (self.vector_from(w, v) for w in self.adjacency[v])
                T.add_to(out, {T.node(kids, label): 1})
            elif vertex == "theta":
                (w,) = self.adjacency[v]
                T.add_to(out, {self.vector_from(w, v): 1})
        return out

    def latex(self, latex: bool = True) -> str:
        """The scalar as ‖a‖² or ⟨a, b⟩ of two vector trees (L for the loss itself); plain text with ``latex=False``."""
        if len(self.labels) == 1:
            return notation.loss(_loss_label(self.labels[0])[1], latex)
        edges = [(a, b) for a in range(len(self.labels)) for b in self.adjacency[a] if a < b]

        def split(edge: tuple[int, int]) -> tuple[T.Tree, T.Tree]:
            return self.vector_from(edge[0], edge[1]), self.vector_from(edge[1], edge[0])

        a, b = min(
            (split(e) for e in edges),
            key=lambda ab: (ab[0] != ab[1], abs(T.size(ab[0]) - T.size(ab[1])), ab),
        )
        left, right = notation.tree(a, latex), notation.tree(b, latex)
        if a == b:
            return f"\\left\\|{left}\\right\\|^2" if latex else f"‖{left}‖²"
        return f"\\langle {left}, {right} \\rangle" if latex else f"⟨{left}, {right}⟩"


class _Builder:
    def __init__(self) -> None:
        self.labels: list[str] = []
        self.adjacency: list[list[int]] = []

    def add(self, label: str, neighbour: int | None) -> int:
        self.labels.append(label)
        self.adjacency.append([])
        v = len(self.labels) - 1
        if neighbour is not None:
            self.adjacency[v].append(neighbour)
            self.adjacency[neighbour].append(v)
        return v

    def tree(self, t: T.Tree, parent: int | None) -> int:
        if T.is_leaf(t):
            return self.add(t[1], parent)
        v = self.add(_vertex(t), parent)
        for child in T.children(t):
            self.tree(child, v)
        return v

    def build(self) -> Scalar:
        return Scalar(tuple(self.labels), tuple(tuple(a) for a in self.adjacency))


def pairing(atom: str, t: T.Tree) -> Scalar:
    """⟨atom, t⟩ as an unrooted tree."""
    b = _Builder()
    b.tree(t, b.add(atom, None))
    return b.build()


def closed(t: T.Tree) -> Scalar:
    """The scalar whose gradient has t among its terms: t's open slot closed (⟨θ, x⟩ for atoms)."""
    b = _Builder()
    if T.is_leaf(t):
        b.tree(t, b.add("theta", None))
    else:
        b.tree(t, None)
    return b.build()


def is_gradient(field: T.Vec) -> bool:
    """Exact curl test: ⟨v, F′u⟩ − ⟨u, F′v⟩ = 0 as scalar elementary differentials."""
    u, v = T.leaf("u"), T.leaf("v")
    asym: dict[Key, sp.Expr] = {}
    for direction, atom, sign in ((u, "v", 1), (v, "u", -1)):
        for t, c in T.derivative(field, {direction: 1}).items():
            key = pairing(atom, t).key
            asym[key] = asym.get(key, 0) + sign * c
    return all(sp.cancel(c) == 0 for c in asym.values())


def potential(field: T.Vec) -> dict[Scalar, sp.Expr] | None:
    """Φ with ∇Φ = field, as {scalar: coefficient}, or None where no potential exists."""
    if not field:
        return {}
    if not is_gradient(field):
        return None
    candidates = list({closed(t).key: closed(t) for t in field}.values())
    unknowns = sp.symbols(f"a0:{len(candidates)}")
    total: T.Vec = {}
    for a, s in zip(unknowns, candidates):
        T.add_to(total, s.gradient(), a)
    equations = [total.get(t, 0) - field.get(t, 0) for t in set(total) | set(field)]
    solutions = sp.linsolve(equations, unknowns)
    if not solutions:
        return None
    (values,) = solutions
    free = {a: 0 for a in unknowns}
    phi = {
        s: sp.factor(sp.cancel(val.subs(free)))
        for s, val in zip(candidates, values)
        if sp.cancel(val.subs(free)) != 0
    }
    check = T.combine((c, s.gradient()) for s, c in phi.items())
    return phi if T.is_zero(T.combine([(1, check), (-1, field)])) else None
