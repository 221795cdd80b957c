"""Known modified equations and modified losses, checked exactly (sympy), dimension-free and on
concrete losses."""

from __future__ import annotations

import json

import pytest
import sympy as sp

from nmech.derive import modified_equation, rules
from nmech.derive.algebra import trees as T
from nmech.derive.bea import potential as P
from nmech.derive.symbols import beta, eta, lam, tau
from nmech.errors import NmechError

x, y = sp.symbols("x y", real=True)
COORDS = [x, y]
LOSS = x**2 / 2 + y**2 + x**4 / 4 + x * y**2 / 2 + sp.Rational(3, 10) * sp.sin(x)

G = T.GRAD  # ∇L
HG = T.node([G])  # ∇²L∇L
H2G = T.node([HG])  # (∇²L)²∇L
TGG = T.node([G, G])  # ∇³L[∇L,∇L]
HTH = T.node([T.THETA])  # ∇²L θ


def chain(k: int) -> T.Tree:
    """(∇²L)^k ∇L."""
    t = G
    for _ in range(k):
        t = T.node([t])
    return t


def same(a, b) -> bool:
    return sp.simplify(sp.sympify(a) - sp.sympify(b)) == 0


def same_vec(a: dict, b: dict) -> bool:
    keys = set(a) | set(b)
    return all(same(a.get(t, 0), b.get(t, 0)) for t in keys)


def same_matrix(a: sp.Matrix, b: sp.Matrix) -> bool:
    return all(sp.simplify(e) == 0 for e in (a - b))


def grad_of(expr: sp.Expr) -> sp.Matrix:
    return sp.Matrix([sp.diff(expr, c) for c in COORDS])


def norm2_grad(loss: sp.Expr) -> sp.Expr:
    g = grad_of(loss)
    return (g.T * g)[0, 0]


def scalar_key(t: T.Tree):
    """Key of the scalar whose gradient contains the vector tree t (e.g. HG -> |∇L|²)."""
    return P.closed(t).key


def loss_terms(ml) -> list[dict]:
    return [{s.key: c for s, c in phi.items()} for phi in ml.terms]


# ------------------------------------------------------------------ gradient descent
def test_gd_first_and_second_order_trees():
    me = modified_equation(rules.gd(), 2)
    assert same_vec(me.terms[0], {G: -1})
    assert same_vec(me.terms[1], {HG: sp.Rational(-1, 2)})
    assert same_vec(me.terms[2], {H2G: sp.Rational(-1, 3), TGG: sp.Rational(-1, 12)})
    assert me.states == {}
    assert me.correction(2) is me.terms[2]


def test_gd_field_on_concrete_loss():
    me = modified_equation(rules.gd(), 2)
    g = grad_of(LOSS)
    H = sp.hessian(LOSS, COORDS)
    Tgg = sp.Matrix([(g.T * sp.hessian(gi, COORDS) * g)[0, 0] for gi in g])
    expected = -g - eta / 2 * H * g - eta**2 * (H * H * g / 3 + Tgg / 12)
    assert same_matrix(me.field(LOSS, COORDS), expected)


def test_gd_modified_loss_first_order():
    ml = modified_equation(rules.gd(), 1).modified_loss()
    assert ml.scale == 1
    assert ml.exists_through == 1
    assert ml.obstruction is None
    terms = loss_terms(ml)
    assert terms[0] == {scalar_key(G): 1}
    assert list(terms[1]) == [scalar_key(HG)]
    assert same(terms[1][scalar_key(HG)], sp.Rational(1, 4))
    latex = ml.latex()
    assert "\\frac{1}{4}" in latex and "\\left\\|\\nabla L\\right\\|^2" in latex


def test_gd_first_order_field_is_gradient_of_modified_loss_concretely():
    me = modified_equation(rules.gd(), 1)
    modified = LOSS + eta / 4 * norm2_grad(LOSS)
    assert same_matrix(me.field(LOSS, COORDS), -grad_of(modified))


def test_gd_second_order_has_no_modified_loss():
    ml = modified_equation(rules.gd(), 2).modified_loss()
    assert ml.obstruction == 2
    assert ml.exists_through == 1
    assert len(ml.terms) == 2


