"""Elementary differentials of the loss: the dimension-free algebra of the engine.

A *tree* is a vector-valued elementary differential, one of four named tuples whose first
field is its kind (so that trees of all kinds sort together, as tuples):

* a leaf :class:`Leaf` ``("v", name)``: a vector symbol -- ``theta`` (the point θ itself), or an external
  vector (a symmetry's ``c``, a direction ``u``, an unknown of the solver);
* a node :class:`Node` ``("n", children)``: ∇^{k+1}L(θ)[t_1, ..., t_k], the (k+1)-th derivative of L with k
  slots filled by the child trees and one slot open. ``("n", ())`` is ∇L, ``("n", (g,))`` is
  ∇²L∇L, ``("n", (g, g))`` is ∇³L[∇L, ∇L]. Children are sorted: derivatives are symmetric.
* an element-wise node :class:`Elementwise` ``("e", key, f, args)``: the vector whose i-th entry is
  f(a_1[i], ..., a_k[i]) for a scalar sympy function f of the placeholders ``_e0.._e{k-1}`` and
  the trees a_j = ``args`` (sorted, distinct, none element-wise itself: nested element-wise
  functions are composed into one f). This is how adaptive optimizers enter: Adam's
  m/(√v + ε) on its slow manifold is ``("e", ., _e0/(|_e0| + ε), (∇L,))`` at leading order.
  ``key`` is ``srepr(f)``, so that trees stay totally ordered. f carries every scalar factor
  that is not a plain coefficient of one argument: terms c·a_j (c free of the placeholders)
  are split off as ordinary linear terms, so a canonical element-wise node has no linear part.
* a labelled node :class:`LabelledNode` ``("b", label, children)``: the same for the mini-batch loss L̂_label, a string
  (L = (1/m) Σ_k L̂_k for mini-batch SGD, :mod:`nmech.derive.stochastic.minibatch`).
* a scaled tree :class:`Scaled` ``("s", factor, w)``: φ·w for a tree w that is not scaled itself
  and a monomial φ = Π_j s_j^{e_j} in scalar atoms: ``("norm", a)`` the Euclidean norm ‖a‖
  (any integer power; positive where the tree is defined) and ``("dot", a, b)`` the inner
  product ⟨a, b⟩ (a < b, positive powers; ⟨a, a⟩ is written ‖a‖²). This is how normalised
  rules enter (normalised GD's −∇L/‖∇L‖); the atoms' arguments are plain trees, and a scalar
  factor inside a derivative comes out, ∇^{k+1}L[…, φw, …] = φ·∇^{k+1}L[…, w, …]. Inner
  products are canonical under the symmetry of the derivatives (⟨a, ∇²L b⟩ = ⟨∇²L a, b⟩,
  ⟨∇L, (∇²L)²∇L⟩ = ‖∇²L∇L‖², :func:`_inner`).

A :data:`Vec` is a linear combination ``{tree: coefficient}``; coefficients are rational
functions of the hyper-parameters: elements of :class:`~nmech.derive.algebra.ratfunc.RationalField`
inside the solver, their factored sympy form in results. Element-wise functions are
canonicalised in exact polynomial arithmetic (:mod:`nmech.derive.algebra.entrywise`). Differentiation follows the chain rule
D_u ∇^{k+1}L[t_1..t_k] = ∇^{k+2}L[t_1..t_k, u] + Σ_i ∇^{k+1}L[t_1.., D_u t_i, ..t_k], for
element-wise nodes D_u f(a_1..a_k) = Σ_j (∂_j f)(a_1..a_k) ⊙ D_u a_j, and for scaled trees
D_u(φw) = φ D_u w + (D_u φ) w with D_u‖a‖ = ⟨a, D_u a⟩/‖a‖, D_u⟨a, b⟩ = ⟨D_u a, b⟩ + ⟨a, D_u b⟩.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from functools import cache, lru_cache
from itertools import product
from typing import Any, NamedTuple

import sympy as sp

from nmech.derive.algebra import entrywise
from nmech.derive.symbols import sign
from nmech.errors import NmechError


class Leaf(NamedTuple):
    """A vector symbol ``name``: θ, an external vector, a solver's unknown (``?F``)."""

    kind: str  # "v"
    name: str


