"""Lie series (:class:`~nmech.derive.algebra.series.Flow`) on tree numbers, and the integer
route for rational coefficients checked against plain sympy arithmetic."""

from __future__ import annotations

import pytest
import sympy as sp

from nmech.derive.algebra import trees as T
from nmech.derive.algebra.ratfunc import RationalField
from nmech.derive.algebra.series import field_of_map

G = T.GRAD


def test_tree_numbers_are_shared_by_equal_trees() -> None:
    a = T.node([T.node([G]), G])
    b = T.node([G, T.node([T.Node("n", ())])])  # built apart, in another order
    assert a == b and a is not b
    n = T.tree_number(a)
    assert T.tree_number(b) == n != T.tree_number(T.node([G, G]))
    v = {a: 3, T.THETA: -1}
    back = T.uninterned(T.interned(v))
    assert back == v and list(back) == list(v)
    assert all(type(t) is type(u) for t, u in zip(back, v))


def test_derivatives_are_hash_consed_trees_equal_to_plain_ones() -> None:
    """D(∇²L∇L)[∇L] = ∇³L[∇L, ∇L] + ∇²L∇²L∇L: the trees equal their plain construction and are
    the table's own objects, the second built on the table's ∇²L∇L (a shared sub-tree)."""
    HG = T.node([G])
    d = T.derivative({HG: 2}, {G: 1})
    assert d == {T.Node("n", (G, G)): 2, T.Node("n", (T.Node("n", (G,)),)): 2}
    assert all(T._TREES[T.tree_number(t)] is t for t in d)
    (inner,) = T.children(list(d)[1])
    assert T._TREES[T.tree_number(HG)] is inner


@pytest.mark.parametrize("time", [1, 3])
def test_rational_flow_equals_sympy_flow(time: int) -> None:
    """The field of the GD map θ ↦ θ − η∇L (time-τη flow): integers over a common denominator
    (``fmpq`` coefficients) give exactly the sympy route's coefficients, in the same order."""
    K = RationalField([])
    order = 5
    sympy_route = field_of_map([{}, {G: sp.Integer(-1)}], time, order)
    fast_route = field_of_map([{}, {G: K.convert(-1)}], time, order, K.convert)
    assert [list(f) for f in fast_route] == [list(f) for f in sympy_route]
    for fast, slow in zip(fast_route, sympy_route):
        assert {t: K.to_sympy(c) for t, c in fast.items()} == slow
    assert sympy_route[1] == {T.node([G]): sp.Rational(-1, 2 * time)}  # −∇²L∇L/(2τ)