def test_gd_second_order_term_is_not_a_gradient_concretely():
    """Independent of the tree curl test: the Jacobian of F_2 on a 2-D loss is not symmetric."""
    me = modified_equation(rules.gd(), 2)
    f2 = me.field(LOSS, COORDS).applyfunc(lambda e: sp.expand(e).coeff(eta, 2))
    J = f2.jacobian(COORDS)
    asym = sp.simplify(J[0, 1] - J[1, 0])
    assert asym != 0
    assert abs(float(asym.subs({x: 0.3, y: -0.7}))) > 1e-6


def test_gd_order_zero_is_gradient_flow():
    me = modified_equation(rules.gd(), 0)
    assert len(me.terms) == 1
    assert same_matrix(me.field(LOSS, COORDS), -grad_of(LOSS))
    ml = me.modified_loss()
    assert ml.exists_through == 0 and ml.obstruction is None


def test_gd_weight_decay_is_gd_on_decayed_loss():
    decayed = LOSS + lam / 2 * (x**2 + y**2)
    with_wd = modified_equation(rules.gd(weight_decay=True), 2).field(LOSS, COORDS)
    plain = modified_equation(rules.gd(), 2).field(decayed, COORDS)
    assert same_matrix(with_wd, plain)


# ------------------------------------------------------------------ quadratic loss, all orders
A = sp.Matrix([[2, 1], [1, 3]])
QUADRATIC = (sp.Matrix(COORDS).T * A * sp.Matrix(COORDS))[0, 0] / 2
ORDER = 5


def test_quadratic_gd_coefficients_all_orders():
    me = modified_equation(rules.gd(), ORDER)
    field = me.field(QUADRATIC, COORDS).applyfunc(sp.expand)
    th = sp.Matrix(COORDS)
    for k in range(ORDER + 1):
        coefficient = field.applyfunc(lambda e, k=k: e.coeff(eta, k))
        assert same_matrix(coefficient, -(A ** (k + 1)) * th / (k + 1)), k


def test_quadratic_gd_matches_matrix_logarithm_series():
    """θ̇ = (1/η) log(I − ηA) θ: expand log(1 − ηa)/η as a power series in η, evaluate it at A."""
    a = sp.Symbol("a")
    series = sp.series(sp.log(1 - eta * a) / eta, eta, 0, ORDER + 1).removeO()
    th = sp.Matrix(COORDS)
    expected = sp.zeros(2, 1)
    for k in range(ORDER + 1):
        poly = sp.Poly(sp.expand(series).coeff(eta, k), a)
        matrix = sum((c * A**m for (m,), c in poly.terms()), sp.zeros(2, 2))
        expected += eta**k * matrix * th
    me = modified_equation(rules.gd(), ORDER)
    assert same_matrix(me.field(QUADRATIC, COORDS), expected)


def test_gd_chain_trees_have_logarithm_coefficients_through_order_8():
    """Only the chains (∇²L)^k∇L survive on a quadratic, so their coefficients are −1/(k+1)."""
    me = modified_equation(rules.gd(), 8)
    for k in range(9):
        assert me.terms[k].get(chain(k)) == sp.Rational(-1, k + 1), k
    assert me.terms[8] and len(me.terms[8]) > 1  # non-chain trees appear too


# ------------------------------------------------------------------ momentum
def test_heavy_ball_first_order():
    me = modified_equation(rules.heavy_ball(), 1)
    assert same_vec(me.terms[0], {G: -1 / (1 - beta)})
    # -(1/(1-β)) ∇[η(1+β)/(4(1-β)²)|∇L|²] = -η(1+β)/(2(1-β)³) ∇²L∇L
    assert same_vec(me.terms[1], {HG: -(1 + beta) / (2 * (1 - beta) ** 3)})


def test_heavy_ball_modified_loss():
    ml = modified_equation(rules.heavy_ball(), 1).modified_loss()
    assert same(ml.scale, 1 / (1 - beta))
    assert ml.obstruction is None and ml.exists_through == 1
    terms = loss_terms(ml)
    assert terms[0] == {scalar_key(G): 1}
    assert list(terms[1]) == [scalar_key(HG)]
    assert same(terms[1][scalar_key(HG)], (1 + beta) / (4 * (1 - beta) ** 2))


