"""Sums over mini-batches: symmetric expressions in the losses L̂_1..L̂_m written with Σ_k and L.

For m concrete mini-batch losses with L = (1/m) Σ_j L̂_j, an expression of mini-batch SGD
averaged over the sampling is symmetric under relabelling the batches. It is written here as a
combination of *patterns*: a tree whose nodes are either L (``("n", ...)``) or a labelled loss
L̂_k with an index name k (``("b", "k", ...)``); a pattern stands for the unrestricted sum over
its indices, e.g. ∇²L̂_k∇L̂_k for Σ_k ∇²L̂_k∇L̂_k and ∇²L∇L = (1/m²) Σ_{j,l} ∇²L̂_j∇L̂_l.

*Items.* To treat vectors and symmetric matrices alike, an item is a sorted tuple of trees: (t,)
is the vector t, (a, b) the symmetric outer product (abᵀ + baᵀ)/2. A :data:`Items` combination
maps items to coefficients.

*Decomposition.* Every labelled item is matched by the patterns obtained from its own shape and
each set partition of its nodes (a block of one node is L, a larger block one index); the
coefficients come from one exact linear solve. For m at least the number of nodes the patterns
are linearly independent and the form is unique; for smaller m a solution is chosen with the
free coefficients set to zero.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from itertools import permutations, product

import sympy as sp

from nmech.derive.algebra import notation
from nmech.derive.algebra import trees as T
from nmech.errors import NmechError

Item = tuple  # tuple[T.Tree, ...], sorted
Items = dict  # dict[Item, sp.Expr]
INDEX_NAMES = ("k", "l", "p", "q", "r", "s")


def batch_label(j: int) -> str:
    """The label of the j-th mini-batch loss (1-based)."""
    return str(j)


def labels(m: int) -> list[str]:
    """The labels of m mini-batch losses, "1".."m"."""
    return [batch_label(j) for j in range(1, m + 1)]


def outer(vecs: list[Mapping[T.Tree, sp.Expr]]) -> Items:
    """The symmetrised product of vector combinations as items (a vector for one factor)."""
    out: Items = {}
    for combo in product(*(list(v.items()) for v in vecs)):
        coeff = sp.Integer(1)
        for _, c in combo:
            coeff *= c
        key = tuple(sorted(t for t, _ in combo))
        T.add_to(out, {key: coeff})
    return out


def as_items(v: Mapping[T.Tree, sp.Expr]) -> Items:
    """A vector combination as items (one tree each)."""
    return {(t,): c for t, c in v.items()}


def as_vec(items: Mapping[Item, sp.Expr]) -> T.Vec:
    """Vector items back as a combination of trees."""
    return {key[0]: c for key, c in items.items()}


# ---------------------------------------------------------------- patterns
def _node_count(item: Item) -> int:
    return sum(T.size(t) for t in item)


def _relabel_tree(t: T.Tree, new: Iterator[str | None]) -> T.Tree:
    """t with its nodes' labels replaced, in pre-order, by the values drawn from ``new``."""
    if T.is_leaf(t):
        return t
    head = next(new)
    return T.node([_relabel_tree(c, new) for c in T.children(t)], head)


def _relabel(item: Item, new: list[str | None]) -> Item:
    it = iter(new)
    return tuple(sorted(_relabel_tree(t, it) for t in item))


def _set_partitions(n: int) -> Iterator[tuple[int, ...]]:
    """Restricted growth strings: block numbers of n elements, first occurrences in order."""

    def grow(prefix: tuple[int, ...], blocks: int) -> Iterator[tuple[int, ...]]:
        if len(prefix) == n:
            yield prefix
            return
        for b in range(blocks + 1):
            yield from grow(prefix + (b,), max(blocks, b + 1))

    yield from grow((), 0)


def _pattern(item: Item, blocks: tuple[int, ...]) -> Item:
    """The canonical pattern of ``item`` whose nodes (pre-order) fall into ``blocks``."""
    shared = sorted({b for b in blocks if blocks.count(b) > 1})
    if len(shared) > len(INDEX_NAMES):
        raise NmechError("too many distinct mini-batch indices in one term")
    best = None
    for names in permutations(INDEX_NAMES[: len(shared)]):
        name_of = dict(zip(shared, names))
        candidate = _relabel(item, [name_of.get(b) for b in blocks])
        if best is None or candidate < best:
            best = candidate
    return best


def index_names(item: Item) -> list[str]:
    """The summation indices of a pattern, in order."""
    found: set[str] = set()
    stack = list(item)
    while stack:
        t = stack.pop()
        if not T.is_leaf(t):
            if T.label(t) is not None:
                found.add(T.label(t))
            stack.extend(T.children(t))
    return sorted(found, key=INDEX_NAMES.index)


def _concrete_tree(t: T.Tree, assign: Mapping[str, str], m: int) -> T.Vec:
    if T.is_leaf(t):
        return {t: 1}
    kids = [_concrete_tree(c, assign, m) for c in T.children(t)]
    if T.label(t) is not None:
        return T.multilinear(kids, assign[T.label(t)])
    return T.combine((sp.Rational(1, m), T.multilinear(kids, j)) for j in labels(m))


def concrete(patterns: Mapping[Item, sp.Expr], m: int) -> Items:
    """The labelled combination a pattern combination stands for, with m batches."""
    out: Items = {}
    for item, c in patterns.items():
        names = index_names(item)
        for values in product(labels(m), repeat=len(names)):
            assign = dict(zip(names, values))
            T.add_to(out, outer([_concrete_tree(t, assign, m) for t in item]), c)
    return out


def decompose(items: Mapping[Item, sp.Expr], m: int) -> Items:
    """Patterns P with concrete(P, m) = items (see the module docstring)."""
    if not items:
        return {}
    candidates = sorted(
        {_pattern(item, blocks) for item in items for blocks in _set_partitions(_node_count(item))}
    )
    columns = [concrete({p: 1}, m) for p in candidates]
    rows = sorted(set(items).union(*columns))
    unknowns = sp.symbols(f"c0:{len(candidates)}")
    equations = [
        sum(u * col.get(r, 0) for u, col in zip(unknowns, columns)) - items.get(r, 0) for r in rows
    ]
    solutions = sp.linsolve(equations, unknowns)
    if not solutions:
        raise NmechError("the expression is not symmetric in the mini-batches")
    (values,) = solutions
    values = [sp.cancel(v.subs({u: 0 for u in unknowns})) for v in values]
    return {p: v for p, v in zip(candidates, values) if v != 0}


# ---------------------------------------------------------------- presentation
def render_tree(t: T.Tree, latex: bool = True) -> str:
    """A vector pattern: Σ over its indices, then the tree."""
    return notation.sum_prefix(index_names((t,)), latex) + notation.tree(t, latex)


def render_matrix(item: Item, latex: bool = True) -> str:
    """A matrix pattern (a, b): Σ over its indices of (abᵀ + baᵀ)/2, written abᵀ when a = b."""
    a, b = item
    ta, tb = notation.tree(a, latex), notation.tree(b, latex)
    if a == b:
        body = f"{ta}\\,{ta}^\\top" if latex else f"{ta}{ta}ᵀ"
    else:
        body = f"\\mathrm{{sym}}({ta}\\,{tb}^\\top)" if latex else f"sym({ta}{tb}ᵀ)"
    return notation.sum_prefix(index_names(item), latex) + body
