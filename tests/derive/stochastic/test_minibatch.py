"""Mini-batch SGD: the derived epoch flows against the published formulas (Smith, Dherin, Barrett
& De 2021 for random reshuffling; Li, Tai & E for the SDE), against the GD engine, and against
the exact enumeration of every batch sequence (convergence-order slopes)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import sympy as sp

from nmech.cli import main
from nmech.derive import modified_equation, rules
from nmech.derive.algebra import trees as T
from nmech.derive.algebra.concrete import ConcreteEvaluator
from nmech.derive.stochastic import batch_sums as B
from nmech.derive.stochastic.minibatch import (
    REPLACEMENT,
    RESHUFFLING,
    M,
    MinibatchEquation,
    epoch_moments,
    general_minibatch_equation,
    minibatch_equation,
)
from nmech.derive.stochastic.sde import minibatch_sde
from nmech.errors import NmechError
from nmech.numerics.flows import gradient_function, integrate, lambdify_vector
from nmech.reference.minibatch import end_point_moments

x, y = sp.symbols("x y", real=True)
COORDS = [x, y]
BATCHES = {  # three non-quadratic mini-batch losses of a 2-D parameter
    "1": sp.log(sp.cosh(x - sp.Rational(1, 2))) + y**2 / 2 + x * y / 10,
    "2": (x**2 + 2 * y**2) / 2 + y**4 / 4 - 3 * x / 10,
    "3": sp.log(sp.cosh(x + y)) + (y - sp.Rational(2, 5)) ** 2 / 2 + sp.sin(x) / 5,
}
THETA0 = np.array([0.7, -0.4])
ETAS = [0.04, 0.02, 0.01]
# with replacement the gap between the two corrections (the batches' spread) is small here and
# the η³ error cancels part of it at η ~ 0.04: the negative controls use smaller steps
CONTROL_ETAS = [0.01, 0.005, 0.0025]
GRADS = [gradient_function(loss, COORDS) for loss in BATCHES.values()]


def g(k: str) -> T.Tree:
    return T.node((), k)


def hg(k: str, j: str) -> T.Tree:
    """∇²L̂_k∇L̂_j."""
    return T.node([g(j)], k)


def unlabelled(v: T.Vec) -> T.Vec:
    """Every L̂_k replaced by L (all batches equal)."""

    def strip(t: T.Tree) -> T.Tree:
        return t if T.is_leaf(t) else T.node([strip(c) for c in T.children(t)])

    return T.combine((c, {strip(t): 1}) for t, c in v.items())


def same(a: T.Vec, b: T.Vec) -> bool:
    return T.is_zero(T.combine([(1, a), (-1, b)]))


# ------------------------------------------------------------------ symbolic
@pytest.mark.parametrize("m", [2, 3, 4, 5])
def test_reshuffling_first_correction_is_smith_et_al(m):
    """F_1 = −∇[(1/4m) Σ_k ‖∇L̂_k‖²] = −(1/2m) Σ_k ∇²L̂_k∇L̂_k, F_0 = −∇L, in labelled trees."""
    me = minibatch_equation(m, order=1)
    labels = B.labels(m)
    assert same(me.terms[0], {g(k): sp.Rational(-1, m) for k in labels})
    assert same(me.terms[1], {hg(k, k): sp.Rational(-1, 2 * m) for k in labels})
    loss = me.modified_loss()
    assert loss.obstruction is None and loss.scale == 1
    ((scalar, coefficient),) = loss.terms[1].items()
    assert coefficient == sp.Rational(1, 4 * m)
    assert scalar.latex(latex=False) == "‖∇L̂_k‖²"
    norm = "\\sum_{k} \\left\\|\\nabla \\hat L_{k}\\right\\|^2"
    assert f"\\frac{{1}}{{{4 * m}}}\\,{norm}" in loss.latex()


@pytest.mark.parametrize("m", [2, 3, 4])
def test_with_replacement_first_correction_is_gds(m):
    """Drawing with replacement the mean iterate has GD's correction −½∇²L∇L (no Σ_k term):
    compared with the GD engine's F_1 written in the labelled losses."""
    me = minibatch_equation(m, order=1, sampling=REPLACEMENT)
    gd = modified_equation(rules.gd(), 1)
    for mine, theirs in zip(me.terms, gd.terms, strict=True):
        assert same(mine, B.as_vec(B.concrete(B.as_items(theirs), m)))
    assert me.patterns[1] == {T.node([T.GRAD]): sp.Rational(-1, 2)}