class Node(NamedTuple):
    """∇^{k+1}L[children]: the derivative of L with its slots filled (sorted)."""

    kind: str  # "n"
    children: tuple


class LabelledNode(NamedTuple):
    """∇^{k+1}L̂_label[children], for the mini-batch loss L̂_label."""

    kind: str  # "b"
    label: str
    children: tuple


class Elementwise(NamedTuple):
    """f(args) entry-wise: ``f`` a sympy function of the placeholders _e0.._e{k−1}, ``key``
    its srepr (so that trees stay totally ordered), ``args`` the non-element-wise trees."""

    kind: str  # "e"
    key: str
    f: sp.Expr
    args: tuple


class Scaled(NamedTuple):
    """φ·w: ``factor`` the monomial φ as sorted ((atom, exponent), …), ``w`` a tree that is not
    scaled (module docstring)."""

    kind: str  # "s"
    factor: tuple
    w: Any


#: A tree is one of the five named tuples; the kind comes first, so trees of different kinds
#: still compare (and sort) as tuples do.
Tree = Leaf | Node | LabelledNode | Elementwise | Scaled
Vec = dict  # dict[Tree, coefficient]
Coeff = sp.Expr | int

THETA: Tree = Leaf("v", "theta")
GRAD: Tree = Node("n", ())


def leaf(name: str) -> Tree:
    """The leaf for vector ``name`` (θ, an external vector, a solver's unknown)."""
    return Leaf("v", name)


def node(children: Iterable[Tree], label: str | None = None) -> Tree:
    """∇^{k+1}L[children], or ∇^{k+1}L̂_label[children] of a labelled loss; the scalar factors
    of scaled children come out (the derivative is multilinear)."""
    kids = tuple(children)
    if any(is_scaled(c) for c in kids):
        factor = factor_product(*(c.factor for c in kids if is_scaled(c)))
        return with_factor(factor, node((unscaled(c) for c in kids), label))
    kids = tuple(sorted(kids))
    return Node("n", kids) if label is None else LabelledNode("b", label, kids)


def elementwise(f: sp.Expr, args: tuple[Tree, ...], key: str | None = None) -> Tree:
    """The element-wise node f(args) (``key``: f's srepr, computed when not given)."""
    return Elementwise("e", sp.srepr(f) if key is None else key, f, tuple(args))


def label(t: Tree) -> str | None:
    """The loss label of a labelled node; None for L itself."""
    return t.label if t[0] == "b" else None


def is_leaf(t: Tree) -> bool:
    """Whether t is a vector leaf."""
    return t[0] == "v"


def is_elementwise(t: Tree) -> bool:
    """Whether t is an element-wise node f(a_1, …, a_k)."""
    return t[0] == "e"


def is_scaled(t: Tree) -> bool:
    """Whether t is a scaled tree φ·w (a scalar functional of trees times a tree)."""
    return t[0] == "s"


def children(t: Tree) -> tuple[Tree, ...]:
    """The sub-trees of t: a node's slots, an element-wise node's arguments, a scaled tree's w
    and the arguments of its atoms."""
    if is_scaled(t):
        return (t.w,) + tuple(a for atom, _ in t.factor for a in atom[1:])
    return () if is_leaf(t) else t[-1]


# ---------------------------------------------------------------- linear combinations
def vec(*terms: tuple[Tree, Coeff]) -> Vec:
    """The linear combination Σ c·t of the given (tree, coefficient) pairs."""
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
    """Σ scale·v over (scale, combination) pairs."""
    out: Vec = {}
    for scale, v in terms:
        add_to(out, v, scale)
    return out


def scaled(v: Mapping[Tree, Coeff], scale: Coeff) -> Vec:
    """scale·v (empty when scale is 0)."""
    return {} if scale == 0 else {t: scale * c for t, c in v.items()}


