"""Adaptive rules (RMSProp, Adam, AdamW): element-wise modified equations, checked against
torch.optim, known limits, the one-step backward-error formula, and convergence slopes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import sympy as sp
import torch

from nmech.derive import modified_equation, rules
from nmech.derive.symbols import alpha, beta, beta1, beta2, eps, eta, lam, tau
from nmech.errors import NmechError
from nmech.numerics.flows import convergence_slope
from nmech.numerics.simulate import iterate

x, y = sp.symbols("x y", real=True)
COORDS = [x, y]
# gradient components keep their signs along the runs below (|·| is smooth there)
LOSS = 3 * x - 2 * y + sp.sin(x) / 2 + x * y / 4 + y**2 / 2
POINT = {x: sp.Rational(3, 10), y: sp.Rational(-1, 2)}


def _at(field: sp.Matrix, values: dict) -> np.ndarray:
    return np.array([float(sp.N(e.xreplace({**POINT, **values}), 30)) for e in field])


# ---------------------------------------------------------------- the rules are torch's
A = np.array([[3.0, 0.5], [0.5, 1.0]])
B = np.array([1.0, -2.0])


def _torch_iterates(cls, steps: int, **kw) -> np.ndarray:
    p = torch.nn.Parameter(torch.tensor([0.3, -0.7], dtype=torch.float64))
    opt = cls([p], **kw)
    out = [p.detach().clone().numpy()]
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * p @ torch.tensor(A) @ p - torch.tensor(B) @ p).backward()
        opt.step()
        out.append(p.detach().clone().numpy())
    return np.array(out)


TORCH_CASES = [
    (rules.adam(weight_decay=True), torch.optim.Adam, {"betas": (0.8, 0.95), "weight_decay": 0.1}),
    (rules.adamw(), torch.optim.AdamW, {"betas": (0.8, 0.95), "weight_decay": 0.1}),
    (rules.rmsprop(weight_decay=True), torch.optim.RMSprop, {"alpha": 0.9, "weight_decay": 0.1}),
    (
        rules.rmsprop(momentum=True),
        torch.optim.RMSprop,
        {"alpha": 0.9, "momentum": 0.7},
    ),
]


@pytest.mark.parametrize(("rule", "cls", "kw"), TORCH_CASES, ids=[c[0].name for c in TORCH_CASES])
def test_rules_are_torch_optimizers(rule, cls, kw):
    params = {"eta": 0.05, "eps": 1e-3, "lam": kw.get("weight_decay", 0.0)}
    params |= {"beta1": kw.get("betas", (0, 0))[0], "beta2": kw.get("betas", (0, 0))[1]}
    params |= {"alpha": kw.get("alpha", 0.0), "beta": kw.get("momentum", 0.0)}
    ours = iterate(rule, np.array([0.3, -0.7]), 40, params, lambda th: A @ th - B)
    theirs = _torch_iterates(cls, 40, lr=0.05, eps=1e-3, **kw)
    assert np.abs(ours - theirs).max() < 1e-12


# ---------------------------------------------------------------- known formulas
def test_rmsprop_without_memory_is_the_one_step_formula():
    """α = 0: θ⁺ = θ − η φ(∇L), φ(g) = g/(|g| + ε) entry-wise, a one-step method, whose
    first correction is −½ Dφ·φ = −½ φ′(∇L) ⊙ ∇²L φ(∇L), φ′(g) = ε/(|g| + ε)²."""
    me = modified_equation(rules.rmsprop(), 1)
    g = sp.Matrix([sp.diff(LOSS, c) for c in COORDS])
    H = sp.hessian(LOSS, COORDS)
    phi = g.applyfunc(lambda gi: gi / (sp.Abs(gi) + eps))
    dphi = g.applyfunc(lambda gi: eps / (sp.Abs(gi) + eps) ** 2)
    expected = -phi + eta * (-sp.Rational(1, 2) * dphi.multiply_elementwise(H * phi))
    values = {alpha: 0, eps: sp.Rational(1, 3), eta: sp.Rational(1, 10)}
    assert np.allclose(_at(me.field(LOSS, COORDS), values), _at(expected, values), rtol=1e-12)


def test_adam_leading_order_is_sign_like_descent():
    """Leading order of Adam (Cattaneo et al. 2024; Kingma & Ba's 'sign descent' limit):
    θ̇ = −∇L/(|∇L| + ε), independent of β₁, β₂."""
    me = modified_equation(rules.adam(), 0)
    g = sp.Matrix([sp.diff(LOSS, c) for c in COORDS])
    expected = -g.applyfunc(lambda gi: gi / (sp.Abs(gi) + eps))
    values = {beta1: sp.Rational(9, 10), beta2: sp.Rational(99, 100), eps: sp.Rational(1, 5)}
    assert np.allclose(_at(me.field(LOSS, COORDS), values), _at(expected, values), rtol=1e-14)


@pytest.mark.parametrize("big", [10**4, 10**6])
def test_adam_large_eps_is_heavy_ball_with_step_eta_over_eps(big):
    """ε → ∞: m/(√v + ε) → m/ε, so Adam is torch SGD with momentum β₁ and dampening β₁ at
    step h = η/ε; in the time s = nh: ε F₀ → F₀ᴴᴮ, ε² F₁ → F₁ᴴᴮ with error O(1/ε)."""
    adam = modified_equation(rules.adam(), 1)
    hb = modified_equation(rules.torch_sgd(dampening=True), 1)
    values = {beta1: sp.Rational(1, 2), beta2: sp.Rational(3, 4), eps: big}
    hb_values = {beta: sp.Rational(1, 2), tau: sp.Rational(1, 2)}
    for k, power in ((0, 1), (1, 2)):
        ours = _at(big**power * _term(adam, k), values)
        theirs = _at(_term(hb, k), hb_values)
        assert np.abs(ours - theirs).max() < 50.0 / big * np.abs(theirs).max()


def test_eps_inside_rmsprop_is_gd_with_step_eta_over_sqrt_eps():
    """The smooth variant g/√(v + ε) (the backward-error literature's): as ε → ∞ it is GD with
    step η/√ε: √ε F₀ → −∇L, ε F₁ → −½∇²L∇L."""
    me = modified_equation(rules.rmsprop(eps_inside=True), 1)
    gd = modified_equation(rules.gd(), 1)
    errors = []
    for big in (10**4, 10**6):
        values = {alpha: sp.Rational(1, 2), eps: big}
        ours = np.concatenate([_at(sp.sqrt(big) ** (k + 1) * _term(me, k), values) for k in (0, 1)])
        theirs = np.concatenate([_at(_term(gd, k), {}) for k in (0, 1)])
        errors.append(np.abs(ours - theirs).max() / np.abs(theirs).max())
    assert errors[1] < 1e-4 and errors[1] < errors[0] / 50  # O(1/ε)


def _term(me, k: int) -> sp.Matrix:
    from nmech.derive.algebra.concrete import ConcreteEvaluator

    return ConcreteEvaluator(LOSS, COORDS).vec(me.terms[k])


# ---------------------------------------------------------------- convergence slopes
ETAS = [0.04, 0.02, 0.01]
SLOPE_CASES = [
    ("adam", rules.adam(), {"beta1": 0.5, "beta2": 0.6, "eps": 0.1}),
    ("adamw", rules.adamw(), {"beta1": 0.5, "beta2": 0.6, "eps": 0.1, "lam": 0.3}),
    ("rmsprop-momentum", rules.rmsprop(momentum=True), {"alpha": 0.5, "beta": 0.3, "eps": 0.1}),
]


@pytest.mark.parametrize(("name", "rule", "params"), SLOPE_CASES, ids=[c[0] for c in SLOPE_CASES])
def test_first_order_correction_raises_the_slope_to_two(name, rule, params):
    theta0 = np.array([0.3, -0.5])
    slopes = []
    for p in (0, 1):
        me = modified_equation(rule, p)
        slope, errors = convergence_slope(me, LOSS, COORDS, theta0, params, etas=ETAS, horizon=0.5)
        assert all(a > b for a, b in itertools.pairwise(errors)), errors
        slopes.append(slope)
    assert abs(slopes[0] - 1) < 0.2 and abs(slopes[1] - 2) < 0.25, (name, slopes)


def test_decoupled_decay_enters_the_leading_term():
    """AdamW's decay is outside the preconditioner: F₀ = −∇L/(|∇L| + ε) − λθ."""
    me = modified_equation(rules.adamw(), 0)
    g = sp.Matrix([sp.diff(LOSS, c) for c in COORDS])
    expected = -g.applyfunc(lambda gi: gi / (sp.Abs(gi) + eps)) - lam * sp.Matrix(COORDS)
    values = {eps: sp.Rational(1, 5), lam: sp.Rational(1, 10)}
    assert np.allclose(_at(me.field(LOSS, COORDS), values), _at(expected, values), rtol=1e-14)


ADAM_TEXT = """
m_next = beta1*m + (1 - beta1)*grad(theta)
v_next = beta2*v + (1 - beta2)*grad(theta)*grad(theta)
theta_next = theta - eta*(m_next/(1 - beta1**step))/(sqrt(v_next/(1 - beta2**step)) + eps)
"""


def test_adam_written_as_rule_text_is_torch_adam():
    """The rule language's element-wise operations: Adam in text, bias corrections included,
    iterates like torch.optim.Adam and has the built-in's modified equation."""
    rule = rules.parse(ADAM_TEXT)
    params = {"eta": 0.05, "eps": 1e-3, "beta1": 0.8, "beta2": 0.95}
    ours = iterate(rule, np.array([0.3, -0.7]), 40, params, lambda th: A @ th - B)
    theirs = _torch_iterates(torch.optim.Adam, 40, lr=0.05, eps=1e-3, betas=(0.8, 0.95))
    assert np.abs(ours - theirs).max() < 1e-12
    values = {beta1: sp.Rational(1, 2), beta2: sp.Rational(3, 4), eps: sp.Rational(1, 5)}
    for k in (0, 1):
        text = _at(_term(modified_equation(rule, 1), k), values)
        built = _at(_term(modified_equation(rules.adam(), 1), k), values)
        assert np.allclose(text, built, rtol=1e-12)


def test_step_outside_an_exponent_is_refused():
    rule = rules.parse("theta_next = theta - eta/step*grad(theta)")
    with pytest.raises(NmechError, match="only as an exponent") as info:
        modified_equation(rule, 1)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "rule", [rules.rmsprop(momentum=True), rules.adamw()], ids=["rmsprop-momentum", "adamw"]
)
def test_coordinate_route_agrees(rule):
    """The independent coordinate route (nmech.reference.naive: concrete sympy vectors, Jacobians,
    no trees) gives the same F₀, F₁. One coordinate and rational parameters keep sympy's
    expressions small enough; the 2-D entry-wise structure is checked by the slopes above."""
    from nmech.derive.algebra.concrete import ConcreteEvaluator
    from nmech.reference.naive import naive_modified_field

    R = sp.Rational
    values = {alpha: R(1, 2), beta1: R(1, 2), beta2: R(3, 5), eps: R(1, 10), lam: R(3, 10)}
    values[beta] = R(3, 10)
    rule = rule.after_transient().with_values(values)
    loss = 3 * x + sp.sin(x) / 2 + x**2 / 5
    naive = naive_modified_field(rule, 1, loss, [x], simplify=False)
    me = modified_equation(rule, 1)
    for k in (0, 1):
        ours = complex(sp.N(ConcreteEvaluator(loss, [x]).vec(me.terms[k])[0].xreplace(POINT)))
        theirs = complex(sp.N(naive[k][0].xreplace(POINT)))
        assert abs(ours - theirs) < 1e-12 * abs(theirs) and abs(theirs) > 1e-3


def test_second_order_rmsprop_slope_is_three():
    """Any order, not only the first: with F₂ kept the error over fixed time is O(η³)."""
    me = modified_equation(rules.rmsprop(), 2)
    slope, errors = convergence_slope(
        me, LOSS, COORDS, np.array([0.3, -0.5]), {"alpha": 0.5, "eps": 0.1}, ETAS, horizon=0.5
    )
    assert abs(slope - 3) < 0.25 and errors[-1] > 1e-11, (slope, errors)


def test_latex_writes_entrywise_products_and_papers_signs():
    latex = modified_equation(rules.adam(), 1).latex()
    assert "\\odot" in latex and "\\left|{\\nabla L}\\right|" in latex
    assert "\\left(1 - \\beta_1\\right)" in latex and "beta1" not in latex
    assert "\\beta_1 \\odot" not in latex and "\\epsilon \\odot" not in latex  # scalars: no ⊙