@pytest.mark.parametrize("sampling", [RESHUFFLING, REPLACEMENT])
def test_equal_batches_give_gd_through_second_order(sampling):
    """With L̂_k = L for all k every sampling is GD: F_0..F_2 reduce to the GD engine's."""
    me = minibatch_equation(3, order=2, sampling=sampling)
    gd = modified_equation(rules.gd(), 2)
    for mine, theirs in zip(me.terms, gd.terms, strict=True):
        assert same(unlabelled(mine), theirs)
    one = minibatch_equation(1, order=2)  # one batch: GD itself
    for mine, theirs in zip(one.terms, gd.terms, strict=True):
        assert same(unlabelled(mine), theirs)


def _second_order(m) -> T.Vec:
    """The η² term of reshuffling: −(1/12m)Σ_k∇³L̂_k[∇L̂_k,∇L̂_k] − (1/3m)Σ_k(∇²L̂_k)²∇L̂_k and
    m-free Σ_k terms (with L̂_k = L it is GD's −(1/3)(∇²L)²∇L − (1/12)∇³L[∇L,∇L])."""
    k = "k"
    gk = T.node((), k)
    return {
        T.node([gk, gk], k): -1 / (12 * sp.sympify(m)),
        T.node([T.node([gk], k)], k): -1 / (3 * sp.sympify(m)),
        T.node([gk, T.GRAD], k): sp.Rational(1, 12),
        T.node([T.node([T.GRAD], k)], k): sp.Rational(-1, 12),
        T.node([T.node([gk])], k): sp.Rational(1, 6),
        T.node([gk, gk]): sp.Rational(-1, 12),
        T.node([T.node([gk], k)]): sp.Rational(-1, 12),
    }


def test_general_form_for_any_number_of_batches():
    """Symbolic m (fitted on m = 2..4 / 3..5, confirmed on m = 5 / 6): the first correction is
    Smith et al.'s −(1/2m)Σ_k∇²L̂_k∇L̂_k, i.e. L̃ = L + (η/4m)Σ_k‖∇L̂_k‖²; the η² term is
    _second_order(m), no gradient (like GD's)."""
    first = general_minibatch_equation(1)
    assert first.patterns[1] == {hg("k", "k"): -1 / (2 * M)}
    loss = first.modified_loss()
    assert loss.obstruction is None and list(loss.terms[1].values()) == [1 / (4 * M)]
    second = general_minibatch_equation(2)
    assert second.patterns[2] == _second_order(M)
    assert second.modified_loss().obstruction == 2
    assert minibatch_equation(3, order=2).patterns[2] == _second_order(3)
    with pytest.raises(NmechError, match="general form has no field"):
        second.field(BATCHES, COORDS)


def test_with_replacement_second_order_depends_on_the_horizon():
    """The mean's η² field carries −((n−1)/4)∇³L[Σ] beyond GD's for n draws, with
    (1/m)Σ_k∇³L[∇L̂_k,∇L̂_k] = ∇³L[∇L,∇L] + ∇³L[Σ]: no autonomous mean flow (the SDE's job)."""
    gd = modified_equation(rules.gd(), 2).terms[2]
    k = "k"
    second_moment = T.node([T.node((), k), T.node((), k)])
    for n in (2, 3):
        me = minibatch_equation(3, order=2, sampling=REPLACEMENT, steps=n)
        extra = {
            second_moment: sp.Rational(-(n - 1), 4 * 3),
            T.node([T.GRAD, T.GRAD]): sp.Rational(n - 1, 4),
        }
        assert me.patterns[2] == T.combine([(1, gd), (1, extra)]), n


@pytest.mark.parametrize("m", [2, 3, 4])
def test_sde_drift_and_diffusion_are_li_tai_e(m):
    """Drift −∇(L + (η/4)‖∇L‖²) (the GD engine's, in labelled losses); diffusion √η Σ^{1/2} with
    Σ = (1/m)Σ_k ∇L̂_k∇L̂_kᵀ − ∇L∇Lᵀ = the covariance of one mini-batch gradient."""
    sde = minibatch_sde(m)
    gd = modified_equation(rules.gd(), 1)
    for mine, theirs in zip(sde.drift.terms, gd.terms, strict=True):
        assert same(mine, B.as_vec(B.concrete(B.as_items(theirs), m)))
    assert sde.centred
    assert sde.patterns == {(g("k"), g("k")): sp.Rational(1, m), (T.GRAD, T.GRAD): -1}
    latex = sde.latex()
    assert "\\sqrt{\\eta}\\,\\Sigma(\\theta)^{1/2}\\,dW" in latex
    assert "\\frac{1}{4}\\,\\left\\|\\nabla L\\right\\|^2" in latex
    doc = json.loads(sde.to_json_text())
    assert doc["diffusion"]["centred"] is True
    assert doc["drift"]["modified_loss"]["obstruction_order"] is None