def simplify(v: Mapping[Tree, Coeff]) -> Vec:
    """Bring every coefficient to a canonical form (sympy: factored rational function; polys
    domain elements are canonical already); drop the zeros. With sympy coefficients,
    element-wise nodes on the same arguments are merged."""
    if any(is_elementwise(t) for t in v) and all(
        isinstance(c, (int, sp.Basic)) for c in v.values()
    ):
        v = merge_elementwise(v)
    out: Vec = {}
    for t, c in v.items():
        if isinstance(c, sp.Basic):
            c = sp.factor(sp.cancel(c))
        if c != 0:
            out[t] = c
    return out


def is_zero(v: Mapping[Tree, Coeff]) -> bool:
    """Whether v vanishes; element-wise nodes on the same arguments are merged first (after a
    cheap numeric test that most non-zero combinations already fail)."""
    plain = {t: c for t, c in v.items() if not is_elementwise(t)}
    if not all((sp.cancel(c) if isinstance(c, sp.Basic) else c) == 0 for c in plain.values()):
        return False
    rest = {t: c for t, c in v.items() if is_elementwise(t)}
    if not rest or _numerically_nonzero(rest):
        return not rest
    return all(sp.cancel(c) == 0 for c in merge_elementwise(rest).values())


def _numerically_nonzero(v: Mapping[Tree, Coeff]) -> bool:
    """Whether some group of element-wise nodes on the same arguments is visibly non-zero at a
    fixed generic point (all symbols set to distinct irrational-looking values)."""
    groups: dict[tuple[Tree, ...], sp.Expr] = {}
    for t, c in v.items():
        groups[t.args] = groups.get(t.args, sp.Integer(0)) + as_expr(c) * t.f
    for total in groups.values():
        point = {
            s: sp.Float(0.3 + 0.1731 * i) for i, s in enumerate(sorted(total.free_symbols, key=str))
        }
        value = complex(total.xreplace(point).evalf(30))
        if abs(value) > 1e-12:
            return True
    return False


# ---------------------------------------------------------------- structure
@cache
def contains(t: Tree, name: str) -> bool:
    """Whether leaf ``name`` occurs in tree t."""
    if is_leaf(t):
        return t.name == name
    return any(contains(c, name) for c in children(t))


@cache
def size(t: Tree) -> int:
    """Number of L-nodes (derivatives of L) in t: the order of the differential in η."""
    inner = sum(size(c) for c in children(t))
    return inner + (0 if t[0] in ("v", "e", "s") else 1)


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


# ---------------------------------------------------------------- tree numbers
# Python does not cache the hash of a tuple: every dict operation on a tree re-hashes the whole
# nested tuple (about 0.4 µs for a tree of 13 nodes), and the derivatives of the Lie series
# are millions of terms at high order. Hot loops therefore key their combinations by a tree's
# *number*, its index in a process-wide table: an int hashes and compares at once. The table
# also hash-conses: the trees that derivatives build are the table's own objects, so that two
# equal trees share their sub-trees and compare by identity below the root instead of all the
# way down. It holds one dict entry and one list slot per distinct tree numbered (about 100
# bytes each, the trees kept alive for the life of the process, as a cache of them would).
# A new number is assigned under a lock: two threads numbering two new trees at once must not
# both take len(_TREES) (the hashing and comparison of trees run in C, so under the GIL the
# unlocked code happens to be atomic; a free-threaded interpreter gives no such guarantee).
_NUMBERS: dict[Tree, int] = {}
_TREES: list[Tree] = []
_NUMBERING = threading.Lock()


def tree_number(t: Tree) -> int:
    """The number of tree t in the process-wide table (assigned on first use); equal trees
    get the same number, and ``_TREES[tree_number(t)] == t``."""
    n = _NUMBERS.get(t)
    if n is None:
        with _NUMBERING:
            n = _NUMBERS.get(t)
            if n is None:
                _TREES.append(t)
                n = _NUMBERS[t] = len(_TREES) - 1
    return n