def test_heavy_ball_field_on_concrete_loss():
    me = modified_equation(rules.heavy_ball(), 1)
    modified = LOSS + eta * (1 + beta) / (4 * (1 - beta) ** 2) * norm2_grad(LOSS)
    assert same_matrix(me.field(LOSS, COORDS), -grad_of(modified) / (1 - beta))


def test_heavy_ball_with_weight_decay_modified_loss_concretely():
    decayed = LOSS + lam / 2 * (x**2 + y**2)
    me = modified_equation(rules.heavy_ball(weight_decay=True), 1)
    modified = decayed + eta * (1 + beta) / (4 * (1 - beta) ** 2) * norm2_grad(decayed)
    assert same_matrix(me.field(LOSS, COORDS), -grad_of(modified) / (1 - beta))
    ml = me.modified_loss()
    assert ml.exists_through == 1
    theta_norm = P.closed(T.THETA).key  # |θ|² (from ∇ of ⟨θ, θ⟩)
    assert same(loss_terms(ml)[0][theta_norm], lam / 2)


def test_heavy_ball_slow_manifold_state():
    """θ_{n−1} = φ_{−η}(θ_n) = θ + η g/(1−β) + O(η²) on the slow manifold."""
    me = modified_equation(rules.heavy_ball(), 1)
    prev = me.state("theta_prev", LOSS, COORDS).applyfunc(sp.expand)
    th, g = sp.Matrix(COORDS), grad_of(LOSS)
    assert same_matrix(prev.applyfunc(lambda e: e.coeff(eta, 0)), th)
    assert same_matrix(prev.applyfunc(lambda e: e.coeff(eta, 1)), g / (1 - beta))
    with pytest.raises(NmechError, match="no state 'v'"):
        me.state("v", LOSS, COORDS)


def test_nesterov_first_order():
    """Nesterov = heavy ball with ∇L replaced by ∇L − ηβ/(1−β)∇²L∇L at first order, hence
    L̃ = L + η(1 − β + 2β²)/(4(1−β)²)|∇L|² (derived by hand for this test)."""
    me = modified_equation(rules.nesterov(), 1)
    assert same_vec(me.terms[0], {G: -1 / (1 - beta)})
    assert same_vec(me.terms[1], {HG: -(1 - beta + 2 * beta**2) / (2 * (1 - beta) ** 3)})
    ml = me.modified_loss()
    assert same(loss_terms(ml)[1][scalar_key(HG)], (1 - beta + 2 * beta**2) / (4 * (1 - beta) ** 2))


def test_torch_sgd_equals_heavy_ball_exactly():
    torch = modified_equation(rules.torch_sgd(momentum=True), 2)
    hb = modified_equation(rules.heavy_ball(), 2)
    assert len(torch.terms) == len(hb.terms) == 3
    for k in range(3):
        assert same_vec(torch.terms[k], hb.terms[k]), k
    assert hb.terms[2]  # not vacuous


def test_torch_buffer_is_scaled_previous_step():
    """v_n = (θ_{n−1} − θ_n)/η on the slow manifold."""
    torch = modified_equation(rules.torch_sgd(momentum=True), 1)
    hb = modified_equation(rules.heavy_ball(), 2)
    v = torch.state("v", LOSS, COORDS)
    prev = hb.state("theta_prev", LOSS, COORDS)
    # hb's θ_prev through η³ determines v through η²
    expected = ((prev - sp.Matrix(COORDS)) / eta).applyfunc(sp.expand)
    difference = (v - expected).applyfunc(sp.expand)
    for k in range(3):
        assert all(sp.simplify(e.coeff(eta, k)) == 0 for e in difference), k


def test_torch_rule_text_equals_heavy_ball_with_weight_decay():
    text = "v_next = beta*v + grad(theta) + lam*theta\ntheta_next = theta - eta*v_next"
    mine = modified_equation(rules.parse(text), 2)
    hb = modified_equation(rules.heavy_ball(weight_decay=True), 2)
    for k in range(3):
        assert same_vec(mine.terms[k], hb.terms[k]), k
    assert T.THETA in hb.terms[0] and HTH in hb.terms[1]  # weight decay is really in there


def test_torch_dampening_rescales_the_learning_rate():
    """v⁺ = βv + (1−τ)∇L is heavy ball with η(1−τ): F_k = (1−τ)^{k+1} F_k^{HB}."""
    damp = modified_equation(rules.torch_sgd(momentum=True, dampening=True), 2)
    hb = modified_equation(rules.heavy_ball(), 2)
    for k in range(3):
        assert same_vec(damp.terms[k], T.scaled(hb.terms[k], (1 - tau) ** (k + 1))), k


