"""Derived symmetry identities hold on concrete invariant losses (checked numerically)."""

import numpy as np
import pytest
import sympy as sp

from nmech.derive import symmetry

RNG = np.random.default_rng(1)


def _form_value(loss, xs, args, point):
    """∇^m L(point)[args] by symbolic differentiation, evaluated numerically."""
    expr = loss
    for a in args:
        expr = sum(sp.diff(expr, x) * float(ai) for x, ai in zip(xs, a))
    return float(expr.subs(dict(zip(xs, point))))


def _check(sym, loss, xs, J, c, orders=(0, 1, 2)):
    theta = RNG.normal(size=len(xs)) + 0.5
    vs = {f"v{i}": RNG.normal(size=len(xs)) for i in range(1, 4)}
    xi = J @ theta + c
    grad = np.array([_form_value(loss, xs, [e], theta) for e in np.eye(len(xs))])
    reference = np.linalg.norm(grad) * np.linalg.norm(xi)
    assert reference > 1e-6  # a non-trivial gradient and generator
    for k in orders:
        total, scale = 0.0, reference
        for (m, args), coeff in sym.identity(k).items():
            assert len(args) == m
            vecs = [
                xi if a == "xi" else (J @ vs[a[2:]] if a.startswith("J ") else vs[a]) for a in args
            ]
            value = coeff * _form_value(loss, xs, vecs, theta)
            total += value
            scale += abs(value)
        assert abs(total) <= 1e-9 * scale, (k, total, scale)


def test_translation_softmax_cross_entropy():
    xs = sp.symbols("w0:6")  # logits z = W x, W: 3 classes x 2 features
    W = sp.Matrix(3, 2, xs)
    z = W * sp.Matrix([0.7, -1.3])
    loss = -z[1] + sp.log(sum(sp.exp(zi) for zi in z))
    c = np.zeros(6)
    c[[0, 2, 4]] = 1.0  # the column of feature 0 over classes
    _check(symmetry.translation(), loss, xs, np.zeros((6, 6)), c)


def test_scale_normalised_function():
    xs = sp.symbols("t0:3")
    r = sp.sqrt(sum(x**2 for x in xs))
    loss = sp.sin(xs[0] / r) + (xs[1] / r) ** 2 * xs[2] / r
    _check(symmetry.scale(), loss, xs, np.eye(3), np.zeros(3))


def test_scale_linear_layer_feeding_batch_norm():
    xs = sp.symbols("a0:3")  # one output channel: 2 weights and a bias, batch of 3, then BN
    inputs = [(0.5, -1.0), (1.5, 0.3), (-0.7, 0.8)]
    h = [xs[0] * u + xs[1] * v + xs[2] for u, v in inputs]
    mean = sum(h) / 3
    std = sp.sqrt(sum((hi - mean) ** 2 for hi in h) / 3)
    loss = sum(sp.tanh((hi - mean) / std) * t for hi, t in zip(h, (1.0, -2.0, 0.5)))
    _check(symmetry.scale(), loss, xs, np.eye(3), np.zeros(3), orders=(0, 1))


def test_rescale_two_layer_relu_unit():
    xs = sp.symbols("p0:5")  # in-weights (2) + bias, out-weights (2), active ReLU region
    pre = xs[0] * 0.9 + xs[1] * 0.4 + xs[2]
    loss = (xs[3] * pre - 1) ** 2 + sp.sin(xs[4] * pre)
    J = np.diag([1.0, 1.0, 1.0, -1.0, -1.0])
    _check(symmetry.rescale(), loss, xs, J, np.zeros(5))


def test_rewriting_rule_is_derived_by_differentiation():
    left, rhs = symmetry.scale().rewriting_rule(2)
    assert left == (3, ("v1", "v2", "xi"))
    assert rhs == {(2, ("J v1", "v2")): -1, (2, ("J v2", "v1")): -1}
    assert symmetry.translation().rewriting_rule(2)[1] == {}
    assert "J\\nabla L" in symmetry.scale().hessian_constraint


@pytest.mark.parametrize("make", [symmetry.translation, symmetry.scale, symmetry.rescale])
def test_latex_mentions_generator_and_conserved_quantity(make):
    text = make().latex()
    assert "\\xi(\\theta)" in text and "Q =" in text