def interned(v: Mapping[Tree, Coeff]) -> dict[int, Coeff]:
    """The combination v keyed by tree numbers (:func:`tree_number`)."""
    return {tree_number(t): c for t, c in v.items()}


def uninterned(v: Mapping[int, Coeff]) -> Vec:
    """The combination v, keyed by tree numbers, keyed by its trees again (same order)."""
    return {_TREES[i]: c for i, c in v.items()}


# ---------------------------------------------------------------- calculus
@cache
def _interned_derivative(t: int, direction: int) -> tuple[tuple[int, int], ...]:
    """D t [direction] for one tree and one tree direction, on tree numbers; integer
    coefficients (about 60 bytes kept per term). The recursion runs on numbers and builds each
    new tree from the table's trees (hash-consing, above)."""
    tree, d = _TREES[t], _TREES[direction]
    if is_scaled(d):  # linear in the direction
        return tuple(
            (tree_number(with_factor(d.factor, _TREES[dt])), c)
            for dt, c in _interned_derivative(t, tree_number(d.w))
        )
    if is_leaf(tree):
        return ((direction, 1),) if tree == THETA else ()
    if is_elementwise(tree) or is_scaled(tree):
        v = (_elementwise_derivative if is_elementwise(tree) else _scaled_derivative)(tree, d)
        return tuple(interned(v).items())
    kids, lab = children(tree), label(tree)
    out: dict[int, int] = {tree_number(node(kids + (d,), lab)): 1}
    for i, child in enumerate(kids):
        rest = kids[:i] + kids[i + 1 :]
        for dt, c in _interned_derivative(tree_number(child), direction):
            new = tree_number(node(rest + (_TREES[dt],), lab))
            out[new] = out.get(new, 0) + c
    return tuple(out.items())


def _derivative(t: Tree, direction: Tree) -> tuple[tuple[Tree, int], ...]:
    """D t [direction] for one tree and one tree direction; integer coefficients."""
    return tuple(
        (_TREES[dt], c) for dt, c in _interned_derivative(tree_number(t), tree_number(direction))
    )


def derivative(v: Mapping[Tree, Coeff], direction: Mapping[Tree, Coeff]) -> Vec:
    """The directional derivative v'(θ)·direction of a field v, bilinear in (v, direction)."""
    out = add_derivative({}, interned(v), interned(direction))
    return uninterned({i: c for i, c in out.items() if c != 0})


def add_derivative(
    acc: dict[int, Coeff], v: Mapping[int, Coeff], direction: Mapping[int, Coeff]
) -> dict[int, Coeff]:
    """acc += v'(θ)·direction, in place, for combinations keyed by tree numbers
    (:func:`interned`; zeros may remain: filter before use). This is the inner loop of the Lie
    series (:class:`~nmech.derive.algebra.series.Flow`), millions of terms at high order."""
    get = acc.get
    for t, c in v.items():
        for d, cd in direction.items():
            scale = c * cd
            for dt, k in _interned_derivative(t, d):
                acc[dt] = get(dt, 0) + (scale if k == 1 else scale * k)
    return acc


def substitute(v: Mapping[Tree, Coeff], values: Mapping[str, Mapping[Tree, Coeff]]) -> Vec:
    """Replace leaves by linear combinations (multilinear expansion)."""
    out: Vec = {}
    for t, c in v.items():
        add_to(out, _substitute_tree(t, values), c)
    return out


def _substitute_tree(t: Tree, values: Mapping[str, Mapping[Tree, Coeff]]) -> Vec:
    if is_leaf(t):
        return dict(values[t.name]) if t.name in values else {t: 1}
    if not any(contains(t, name) for name in values):
        return {t: 1}
    if is_scaled(t):
        if any(contains(a, name) for name in values for a in children(t)[1:]):
            raise NmechError("a norm or inner product of an unknown of the solver (a rule's state)")
        return {with_factor(t.factor, s): c for s, c in _substitute_tree(t.w, values).items()}
    if is_elementwise(t):
        return _substitute_elementwise(t, [_substitute_tree(a, values) for a in t.args])
    return multilinear([_substitute_tree(c, values) for c in children(t)], label(t))