def test_torch_without_momentum_is_gd():
    plain = modified_equation(rules.torch_sgd(momentum=0, weight_decay=0.1), 2)
    gd = modified_equation(rules.gd(weight_decay=True), 2)
    assert plain.terms == gd.terms
    assert plain.rule.defaults == {"beta": 0.0, "lam": 0.1}


# ------------------------------------------------------------------ presentation
def test_latex_text_and_json():
    me = modified_equation(rules.gd(), 2)
    latex = me.latex()
    assert latex.startswith("\\dot\\theta = -\\nabla L")
    assert "\\nabla^2 L" in latex and "\\nabla^3 L[\\nabla L, \\nabla L]" in latex
    assert latex.endswith("O(\\eta^{3})")
    text = me.text()
    assert text.startswith("dθ/dt = (-∇L)") and "∇³L[∇L, ∇L]" in text
    doc = json.loads(me.to_json_text())
    assert doc == me.to_json()
    assert doc["schema"] == "nmech.modified_equation/1" and doc["order"] == 2
    assert sorted((t["order"], t["coefficient"]) for t in doc["terms"]) == [
        (0, "-1"),
        (1, "-1/2"),
        (2, "-1/12"),
        (2, "-1/3"),
    ]


def test_modified_loss_latex_writes_lambda():
    me = modified_equation(rules.heavy_ball(weight_decay=True), 1)
    assert "\\lambda" in me.latex()
    latex = me.modified_loss().latex()
    assert "lam" not in latex.replace("\\lambda", "")


# ------------------------------------------------------------------ bad requests
@pytest.mark.parametrize("order", [-1, 13, 1000, 10**9, 1.5, "2", True, None])
def test_bad_order_is_refused(order):
    with pytest.raises(NmechError) as info:
        modified_equation(rules.gd(), order)
    assert "order" in str(info.value) and "\n" not in str(info.value)


def test_rule_without_theta_next_is_refused():
    with pytest.raises(NmechError, match="never assigns 'theta_next'"):
        rules.Rule(name="broken", assignments=(rules.Assignment("v_next", sp.Symbol("v")),))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("theta_next = theta - grad(theta)", "does not vanish"),
        ("theta_next = theta - eta*grad(2*theta)", "does not tend to theta"),
        ("theta_next = theta - eta*grad(theta)/eta**2", "singular"),
        ("v_next = v + grad(theta)\ntheta_next = theta - eta*v_next", "degenerate"),
        ("v_next = v\ntheta_next = theta - eta*grad(theta)", "never read by theta"),
    ],
)
def test_rules_without_a_modified_equation_are_refused(text, expected):
    with pytest.raises(NmechError) as info:
        modified_equation(rules.parse(text), 1)
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_no_modified_loss_without_a_gradient_term():
    """modified_loss() always returns a ModifiedLoss; without a −∇L leading term it holds no
    terms and says why (obstruction at order 0), in every presentation."""
    loss = modified_equation(rules.parse("theta_next = theta + eta*theta"), 1).modified_loss()
    assert loss.terms == () and loss.obstruction == 0 and loss.exists_through == -1
    assert loss.verdict() == "no modified loss: the leading term has no -grad L component"
    assert loss.latex() == f"% {loss.verdict()}" and loss.text() == loss.verdict()
    assert loss.to_json()["latex"] is None and loss.to_json()["terms"] == []


def test_fractional_power_of_eta_is_refused():
    with pytest.raises(NmechError):
        modified_equation(rules.parse("theta_next = theta - eta**0.5*grad(theta)"), 1)


@pytest.mark.parametrize(
    "text,word",
    [
        ("theta_next = theta - eta**2/eta**3*grad(theta)", "no Taylor series"),
        ("theta_next = theta - eta/(beta - beta)*grad(theta)", "division by zero"),
    ],
)
def test_division_that_vanishes_at_the_expansion_point_is_refused(text, word):
    with pytest.raises(NmechError, match=word) as info:
        modified_equation(rules.parse(text), 1)
    assert "\n" not in str(info.value)
