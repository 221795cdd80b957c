"""Normalised and global-norm rules: normalised GD, SAM with its normalised ascent (ρ = rη),
gradient clipping by global norm on its active region.

Hand formulas (g = ∇L, H = ∇²L, n = g/‖g‖, P = I − nnᵀ):

* normalised GD, the one-step map θ − ηn: d_1 = −n, so f̃ = −n + η f_1 with
  f_1 = −(1/2) n′n and n′u = P H u/‖g‖, i.e. f_1 = −(1/(2‖g‖)) P H n
  = −(1/2) Hg/‖g‖² + (1/2) ⟨g, Hg⟩ g/‖g‖⁴;
* clipping θ − ηc n is normalised GD at the rate ηc: F_k(clip) = c^{k+1} F_k(normalised GD);
* SAM: ∇L(θ + rη n) = g + rη Hn + O(η²), so the step is GD's plus −rη² Hg/‖g‖ and
  f̃ = −g − η((1/2) Hg + r Hg/‖g‖) + O(η²).

Checked exactly, against the coordinate route, between the numpy and torch hand-offs, and
against simulated iterates (slopes p + 1 at fixed T = nη) on a loss whose gradient stays far
from 0 on the path."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
import torch

from nmech.derive import modified_equation, rules
from nmech.derive.algebra import trees as T
from nmech.derive.algebra.concrete import ConcreteEvaluator
from nmech.derive.bea.modifying import modifying_rule
from nmech.errors import NmechError
from nmech.numerics.flows import convergence_slope, field_function, gradient_function
from nmech.numerics.simulate import iterate
from nmech.numerics.torch_field import torch_field

from .coordinate_route import order_one_pairs

x, y = sp.symbols("x y", real=True)
COORDS = [x, y]
# ‖∇L‖ ≥ 4 within distance 1.2 of THETA0 (the normalised paths move at speed ≤ 1 for T = 1)
LOSS = (x - 3) ** 2 / 2 + (y + 3) ** 2 + x * y**2 / 10 + sp.sin(x) / 5
THETA0 = np.array([0.5, -0.5])
PARAMS = {"r": 1.0, "c": 0.5}
ETAS = [0.04, 0.02, 0.01]
MAKERS = {"normalized-gd": rules.normalized_gd, "sam": rules.sam, "clip-gd": rules.clipped_gd}
r, c = sp.Symbol("r", real=True), sp.Symbol("c", real=True)

G, HG = T.GRAD, T.node([T.GRAD])
NORM_G = ("norm", G)
GHG = ("dot", G, HG)


def _scaled(factor: dict, t: T.Tree) -> T.Tree:
    return T.with_factor(tuple(sorted(factor.items())), t)


def _exact(v: dict) -> dict:
    return {t: sp.nsimplify(T.as_expr(c)) for t, c in v.items()}


def test_normalized_gd_order_one_is_the_hand_formula():
    me = modified_equation(rules.normalized_gd(), 1)
    assert _exact(me.terms[0]) == {_scaled({NORM_G: -1}, G): -1}
    assert _exact(me.terms[1]) == {
        _scaled({NORM_G: -2}, HG): sp.Rational(-1, 2),
        _scaled({GHG: 1, NORM_G: -4}, G): sp.Rational(1, 2),
    }


def test_clipping_is_normalized_gd_at_rate_eta_c():
    ours, ngd = (
        modified_equation(rules.clipped_gd(), 2),
        modified_equation(rules.normalized_gd(), 2),
    )
    for k in range(3):
        assert set(ours.terms[k]) == set(ngd.terms[k])
        for t, value in ours.terms[k].items():
            assert sp.simplify(T.as_expr(value) - c ** (k + 1) * T.as_expr(ngd.terms[k][t])) == 0


def test_sam_order_one_is_the_hand_formula():
    me = modified_equation(rules.sam(), 1)
    assert _exact(me.terms[0]) == {G: -1}
    terms = {t: sp.simplify(T.as_expr(value)) for t, value in me.terms[1].items()}
    assert terms == {HG: sp.Rational(-1, 2), _scaled({NORM_G: -1}, HG): -r}


@pytest.mark.parametrize("name", MAKERS)
def test_agrees_with_the_coordinate_route(name):
    rule = MAKERS[name]()
    values = {r: sp.Rational(3, 2), c: sp.Rational(1, 2)}
    polynomial = LOSS - sp.sin(x) / 5  # the coordinate route's radicals stay small
    point = {x: sp.Rational(1, 2), y: -1}
    for k, (a, b) in enumerate(order_one_pairs(rule, values, polynomial, COORDS, point)):
        for u, v in zip(a, b):
            assert abs(sp.N(u - v, 30)) < 1e-25, (name, k, a, b)
        assert any(abs(sp.N(u, 30)) > 1e-4 for u in a)  # not a trivial agreement


SLOPE_CASES = [(name, p) for name in MAKERS for p in (0, 1, 2)]
SLOPE_CASES += [("normalized-gd", 3), ("sam", 3)]  # clipping's order-3 errors reach rounding


@pytest.mark.parametrize(("name", "p"), SLOPE_CASES)
def test_convergence_slope_is_p_plus_one(name, p):
    me = modified_equation(MAKERS[name](), p)
    slope, errors = convergence_slope(me, LOSS, COORDS, THETA0, PARAMS, etas=ETAS, horizon=1.0)
    assert abs(slope - (p + 1)) < 0.2, (name, p, slope, errors)
    assert errors[-1] > 1e-13, errors  # above the rounding floor (about 1e-15 a step)


def test_clipping_stays_on_its_active_region():
    """Along the simulated path ‖∇L‖ > c, so the clipped step min(1, c/‖∇L‖)·∇L is the rule."""
    grad_fn = gradient_function(LOSS, COORDS)
    path = iterate(rules.clipped_gd(), THETA0, 25, {**PARAMS, "eta": 0.04}, grad_fn)
    norms = [np.linalg.norm(grad_fn(theta)) for theta in path]
    assert min(norms) > 4 * PARAMS["c"], min(norms)


def _torch_loss(t):
    return (t[0] - 3) ** 2 / 2 + (t[1] + 3) ** 2 + t[0] * t[1] ** 2 / 10 + torch.sin(t[0]) / 5


@pytest.mark.parametrize("name", MAKERS)
def test_torch_route_agrees_with_the_sympy_route(name):
    me = modified_equation(MAKERS[name](), 2)
    values = {**PARAMS, "eta": 0.05}
    point = np.array([0.4, -0.3])
    ours = torch_field(me, _torch_loss, torch.tensor(point, dtype=torch.float64), values).numpy()
    theirs = field_function(me, LOSS, COORDS, values)(point)
    assert np.allclose(ours, theirs, rtol=1e-12, atol=0), (ours, theirs)


@pytest.mark.parametrize("name", MAKERS)
def test_float64_field_matches_the_exact_value(name):
    """The numpy hand-off in float64 against the field evaluated exactly (30 digits) at the
    same point: every order, relative 1e-12."""
    me = modified_equation(MAKERS[name](), 3)
    values = {**PARAMS, "eta": 0.05}
    point = np.array([0.4, -0.3])
    ours = field_function(me, LOSS, COORDS, values)(point)
    exact = {x: sp.Rational("0.4"), y: sp.Rational("-0.3"), r: 1, c: sp.Rational(1, 2)}
    field = ConcreteEvaluator(LOSS, COORDS)
    total = sum(
        (field.vec(f) * sp.Rational(1, 20) ** k for k, f in enumerate(me.terms)), sp.zeros(2, 1)
    )
    theirs = np.array([float(sp.N(v.xreplace(exact), 30)) for v in total])
    assert np.allclose(ours, theirs, rtol=1e-12, atol=0), (ours, theirs)


def test_a_point_where_the_gradient_vanishes_is_refused():
    me = modified_equation(rules.normalized_gd(), 1)
    bowl = x**2 + y**2
    with pytest.raises(NmechError, match="vanishes at this point"):
        field_function(me, bowl, COORDS, {"eta": 0.1})(np.array([0.0, 0.0]))
    point = torch.zeros(2, dtype=torch.float64)
    with pytest.raises(NmechError, match="vanishes at this point"):
        torch_field(me, lambda t: (t**2).sum(), point, {"eta": 0.1})
    with pytest.raises(NmechError, match="vanishes"):
        iterate(rules.normalized_gd(), np.zeros(2), 1, {"eta": 0.1}, lambda t: 2 * t)


def test_no_modified_loss_and_no_inverse_problem():
    for name in MAKERS:
        loss = modified_equation(MAKERS[name](), 1).modified_loss()
        assert loss.exists_through == -1 and loss.reason is not None
    with pytest.raises(NmechError):
        modifying_rule(rules.sam(), order=1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("theta_next = theta - eta*norm(grad(theta))", "a norm can only multiply a vector"),
        ("theta_next = theta - eta*grad(theta)*norm(grad(theta))**(1/2)", "integer power"),
        ("theta_next = theta - eta*grad(theta)/norm(grad(theta) + theta)", "several"),
        (
            "theta_next = theta - eta*grad(theta)/norm(grad(theta + eta*theta) - grad(theta))",
            "vanishes at eta = 0",
        ),
        ("theta_next = theta - eta*grad(theta)/norm(beta*grad(theta))", "sign of the coefficient"),
        (
            "m_next = beta*m + grad(theta)\ntheta_next = theta - eta*m_next/norm(m_next)",
            "of a rule's state",
        ),
        ("theta_next = theta - eta*sqrt(grad(theta)**2/norm(grad(theta)))", "entry-wise"),
        ("theta_next = theta - eta*grad(theta)/norm(eta)", "norm of a constant"),
        ("theta_next = theta - eta*grad(theta)/norm(theta, theta)", "exactly one argument"),
    ],
)
def test_bad_norms_are_one_line_errors(text, message):
    with pytest.raises(NmechError, match=message) as info:
        modified_equation(rules.parse(text), 1)
    assert "\n" not in str(info.value)


def test_norm_of_a_positive_multiple_and_its_powers():
    """‖2∇L‖² ∇L = 4‖∇L‖² ∇L and ∇L/‖∇L‖³ ‖∇L‖² = ∇L/‖∇L‖: monomials multiply exactly."""
    a = modified_equation(
        rules.parse("theta_next = theta - eta*grad(theta)*norm(2*grad(theta))**2"), 0
    )
    assert _exact(a.terms[0]) == {_scaled({NORM_G: 2}, G): -4}
    b = modified_equation(
        rules.parse(
            "theta_next = theta - eta*grad(theta)*norm(grad(theta))**2/norm(grad(theta))**3"
        ),
        1,
    )
    assert b.terms == modified_equation(rules.normalized_gd(), 1).terms


def test_printing():
    me = modified_equation(rules.normalized_gd(), 1)
    assert "⟨∇L, ∇²L∇L⟩ ∇L/‖∇L‖⁴" in me.text()
    assert "\\left\\|\\nabla L\\right\\|^{4}" in me.latex()
    rows = me.to_json()["terms"]
    assert rows[0]["tree"] == {"scaled": [{"norm": ["grad"], "power": -1}], "tree": "grad"}


def test_inner_products_are_canonical_under_the_symmetry_of_derivatives():
    """⟨∇L, (∇²L)²∇L⟩ = ‖∇²L∇L‖², ⟨∇²L∇L, ∇³L[∇L, ∇L]⟩ = ⟨∇L, ∇³L[∇L, ∇²L∇L]⟩; so normalised
    GD's order-2 field has the one term 5/12 ‖∇²L∇L‖² ∇L/‖∇L‖⁵ (1/3 + 1/12), no second spelling."""
    square = ((("norm", HG), 2),)
    assert T.dot_atom(G, T.node([HG])) == T.dot_atom(HG, HG) == square
    assert T.dot_atom(HG, T.node([G, G])) == T.dot_atom(G, T.node([G, HG]))
    assert T.dot_atom(G, T.node([G, G])) != T.dot_atom(HG, HG)
    f2 = _exact(modified_equation(rules.normalized_gd(), 2).terms[2])
    assert f2[_scaled({NORM_G: -5, ("norm", HG): 2}, G)] == sp.Rational(5, 12)
    assert not any(("dot", G, T.node([HG])) in dict(t.factor) for t in f2)