# ---------------------------------------------------------------- element-wise functions
@cache
def placeholder(j: int) -> sp.Symbol:
    """The j-th argument of an element-wise function (a name rule text cannot spell)."""
    return sp.Symbol(f"_e{j}", real=True)


def as_expr(c: Any) -> sp.Expr:
    """A coefficient (int, sympy, or an element of sympy's polys domains) as a sympy expression."""
    if isinstance(c, sp.Basic):
        return c
    if isinstance(c, int):
        return sp.Integer(c)
    if hasattr(c, "as_expr"):  # polynomial ring / fraction field elements
        return c.as_expr()
    return sp.Rational(int(c.numerator), int(c.denominator))


@lru_cache(maxsize=65536)
def _canonical(f: sp.Expr) -> sp.Expr:
    """The canonical form of an element-wise function (:mod:`nmech.derive.algebra.entrywise`:
    Σ_S (Π_{j∈S} x_j) R_S/Π_{j∈S}|x_j| with each R_S a factored rational function)."""
    return entrywise.canonical(f)


def apply(
    f: sp.Expr,
    arguments: Mapping[sp.Symbol, Mapping[Tree, Coeff]],
    convert: Callable[[sp.Expr], Any] = lambda c: c,
) -> Vec:
    """The element-wise function f applied to vectors: ``arguments`` maps each free symbol of f
    that stands for a vector to its linear combination of trees; other symbols are scalars.

    The result is canonical: terms c·a (c free of the arguments, a a tree) are returned as linear
    terms with coefficient ``convert(c)``; what remains is one element-wise node of coefficient
    1 over the distinct non-element-wise trees it depends on, or nothing when it vanishes."""
    atoms: set[Tree] = set()
    for v in arguments.values():
        for t in v:
            if is_scaled(t):
                raise NmechError(
                    "an element-wise function of a vector scaled by a norm or an inner product "
                    "is not supported"
                )
            atoms.update(t.args if is_elementwise(t) else (t,))
    order = sorted(atoms)
    index = {t: placeholder(j) for j, t in enumerate(order)}

    def scalar(t: Tree) -> sp.Expr:
        if not is_elementwise(t):
            return index[t]
        return t.f.xreplace({placeholder(j): index[a] for j, a in enumerate(t.args)})

    composed = f.xreplace(
        {x: sp.Add(*[as_expr(c) * scalar(t) for t, c in v.items()]) for x, v in arguments.items()}
    )
    return _split(_canonical(composed), order, convert)


@lru_cache(maxsize=65536)
def _split_linear(f: sp.Expr, k: int) -> tuple[dict[sp.Symbol, sp.Expr], sp.Expr]:
    """The linear part of f in its first k placeholders, and the canonical rest."""
    return entrywise.split_linear(f, [placeholder(j) for j in range(k)])


@lru_cache(maxsize=65536)
def _key(f: sp.Expr) -> str:
    """The sort key of an element-wise node's function (its srepr)."""
    return sp.srepr(f)


def _split(f: sp.Expr, order: list[Tree], convert: Callable[[sp.Expr], Any]) -> Vec:
    out: Vec = {}
    slopes, f = _split_linear(f, len(order))
    for j, t in enumerate(order):
        if placeholder(j) in slopes:
            add_to(out, {t: convert(slopes[placeholder(j)])})
    if f == 0:
        return out
    used = [(j, t) for j, t in enumerate(order) if f.has(placeholder(j))]
    f = f.xreplace({placeholder(j): placeholder(i) for i, (j, _) in enumerate(used)})
    args = tuple(t for _, t in used)
    add_to(out, {elementwise(f, args, _key(f)): 1})
    return out


