"""The inverse problem (issue 14 item 5): the rule fed a corrected gradient whose modified
equation is a chosen target. Checked against hand-derived formulas (the Taylor coefficients of
the exact flow of −∇L; heavy ball's first-order modified loss), by the round trip through the
rule language (exact), and numerically: the corrected rule's iterates track the target flow
with a log-log slope p + 1 at fixed time."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import sympy as sp

from nmech.derive import (
    gradient_flow_target,
    modified_equation,
    modifying_rule,
    rules,
    series_target,
)
from nmech.derive.algebra import trees as T
from nmech.derive.algebra.concrete import ConcreteEvaluator
from nmech.derive.bea.modifying import parse_target
from nmech.derive.symbols import beta
from nmech.errors import NmechError
from nmech.numerics.flows import (
    field_function,
    fitted_slope,
    gradient_function,
    integrate,
    lambdify_vector,
    state_function,
)
from nmech.numerics.simulate import iterate

G = T.GRAD  # ∇L
HG = T.node([G])  # ∇²L∇L
H2G = T.node([HG])  # (∇²L)²∇L
H3G = T.node([H2G])  # (∇²L)³∇L
TGG = T.node([G, G])  # ∇³L[∇L, ∇L]
TGHG = T.node([G, HG])  # ∇³L[∇L, ∇²L∇L]
HTGG = T.node([TGG])  # ∇²L∇³L[∇L, ∇L]
FGGG = T.node([G, G, G])  # ∇⁴L[∇L, ∇L, ∇L]

x, y = sp.symbols("x y", real=True)
COORDS = [x, y]
LOSS = x**2 / 2 + y**2 + x**4 / 4 + x * y**2 / 2 + sp.Rational(3, 10) * sp.sin(x)
THETA0 = np.array([0.8, -0.5])
ETAS = [0.04, 0.02, 0.01]
HORIZON = 1.0
TOLERANCE = 0.2


def same(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(sp.simplify(a[t] - b[t]) == 0 for t in a)


def test_gd_gradient_flow_is_the_taylor_series_of_the_exact_flow():
    # Explicit Euler's modifying integrator f + (h/2)f'f + (h²/6)(f''(f,f) + f'f'f) + (h³/24)
    # (f'''(f,f,f) + 3f''(f,f'f) + f'f''(f,f) + f'f'f'f) for f = -∇L, written as θ⁺ = θ - ηG.
    m = modifying_rule(rules.gd(), order=3)
    assert m.rate == 1
    assert same(m.correction(0), {G: 1})
    assert same(m.correction(1), {HG: sp.Rational(-1, 2)})
    assert same(m.correction(2), {TGG: sp.Rational(1, 6), H2G: sp.Rational(1, 6)})
    third = {FGGG: -1, TGHG: -3, HTGG: -1, H3G: -1}
    assert same(m.correction(3), {t: sp.Rational(c, 24) for t, c in third.items()})


def test_regulariser_c_changes_the_first_correction_by_2c():
    # Target -∇L - 2cη∇²L∇L; GD's own first order is -(η/2)∇²L∇L, so h_1 = (2c - 1/2)∇²L∇L:
    # none for c = 1/4 (GD already follows L + (η/4)‖∇L‖² at first order).
    c = sp.Symbol("c", real=True)
    m = modifying_rule(rules.gd(), gradient_flow_target(sp.Symbol("c")), order=1)
    assert same(m.correction(1), {HG: 2 * c - sp.Rational(1, 2)})
    quarter = modifying_rule(rules.gd(), parse_target("regularised:0.25"), order=2)
    assert quarter.correction(1) == {}
    assert same(quarter.correction(2), {TGG: sp.Rational(-1, 12), H2G: sp.Rational(-1, 3)})


def test_heavy_ball_corrects_the_gradient_it_evaluates():
    # Heavy ball's flow -(1/(1-β))∇[L + η(1+β)/(4(1-β)²)‖∇L‖²]: the corrected gradient cancels
    # the regulariser, h_1 = -(1+β)/(2(1-β)²)∇²L∇L.
    m = modifying_rule(rules.heavy_ball(), order=1)
    assert sp.simplify(m.rate - 1 / (1 - beta)) == 0
    assert same(m.correction(1), {HG: -(1 + beta) / (2 * (1 - beta) ** 2)})


@pytest.mark.parametrize(
    ("make", "order", "target"),
    [
        (rules.gd, 1, "gradient-flow"),
        (rules.gd, 3, "gradient-flow"),
        (rules.gd, 2, "regularised:-1/3"),
        (rules.heavy_ball, 2, "gradient-flow"),
        (rules.nesterov, 1, "regularised:1/2"),
        (rules.torch_sgd, 1, "gradient-flow"),
    ],
)
def test_round_trip_through_the_rule_language(make, order, target):
    m = modifying_rule(make(), parse_target(target), order=order)
    fed_back = rules.parse(m.to_rule_text())
    me = modified_equation(fed_back, order + 1)
    for k in range(order + 1):
        assert same(me.terms[k], m.target_terms[k]), k
    defect = m.next_term()
    assert defect, "the realisation leaves a defect at order p + 1 (here never zero)"
    assert same(T.combine([(1, me.terms[order + 1]), (-1, m.target_terms[order + 1])]), defect)
    assert "first v_next" in m.to_rule_text() if make is rules.torch_sgd else True


def test_realisation_uses_gradients_at_shifted_points_only():
    text = modifying_rule(rules.gd(), order=2).to_rule_text()
    body = [line.split("#")[0] for line in text.splitlines() if not line.startswith("#")]
    assert all(line.isascii() for line in body)
    assert "grad(eta*k1 + theta)" in text and "grad(2*eta*k1 + theta)" in text


def test_nesterov_corrects_at_its_look_ahead_point():
    text = modifying_rule(rules.nesterov(), order=1).to_rule_text()
    assert "k1 = grad(y)" in text and "grad(eta*k1 + y)" in text


def test_names_of_the_rule_are_never_reused():
    text = """