def test_second_moment_of_an_epoch_is_symmetric_in_the_batches():
    """The η² second moment of a reshuffled epoch is m² ∇L∇Lᵀ (each batch once: Σ_k ∇L̂_k = m∇L)."""
    moments = epoch_moments(3, RESHUFFLING, order=2)
    assert moments.sequences == 6
    assert B.decompose(moments.second[2], 3) == {(T.GRAD, T.GRAD): 9}


# ------------------------------------------------------------------ numeric
def _flow_end(me: MinibatchEquation, eta: float, horizon: float) -> np.ndarray:
    field = lambdify_vector(me.field(BATCHES, COORDS), COORDS, {"eta": eta})
    return integrate(field, THETA0, np.array([0.0, horizon]))[-1]


def _slope(
    me: MinibatchEquation, sampling: str, etas: list[float] = ETAS
) -> tuple[float, list[float]]:
    steps = me.steps
    errors = []
    for eta in etas:
        mean, _ = end_point_moments(GRADS, THETA0, eta, sampling, steps)
        errors.append(float(np.linalg.norm(THETA0 + mean - _flow_end(me, eta, steps * eta))))
    return float(np.polyfit(np.log(etas), np.log(errors), 1)[0]), errors


def _truncated(me: MinibatchEquation, order: int) -> MinibatchEquation:
    return minibatch_equation(me.batches, order, me.sampling, me.steps)


@pytest.mark.parametrize("sampling", [RESHUFFLING, REPLACEMENT])
def test_epoch_mean_tracks_its_flow_to_the_order_kept(sampling):
    """Mean epoch end point (all 3! orderings, or all 3³ draws) vs the flow over time 3η: the
    error is O(η^{p+2}) keeping p corrections (one epoch: local error)."""
    full = minibatch_equation(3, order=2, sampling=sampling)
    for p in range(3):
        slope, errors = _slope(_truncated(full, p), sampling)
        assert abs(slope - (p + 2)) < 0.3, (sampling, p, slope, errors)
        assert all(a > b for a, b in itertools.pairwise(errors)), errors
        assert errors[-1] > 1e-12, errors


@pytest.mark.parametrize(
    ("sampling", "other"), [(RESHUFFLING, REPLACEMENT), (REPLACEMENT, RESHUFFLING)]
)
def test_the_other_samplings_correction_does_not_fit(sampling, other):
    """Negative control: each sampling's mean with the other's first correction is O(η²) only,
    so the Σ_k‖∇L̂_k‖² regulariser is visible and belongs to reshuffling."""
    wrong = minibatch_equation(3, order=1, sampling=other)
    wrong = MinibatchEquation(3, sampling, 3, 1, wrong.terms, wrong.patterns)
    slope, errors = _slope(wrong, sampling, CONTROL_ETAS)
    assert abs(slope - 2) < 0.3, (slope, errors)


def _evaluate(v: T.Vec, point: np.ndarray, eta: float = 0.0) -> np.ndarray:
    loss = sp.Add(*BATCHES.values()) / len(BATCHES)
    expr = ConcreteEvaluator(loss, COORDS, BATCHES).vec(v)
    return lambdify_vector(expr, COORDS, {"eta": eta})(point)


