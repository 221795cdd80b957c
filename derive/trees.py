"""Elementary differentials of the loss: the dimension-free algebra of the engine.

A *tree* is a vector-valued elementary differential:

* a leaf ``("v", name)``: a vector symbol -- ``theta`` (the point θ itself), or an external
  vector (a symmetry's ``c``, a direction ``u``, an unknown of the solver);
* a node ``("n", children)``: ∇^{k+1}L(θ)[t_1, ..., t_k], the (k+1)-th derivative of L with k
  slots filled by the child trees and one slot open. ``("n", ())`` is ∇L, ``("n", (g,))`` is
  ∇²L∇L, ``("n", (g, g))`` is ∇³L[∇L, ∇L]. Children are sorted: derivatives are symmetric.
* a labelled node ``("b", label, children)``: the same for the mini-batch loss L̂_label, a string
  (L = (1/m) Σ_k L̂_k for mini-batch SGD, :mod:`nmech.derive.minibatch`).

A :data:`Vec` is a linear combination ``{tree: coefficient}`` with sympy coefficients (rational
functions of the hyper-parameters). Differentiation follows the chain rule
D_u ∇^{k+1}L[t_1..t_k] = ∇^{k+2}L[t_1..t_k, u] + Σ_i ∇^{k+1}L[t_1.., D_u t_i, ..t_k].
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cache
from itertools import product

import sympy as sp

Tree = tuple  # ("v", name) | ("n", tuple[Tree, ...]) | ("b", label, tuple[Tree, ...])
Vec = dict  # dict[Tree, sp.Expr]
Coeff = sp.Expr | int

THETA: Tree = ("v", "theta")
GRAD: Tree = ("n", ())


def leaf(name: str) -> Tree:
    return ("v", name)


def node(children: Iterable[Tree], label: str | None = None) -> Tree:
    """∇^{k+1}L[children], or ∇^{k+1}L̂_label[children] of a labelled loss."""
    kids = tuple(sorted(children))
    return ("n", kids) if label is None else ("b", label, kids)


def children(t: Tree) -> tuple[Tree, ...]:
    return t[-1]


def label(t: Tree) -> str | None:
    """The loss label of a labelled node; None for L itself."""
    return t[1] if t[0] == "b" else None


def is_leaf(t: Tree) -> bool:
    return t[0] == "v"


# ---------------------------------------------------------------- linear combinations
def vec(*terms: tuple[Tree, Coeff]) -> Vec:
    out: Vec = {}
    for t, c in terms:
        add_to(out, {t: c})
    return out


def add_to(acc: Vec, other: Mapping[Tree, Coeff], scale: Coeff = 1) -> Vec:
    """acc += scale·other, in place; zero coefficients are dropped."""
    for t, c in other.items():
        value = acc.get(t, 0) + scale * c
        if value == 0:
            acc.pop(t, None)
        else:
            acc[t] = value
    return acc


def combine(terms: Iterable[tuple[Coeff, Mapping[Tree, Coeff]]]) -> Vec:
    out: Vec = {}
    for scale, v in terms:
        add_to(out, v, scale)
    return out


def scaled(v: Mapping[Tree, Coeff], scale: Coeff) -> Vec:
    return {} if scale == 0 else {t: scale * c for t, c in v.items()}


def simplify(v: Mapping[Tree, Coeff]) -> Vec:
    """Bring every coefficient to a canonical form (sympy: factored rational function; polys
    domain elements are canonical already); drop the zeros."""
    out: Vec = {}
    for t, c in v.items():
        if isinstance(c, sp.Basic):
            c = sp.factor(sp.cancel(c))
        if c != 0:
            out[t] = c
    return out


def is_zero(v: Mapping[Tree, Coeff]) -> bool:
    return all((sp.cancel(c) if isinstance(c, sp.Basic) else c) == 0 for c in v.values())


# ---------------------------------------------------------------- structure
@cache
def contains(t: Tree, name: str) -> bool:
    """Whether leaf ``name`` occurs in tree t."""
    if is_leaf(t):
        return t[1] == name
    return any(contains(c, name) for c in children(t))


@cache
def size(t: Tree) -> int:
    """Number of L-nodes (derivatives of L) in t: the order of the differential in η."""
    return 0 if is_leaf(t) else 1 + sum(size(c) for c in children(t))


def multilinear(args: list[Mapping[Tree, Coeff]], label: str | None = None) -> Vec:
    """∇^{k+1}L[A_1, ..., A_k] (∇^{k+1}L̂_label with a label) for linear combinations A_i."""
    out: Vec = {}
    if any(not a for a in args):
        return out
    for combo in product(*(list(a.items()) for a in args)):
        coeff: Coeff = 1
        for _, c in combo:
            coeff = coeff * c
        add_to(out, {node((t for t, _ in combo), label): coeff})
    return out


# ---------------------------------------------------------------- calculus
@cache
def _derivative(t: Tree, direction: Tree) -> tuple[tuple[Tree, int], ...]:
    """D t [direction] for one tree and one tree direction; integer coefficients."""
    if is_leaf(t):
        return ((direction, 1),) if t == THETA else ()
    kids, lab = children(t), label(t)
    out: dict[Tree, int] = {node(kids + (direction,), lab): 1}
    for i, child in enumerate(kids):
        for dt, c in _derivative(child, direction):
            new = node(kids[:i] + (dt,) + kids[i + 1 :], lab)
            out[new] = out.get(new, 0) + c
    return tuple(out.items())


def derivative(v: Mapping[Tree, Coeff], direction: Mapping[Tree, Coeff]) -> Vec:
    """The directional derivative v'(θ)·direction of a field v, bilinear in (v, direction)."""
    out: Vec = {}
    for t, c in v.items():
        for d, cd in direction.items():
            for dt, k in _derivative(t, d):
                add_to(out, {dt: k * c * cd})
    return out


def substitute(v: Mapping[Tree, Coeff], values: Mapping[str, Mapping[Tree, Coeff]]) -> Vec:
    """Replace leaves by linear combinations (multilinear expansion)."""
    out: Vec = {}
    for t, c in v.items():
        add_to(out, _substitute_tree(t, values), c)
    return out


def _substitute_tree(t: Tree, values: Mapping[str, Mapping[Tree, Coeff]]) -> Vec:
    if is_leaf(t):
        return dict(values[t[1]]) if t[1] in values else {t: 1}
    if not any(contains(t, name) for name in values):
        return {t: 1}
    return multilinear([_substitute_tree(c, values) for c in children(t)], label(t))