k1 = theta + beta*(theta - theta_prev)
corrected = grad(k1)
theta_next = k1 - eta*corrected
"""
    m = modifying_rule(rules.parse(text), order=2)
    fed_back = rules.parse(m.to_rule_text())
    assert {a.target for a in fed_back.assignments} >= {"k1", "corrected", "k_1", "corrected2"}
    me = modified_equation(fed_back, 2)
    assert me.terms[1] == {} and me.terms[2] == {}


def test_a_gradient_at_an_expression_gets_its_point_named():
    inline = rules.parse(
        "theta_next = theta + beta*(theta - theta_prev) - eta*grad(theta + beta*(theta - theta_prev))"
    )
    m = modifying_rule(inline, order=1)
    assert "point = " in m.to_rule_text() and "k1 = grad(point)" in m.to_rule_text()
    nesterov = modifying_rule(rules.nesterov(), order=1)
    assert same(m.correction(1), nesterov.correction(1))  # the same rule, written inline


@pytest.mark.parametrize("order", [1, 2, 3])
def test_realised_gradient_is_the_series_through_eta_p(order):
    """On a concrete loss, G read off one step of the corrected GD, (θ − θ⁺)/η, differs from
    Σ_k η^k h_k(θ) (the trees evaluated by sympy) by O(η^{p+1}): the realisation with gradients
    at shifted points carries the series exactly through η^p (slopes 2.03, 3.08, 4.11)."""
    m = modifying_rule(rules.gd(), order=order)
    evaluator = ConcreteEvaluator(LOSS, COORDS)
    point = dict(zip(COORDS, THETA0, strict=True))
    h = [np.array(evaluator.vec(v).subs(point), dtype=float).reshape(-1) for v in m.gradient]
    grad_fn = gradient_function(LOSS, COORDS)
    etas = [0.1, 0.05, 0.025]
    errors = []
    for eta in etas:
        stepped = iterate(m.corrected, THETA0, 1, {"eta": eta}, grad_fn)[1]
        realised = (THETA0 - stepped) / eta
        series = sum(eta**k * hk for k, hk in enumerate(h))
        errors.append(float(np.linalg.norm(realised - series)))
    assert abs(fitted_slope(etas, errors) - (order + 1)) < TOLERANCE, errors
    assert errors[-1] > 1e-12  # far above rounding: the slope means something


def _target_field(c: float, eta: float, rate: float):
    """-s∇(L + cη‖∇L‖²) by sympy, independent of the engine."""
    gradient = [sp.diff(LOSS, v) for v in COORDS]
    regularised = LOSS + c * eta * sum(g**2 for g in gradient)
    field = sp.Matrix([-rate * sp.diff(regularised, v) for v in COORDS])
    return lambdify_vector(field, COORDS, {})


def _tracking_errors(m, c: float, params: dict, etas: list[float]) -> list[float]:
    grad_fn = gradient_function(LOSS, COORDS)
    me = modified_equation(m.corrected, m.order)
    rate = float(m.rate.subs(beta, params.get("beta", 0)))
    errors = []
    for eta in etas:
        values = {**params, "eta": eta}
        steps = int(round(HORIZON / eta))
        states0 = {s: state_function(me, s, LOSS, COORDS, values)(THETA0) for s in me.states}
        iterates = iterate(m.corrected, THETA0, steps, values, grad_fn, states0, first_step=False)
        flow = integrate(_target_field(c, eta, rate), THETA0, eta * np.arange(steps + 1))
        errors.append(float(np.max(np.linalg.norm(iterates - flow, axis=1))))
    return errors


@pytest.mark.parametrize(
    ("make", "params", "c", "order", "etas"),
    [
        (rules.gd, {}, 0.0, 1, ETAS),
        (rules.gd, {}, 0.0, 2, ETAS),
        (rules.gd, {}, 0.5, 1, ETAS),
        (rules.gd, {}, 0.5, 2, ETAS),
        # heavy ball's rate 1/(1-β) = 2 doubles the effective step: η halved to be asymptotic
        (rules.heavy_ball, {"beta": 0.5}, 0.0, 1, [e / 2 for e in ETAS]),
        (rules.heavy_ball, {"beta": 0.5}, 0.0, 2, [e / 2 for e in ETAS]),
    ],
)
def test_corrected_rule_tracks_the_target_flow_at_order_p_plus_one(make, params, c, order, etas):
    m = modifying_rule(make(), gradient_flow_target(str(c)), order=order)
    errors = _tracking_errors(m, c, params, etas)
    slope = fitted_slope(etas, errors)
    assert abs(slope - (order + 1)) < TOLERANCE, (slope, errors)
    assert all(a > b for a, b in itertools.pairwise(errors)), errors
    assert errors[-1] > 1e-11  # above the integrator's tolerance: the slope means something


def test_uncorrected_gd_misses_the_gradient_flow_at_first_order():
    # the contrast: plain GD against -∇L has slope 1, the corrected rule 2 (test above)
    me = modified_equation(rules.gd(), 0)
    grad_fn = gradient_function(LOSS, COORDS)
    errors = []
    for eta in ETAS:
        steps = int(round(HORIZON / eta))
        iterates = iterate(rules.gd(), THETA0, steps, {"eta": eta}, grad_fn)
        field = field_function(me, LOSS, COORDS, {"eta": eta})
        flow = integrate(field, THETA0, eta * np.arange(steps + 1))
        errors.append(float(np.max(np.linalg.norm(iterates - flow, axis=1))))
    assert abs(fitted_slope(ETAS, errors) - 1) < TOLERANCE


def test_explicit_series_target():
    # the target GD's own modified equation through η: nothing to correct at first order
    m = modifying_rule(rules.gd(), series_target([{G: -1}, {HG: sp.Rational(-1, 2)}]), order=1)
    assert m.correction(1) == {}
    assert "target" in m.text()


@pytest.mark.parametrize(
    ("rule", "target", "order", "expected"),
    [
        (rules.adam(), None, 1, "leading flow -s∇L"),
        (rules.gd(weight_decay=True), None, 1, "leading flow -s∇L"),
        (rules.gd(), series_target([{G: -2}]), 1, "leading term differs"),
        (rules.gd(), series_target([{G: -1}, {TGG: 1}]), 1, "without dividing by eta"),
        (rules.gd(), series_target([{G: -1}, {T.node([T.THETA]): 1}]), 1, "cannot be realised"),
        (
            rules.parse("theta_next = theta - eta*grad(theta - eta*grad(theta))"),
            None,
            1,
            "evaluates 2 gradients",
        ),
        (rules.gd(), gradient_flow_target(sp.Symbol("theta")), 1, "names 'theta'"),
        (rules.gd(), series_target([{G: -1}, {HG: sp.Symbol("eta")}]), 1, "free of eta"),
        (rules.gd(), gradient_flow_target(sp.Symbol("grad")), 1, "which rule text cannot"),
        (rules.gd(), None, 0, "outside the supported range"),
        (rules.gd(), None, 9, "outside the supported range"),
    ],
)
def test_refusals(rule, target, order, expected):
    with pytest.raises(NmechError, match=expected):
        modifying_rule(rule, target, order=order)


@pytest.mark.parametrize(
    "text",
    ["gradient", "regularised:", "regularised:1e400", "regularised:x", "regularised:1/0"],
)
def test_bad_targets(text):
    with pytest.raises(NmechError):
        parse_target(text)


@pytest.mark.parametrize("c", [float("nan"), float("inf"), True, "1/00"])
def test_bad_regulariser_weights(c):
    with pytest.raises(NmechError, match="regulariser weight"):
        gradient_flow_target(c)


def test_json_and_latex():
    m = modifying_rule(rules.gd(), order=2)
    doc = m.to_json()
    assert doc["schema"] == "nmech.modifying_rule/1"
    rows = {(r["order"], r["differential"]): r["coefficient"] for r in doc["gradient"]}
    assert rows[(1, "∇²L∇L")] == "-1/2"
    assert rules.parse(doc["rule_text"]).name == "user"
    latex = m.latex()
    assert latex.splitlines()[1].startswith("G = \\nabla L")
    assert "O(\\eta^{4})" in latex