@cache
def _elementwise_derivative(t: Tree, direction: Tree) -> Vec:
    f, args = t.f, t.args
    slot = sp.Symbol("_slot", real=True)
    out: Vec = {}
    for j, a in enumerate(args):
        da = dict(_derivative(a, direction))
        if da:
            values = {placeholder(i): {b: 1} for i, b in enumerate(args)}
            values[slot] = da
            add_to(out, apply(sp.diff(f, placeholder(j)) * slot, values))
    return out


def _substitute_elementwise(t: Tree, values: list[Vec]) -> Vec:
    """f(a_1..a_k) with a_j replaced by values[j]. Linear combinations entering f linearly are
    distributed (their coefficients may live in any domain); others are composed."""
    f = t.f
    single = [len(v) == 1 and next(iter(v.values())) == 1 for v in values]
    out: Vec = {}
    for j, v in enumerate(values):
        x = placeholder(j)
        slope = sp.diff(f, x)
        # linear in x when ∂f is free of x -- and, with a sign in f (∂ sign = 0 on its region,
        # yet no constant), when f − x·∂f is free of x too
        if single[j] or slope.has(x) or (f.has(sign) and (f - slope * x).has(x)):
            continue
        # f = x·∂f + rest: distribute the combination over the linear slot
        args = {placeholder(i): values[i] for i in range(len(values)) if i != j}
        for tree, c in v.items():
            add_to(out, apply(slope * x, {**args, x: {tree: 1}}), c)
        f = _canonical(f - slope * x)
        values = values[:j] + [{}] + values[j + 1 :]
    remaining = {placeholder(j): v for j, v in enumerate(values) if f.has(placeholder(j))}
    if f != 0:
        add_to(out, apply(f, remaining))
    return out


def merge_elementwise(v: Mapping[Tree, Coeff]) -> Vec:
    """v with the element-wise nodes on the same arguments combined into one canonical node
    (sympy coefficients)."""
    out: Vec = {}
    groups: dict[tuple[Tree, ...], list[tuple[Tree, Coeff]]] = {}
    for t, c in v.items():
        if is_elementwise(t):
            groups.setdefault(t.args, []).append((t, c))
        else:
            add_to(out, {t: as_expr(c)})
    for args, items in groups.items():
        f = sp.Add(*[as_expr(c) * t.f for t, c in items])
        add_to(out, apply(f, {placeholder(j): {a: 1} for j, a in enumerate(args)}))
    return out


# ---------------------------------------------------------------- scalar functionals
Factor = tuple  # ((atom, exponent), ...), sorted; atom ("norm", a) or ("dot", a, b)


def factor_product(*factors: Factor) -> Factor:
    """The product of monomials (exponents added, zeros dropped)."""
    total: dict[tuple, int] = {}
    for factor in factors:
        for atom, e in factor:
            total[atom] = total.get(atom, 0) + e
    return tuple(sorted((a, e) for a, e in total.items() if e != 0))


def factor_power(factor: Factor, k: int) -> Factor:
    """φ^k for a monomial φ."""
    return tuple((a, k * e) for a, e in factor)


def with_factor(factor: Factor, t: Tree) -> Tree:
    """φ·t as one tree (t itself when φ = 1; the factors of a scaled t multiplied)."""
    if is_scaled(t):
        factor, t = factor_product(factor, t.factor), t.w
    return Scaled("s", factor, t) if factor else t


def unscaled(t: Tree) -> Tree:
    """w for a scaled tree φ·w, t itself otherwise."""
    return t.w if is_scaled(t) else t


def _factor_of(t: Tree) -> Factor:
    return t.factor if is_scaled(t) else ()


def norm_atom(t: Tree) -> Factor:
    """‖t‖ as a monomial: ‖φw‖ = |φ|·‖w‖, for φ with no odd power of an inner product (whose
    sign is unknown)."""
    factor = _factor_of(t)
    if any(atom[0] == "dot" and e % 2 for atom, e in factor):
        raise NmechError("the norm of a vector scaled by an inner product of unknown sign")
    return factor_product(factor, ((("norm", unscaled(t)), 1),))