@pytest.mark.parametrize("steps", [1, 2])
def test_sde_increment_moments_match_enumeration(steps):
    """Over n = 1, 2 draws (time h = nη) the SDE's E[ΔX] = h b + (h²/2) b_0′b_0 and
    Cov[ΔX] = hηΣ match the enumerated SGD moments to O(η³); without the drift's η term, or
    with the uncentred second moment for Σ, the error is O(η²)."""
    sde = minibatch_sde(3)
    b0, b1 = (_evaluate(f, THETA0) for f in sde.drift.terms)
    b0b0 = _evaluate(T.derivative(sde.drift.terms[0], sde.drift.terms[0]), THETA0)
    sigma = np.array(
        lambdify_vector(sde.matrix(BATCHES, COORDS).reshape(4, 1), COORDS, {})(THETA0)
    ).reshape(2, 2)
    uncentred = sigma + np.outer(b0, b0)
    errors: dict[str, list[float]] = {k: [] for k in ("mean", "plain", "cov", "uncentred")}
    for eta in ETAS:
        h = steps * eta
        mean, cov = end_point_moments(GRADS, THETA0, eta, REPLACEMENT, steps)
        errors["mean"].append(np.linalg.norm(mean - (h * (b0 + eta * b1) + h**2 / 2 * b0b0)))
        errors["plain"].append(np.linalg.norm(mean - (h * b0 + h**2 / 2 * b0b0)))
        errors["cov"].append(np.linalg.norm(cov - h * eta * sigma))
        errors["uncentred"].append(np.linalg.norm(cov - h * eta * uncentred))
    slopes = {k: float(np.polyfit(np.log(ETAS), np.log(v), 1)[0]) for k, v in errors.items()}
    assert abs(slopes["plain"] - 2) < 0.3, (slopes, errors)
    assert abs(slopes["uncentred"] - 2) < 0.3, (slopes, errors)
    if steps == 1:  # one draw: E[Δ] = −η∇L and Cov[Δ] = η²Σ exactly, and so is the SDE's
        assert max(errors["mean"] + errors["cov"]) < 1e-12, errors
    else:
        assert abs(slopes["mean"] - 3) < 0.3, (slopes, errors)
        assert abs(slopes["cov"] - 3) < 0.3, (slopes, errors)


# ------------------------------------------------------------------ CLI
def derive(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["derive", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_outputs(capsys):
    code, out, _ = derive(capsys, "minibatch", "--batches", "4")
    assert code == 0
    assert "\\frac{1}{16}\\,\\sum_{k} \\left\\|\\nabla \\hat L_{k}\\right\\|^2" in out
    code, out, _ = derive(capsys, "minibatch", "--batches", "3", "--format", "json")
    doc = json.loads(out)
    assert doc["schema"] == "nmech.minibatch/1" and doc["sampling"] == RESHUFFLING
    first = [t for t in doc["terms"] if t["order"] == 1]
    assert [(t["coefficient"], t["indices"]) for t in first] == [("-1/6", ["k"])]
    code, out, _ = derive(
        capsys, "minibatch", "--batches", "3", "--replacement", "--format", "text"
    )
    assert "η·(1/4·‖∇L‖²)" in out and "Σ_k" not in out
    code, out, _ = derive(capsys, "minibatch", "--general", "--format", "text")
    assert "L̃ = L + η·(1/(4*m)·Σ_k ‖∇L̂_k‖²)" in out
    code, out, _ = derive(capsys, "minibatch", "--batches", "2", "--format", "sde")
    assert code == 0
    latex, _, body = out.partition("\n")
    assert latex.startswith("% d\\theta = ") and json.loads(body)["batches"] == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["minibatch"], "needs --batches"),
        (["minibatch", "--general", "--batches", "3"], "drop --batches"),
        (["minibatch", "--general", "--format", "sde"], "sde needs --batches"),
        (["gd", "--general"], "minibatch only"),
        (["minibatch", "--batches", "2", "--format", "sde", "--order", "2"], "first-order SDE"),
        (["minibatch", "--batches", "2", "--format", "sde", "--order", "0"], "drop --order"),
        (["minibatch", "--batches", "0"], "integer >= 1"),
        (["minibatch", "--batches", "-3"], "integer >= 1"),
        (["minibatch", "--batches", "7"], "more than 720"),
        (["minibatch", "--batches", "5", "--replacement"], "more than 720"),
        (["minibatch", "--batches", str(10**12)], "more than 720"),
        (["minibatch", "--batches", "3", "--order", "3"], "order must be an integer in 0..2"),
        (["gd", "--batches", "3"], "minibatch only"),
        (["gd", "--format", "sde"], "minibatch only"),
        (["minibatch", "--batches", "2", "--rule-file", "r.txt"], "not both"),
    ],
)
def test_cli_errors_are_one_line(capsys, argv, message):
    code, out, err = derive(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("nmech: error: ") and err.count("\n") == 1
    assert message in err


def test_api_errors():
    with pytest.raises(NmechError, match="steps = batches"):
        minibatch_equation(3, sampling=RESHUFFLING, steps=2)
    with pytest.raises(NmechError, match="sampling must be"):
        minibatch_equation(3, sampling="bootstrap")
    with pytest.raises(NmechError, match="give 3 mini-batch losses"):
        minibatch_sde(3).matrix({"1": x}, COORDS)
    with pytest.raises(NmechError, match="give 2 mini-batch losses"):
        minibatch_equation(2).field(BATCHES, COORDS)