def dot_atom(a: Tree, b: Tree) -> Factor:
    """⟨a, b⟩ as a monomial (scalar factors out; ⟨w, w⟩ = ‖w‖²; :func:`_inner`)."""
    return factor_product(_factor_of(a), _factor_of(b), (_inner(unscaled(a), unscaled(b)),))


def _is_loss_node(t: Tree) -> bool:
    return t[0] == "n"


@lru_cache(maxsize=65536)
def _inner(a: Tree, b: Tree) -> tuple:
    """The canonical (atom, exponent) of ⟨a, b⟩. With b = ∇^{k+1}L[c], ⟨a, b⟩ is the symmetric
    scalar ∇^{k+1}L[c, a] of the multiset c ∪ {a}; an entry of it that is itself ∇^{j+1}L[d]
    may be swapped, ∇^{k+1}L[M] = ⟨∇^{k+1}L[M ∖ {s}], s⟩ = ∇^{j+1}L[d ∪ {∇^{k+1}L[M ∖ {s}]}].
    The class of multisets these swaps reach is searched; a member d ∪ {∇L[d]} is the square
    ‖∇L[d]‖² (the least such), else the least member M is written ⟨M_0, ∇L[M_1, …]⟩."""
    if a == b:
        return (("norm", a), 2)
    starts = [tuple(sorted(t.children + (o,))) for t, o in ((b, a), (a, b)) if _is_loss_node(t)]
    if not starts:
        return (("dot", *sorted((a, b))), 1)
    seen, frontier = set(starts), list(starts)
    while frontier:
        members = frontier.pop()
        for i, s in enumerate(members):
            if _is_loss_node(s):
                swapped = tuple(sorted(s.children + (node(members[:i] + members[i + 1 :]),)))
                if swapped not in seen:
                    seen.add(swapped)
                    frontier.append(swapped)
    squares = sorted(
        members[i]
        for members in seen
        for i, s in enumerate(members)
        if _is_loss_node(s) and s.children == members[:i] + members[i + 1 :]
    )
    if squares:
        return (("norm", squares[0]), 2)
    least = min(seen)
    return (("dot", *sorted((least[0], node(least[1:])))), 1)


def dot(a: Mapping[Tree, Coeff], b: Mapping[Tree, Coeff]) -> dict[Factor, Coeff]:
    """⟨A, B⟩ of two linear combinations, as {monomial: coefficient} (bilinear)."""
    out: dict[Factor, Coeff] = {}
    for s, c in a.items():
        for t, d in b.items():
            add_to(out, {dot_atom(s, t): c * d})
    return out


def _atom_derivative(atom: tuple, direction: Tree) -> dict[Factor, int]:
    """D_u s for one atom s: D‖a‖ = ⟨a, Da⟩/‖a‖, D⟨a, b⟩ = ⟨Da, b⟩ + ⟨a, Db⟩."""
    out: dict[Factor, int] = {}
    if atom[0] == "norm":
        a = atom[1]
        inverse = ((atom, -1),)
        for da, c in _derivative(a, direction):
            add_to(out, {factor_product(inverse, dot_atom(a, da)): c})
        return out
    _, a, b = atom
    for x, y in ((a, b), (b, a)):
        for dx, c in _derivative(x, direction):
            add_to(out, {dot_atom(dx, y): c})
    return out


@cache
def _scaled_derivative(t: Scaled, direction: Tree) -> Vec:
    """D_u(φw) = φ D_u w + Σ_j e_j φ/s_j (D_u s_j) w for φ = Π_j s_j^{e_j} (u not scaled)."""
    out: Vec = {}
    for dw, c in _derivative(t.w, direction):
        add_to(out, {with_factor(t.factor, dw): c})
    for atom, e in t.factor:
        rest = factor_product(t.factor, ((atom, -1),))
        for ds, c in _atom_derivative(atom, direction).items():
            add_to(out, {with_factor(factor_product(rest, ds), t.w): e * c})
    return out
