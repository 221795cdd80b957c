"""Issue 12 item 1: every coefficient that leaves nmech.derive evaluates right in float64.

Each public route is evaluated twice at the same point: in float64 (``sympy.lambdify``, as a
user does) and exactly (every number a rational; floats taken as the exact decimals they print
as), for β, β₁, β₂, γ up to 0.999 and η from 1e-4 to 0.5. The stored coefficients are factored
(4(1 − β)⁷, never 4β⁷ − 28β⁶ + … − 4), so each term is right to a few ulps per factor: the
bound tested is |float − exact| ≤ 1e-12 · Σ|terms| for a field (a sum of terms of mixed signs
is only as well conditioned as that: this is the stated bound where the quantity itself is
ill-conditioned), and a relative 1e-12 for every single coefficient.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import sympy as sp
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from nmech.derive import averaged_equation, modified_equation, rules
from nmech.derive.symbols import HYPERPARAMETERS
from nmech.derive.symmetry import scale, symmetry_dynamics

z, w = sp.symbols("z w", real=True)
a = sp.Symbol("a", positive=True)
COORDS = [z, w]
LOSS = a * z**2 / 2 + z**3 / 6 + z * w + w**2  # polynomial: the exact value is a rational
TOLERANCE = 1e-12

decays = st.floats(0.0, 0.999, allow_subnormal=False).map(lambda x: float(f"{x:.6g}"))
etas = st.floats(-4, np.log10(0.5)).map(lambda e: float(f"{10**e:.6g}"))
lams = st.one_of(st.just(0.0), st.floats(1e-6, 0.5))  # no subnormal numbers
points = st.floats(-1.5, 1.5).filter(lambda x: abs(x) > 0.05).map(lambda x: float(f"{x:.4g}"))


def exact(x: float) -> sp.Rational:
    return sp.Rational(repr(x))


def symbols_of(expr: sp.Expr) -> dict[str, sp.Symbol]:
    return {s.name: s for s in expr.free_symbols}


class Route:
    """A sympy vector (a sum of terms per entry), lambdified once; evaluated in float64 and
    exactly, term by term."""

    def __init__(
        self, vector: sp.Matrix, termwise: bool = True, tolerance: float = TOLERANCE
    ) -> None:
        self.termwise = termwise
        self.tolerance = tolerance
        self.entries = [sp.Add.make_args(e) for e in vector]
        names = sorted({s.name for e in vector for s in e.free_symbols})
        self.symbols = [symbols_of(vector).get(n) for n in names]
        self.names = names
        self.functions = [
            [sp.lambdify(self.symbols, term, modules="math") for term in terms]
            for terms in self.entries
        ]

    def check(self, values: dict[str, float]) -> None:
        args = [values[n] for n in self.names]
        point = {s: exact(values[s.name]) for s in self.symbols}
        for terms, functions in zip(self.entries, self.functions, strict=True):
            floats = [f(*args) for f in functions]
            exacts = [term.xreplace(point) for term in terms]
            for x, e in zip(floats, exacts, strict=True):  # every term: relative 1e-12
                e = Fraction(int(e.p), int(e.q))
                if not self.termwise:
                    break
                assert abs(Fraction(x) - e) <= self.tolerance * abs(e), (x, float(e), values)
            total = sum(Fraction(int(e.p), int(e.q)) for e in exacts)
            scale_ = sum(abs(Fraction(x)) for x in floats)
            assert abs(Fraction(sum(floats)) - total) <= self.tolerance * scale_, values


def _field_route(rule, order: int) -> Route:
    me = modified_equation(rule, order)
    return Route(me.field(LOSS, COORDS))


ROUTES = {
    "heavy-ball field order 3": lambda: _field_route(rules.heavy_ball(), 3),
    "nesterov+wd field order 2": lambda: _field_route(rules.nesterov(weight_decay=True), 2),
    "torch-sgd dampening field order 2": lambda: _field_route(
        rules.torch_sgd(dampening=True, weight_decay=True), 2
    ),
    "heavy-ball state theta_prev": lambda: Route(
        modified_equation(rules.heavy_ball(), 2).state("theta_prev", LOSS, COORDS)
    ),
    "torch-sgd state v": lambda: Route(
        modified_equation(rules.torch_sgd(), 2).state("v", LOSS, COORDS)
    ),
    # Adam's element-wise factor (β₂ − β₁)|∇L| + ε(β₁ + 1)(β₂ − 1)/2, collected in |∇L| with
    # factored coefficients (written expanded, it lost digits where β₁ = β₂ near 1)
    "adam field order 1": lambda: Route(modified_equation(rules.adam(), 1).field(LOSS, COORDS)),
    "ema(gd) average field order 3": lambda: Route(
        averaged_equation(rules.ema(rules.gd()), 3).field(LOSS, COORDS)
    ),
    # EMA over heavy ball's η² factor β²γ² + 4β²γ + … − 32βγ + … + 1 vanishes only at
    # β = γ = 1; written in powers of β and γ (as it was), under 1/((1 − β)⁵(1 − γ)²), its term
    # was 6.3e-11 off at β = γ = 0.999. Stored in 1 − β and 1 − γ, 6(1 − β)² + 12(1 − γ)² + …
    # (RationalField.to_sympy), every term keeps its digits (docs/math.md §7, §11).
    "ema(heavy-ball) average field order 2": lambda: Route(
        averaged_equation(rules.ema(rules.heavy_ball()), 2).field(LOSS, COORDS)
    ),
    # coefficients with factors that vanish inside the domain in two parameters: β + 2ρ − 1
    # (Lookahead), schedule-free's 3β²γ² − 3βγ² + 6βγ + γ² − 2γ + 1 (→ (1 − γ)² at β = 0).
    # Such a term is right to 1e-12 of the sum of the field's terms, not relatively (no
    # representation keeps relative digits near an interior zero).
    "schedule-free average field order 2": lambda: Route(
        averaged_equation(rules.schedule_free(), 2).field(LOSS, COORDS), termwise=False
    ),
    "lookahead(torch-sgd, k=2) field order 2": lambda: Route(
        modified_equation(rules.lookahead(rules.torch_sgd(), 2), 2).field(LOSS, COORDS),
        termwise=False,
    ),
    "rmsprop state v": lambda: Route(
        modified_equation(rules.rmsprop(), 1).state("v", LOSS, COORDS)
    ),
    "signum+wd field order 2": lambda: _field_route(rules.signum(weight_decay=True), 2),
    "lion+wd state m": lambda: Route(
        modified_equation(rules.lion(weight_decay=True), 2).state("m", LOSS, COORDS)
    ),
}
#: routes through sign ∇L, defined where no entry of ∇L = (az + z²/2 + w, z + 2w) vanishes
SIGN_ROUTES = {"signum+wd field order 2", "lion+wd state m"}
_built: dict[str, Route] = {}


def route(name: str) -> Route:
    if name not in _built:
        _built[name] = ROUTES[name]()
    return _built[name]


@pytest.mark.parametrize("name", list(ROUTES))
@settings(max_examples=12, deadline=None)
@given(beta=decays, beta2=decays, eta=etas, lam=lams, za=points, wa=points)
@example(beta=0.999, beta2=0.999, eta=0.1, lam=0.0, za=1.0, wa=1.0)  # the corner, every run
def test_float64_matches_exact_evaluation(name, beta, beta2, eta, lam, za, wa):
    if name in SIGN_ROUTES:
        assume(1.3 * za + za**2 / 2 + wa != 0 and za + 2 * wa != 0)
    values = {"beta": beta, "beta1": beta, "beta2": beta2, "eta": eta, "lam": float(f"{lam:.4g}")}
    values |= {"tau": 0.25, "eps": 1e-3, "alpha": beta2, "a": 1.3, "z": za, "w": wa}
    values |= {"gamma": beta2, "rho": float(f"{(beta + beta2) / 2 or 0.5:.4g}")}
    route(name).check(values)


def test_adam_factor_keeps_digits_where_the_betas_meet():
    """Adam order 1 at β₁ = β₂ = 0.999, every term to 1e-12 relative. The element-wise factor
    written expanded, β₁β₂ε/2 − β₁ε/2 − β₁|∇L| + β₂ε/2 + β₂|∇L| − ε/2, was 6.9e-11 off here
    (its terms cancel); collected in |∇L| with factored coefficients, (β₂ − β₁)|∇L| +
    ε(β₁ + 1)(β₂ − 1)/2, it keeps its digits (nmech.derive.algebra.entrywise)."""
    values = {"beta": 0.999, "beta1": 0.999, "beta2": 0.999, "eta": 0.1, "lam": 0.0}
    values |= {"tau": 0.25, "eps": 1e-3, "alpha": 0.999, "a": 1.3, "z": 1.0, "w": 1.0}
    Route(modified_equation(rules.adam(), 1).field(LOSS, COORDS)).check(values)


def test_issue_12_reproducer():
    """Heavy ball order 3 on a z²/2 at η = 0.001: β = 0.99 gave −1035200.46 (29 % off), β =
    0.999 was off by 99.97 %; now both match the exact value to ~1e-14."""
    me = modified_equation(rules.heavy_ball(), order=3)
    f = me.field(a * z**2 / 2, [z])[0]
    sym = symbols_of(f)
    fn = sp.lambdify((a, z, sym["eta"], sym["beta"]), f)
    for b in (0.99, 0.999):
        value = fn(1.3, 1.0, 0.001, b)
        point = {a: sp.Rational(13, 10), z: 1, sym["eta"]: sp.Rational(1, 1000)}
        truth = float(f.xreplace({**point, sym["beta"]: exact(b)}))
        assert abs(value / truth - 1) < 1e-12, (b, value, truth)
    assert abs(fn(1.3, 1.0, 0.001, 0.99) - (-1452027.7439308334)) < 1e-6


@settings(max_examples=15, deadline=None)
@given(beta=decays, eta=etas)
def test_modified_loss_coefficients(beta, eta):
    """The modified loss of heavy ball with weight decay, coefficient by coefficient."""
    loss = modified_equation(rules.heavy_ball(weight_decay=True), 1).modified_loss()
    values = {"beta": beta, "eta": eta, "lam": 0.3}
    for phi in loss.terms:
        for c in phi.values():
            sym = symbols_of(sp.sympify(c))
            if not sym:
                continue
            names = sorted(sym)
            fn = sp.lambdify([sym[n] for n in names], c, modules="math")
            got = fn(*[values[n] for n in names])
            truth = c.xreplace({sym[n]: exact(values[n]) for n in names})
            assert abs(got - float(truth)) <= TOLERANCE * abs(float(truth)), (c, values)


@settings(max_examples=15, deadline=None)
@given(beta=decays, eta=etas, lam=st.floats(1e-4, 0.5))
def test_recursion_and_continuous_forms_at_numbers(beta, eta, lam):
    """SymmetryDynamics.exact_at / continuous_at: every entry the exact rational rounded once."""
    dyn = symmetry_dynamics(rules.torch_sgd(momentum=0.9, weight_decay=5e-4), scale())
    values = {"eta": eta, "beta": beta, "lam": float(f"{lam:.4g}")}
    numeric = dyn.exact_at(values)
    rec = dyn.recursion_at(values)
    for x, e in zip(np.ravel(numeric.A), rec.A, strict=True):
        assert x == float(e)
    cont = dyn.continuous_at(values)
    exact_values = {HYPERPARAMETERS[k]: exact(v) for k, v in values.items()}
    assert cont.gamma == float(dyn.continuous.gamma.xreplace(exact_values))
    assert cont.omega2 == float(dyn.continuous.omega2.xreplace(exact_values))


def test_stored_coefficients_are_factored():
    """The stored form: every polynomial factor of a coefficient is irreducible over Q (so no
    expanded denominator such as 4β⁷ − 28β⁶ + … − 4 survives)."""
    me = modified_equation(rules.heavy_ball(weight_decay=True), 4)
    assert me.terms[4]
    for f in me.terms:
        for c in f.values():
            for factor in sp.Mul.make_args(c):
                base, _ = factor.as_base_exp()
                if base.is_Add:
                    _, factors = sp.factor_list(base)
                    assert len(factors) == 1 and factors[0][1] == 1, (c, base)


def test_the_check_fails_on_expanded_coefficients():
    """Negative control: the same field with its coefficients expanded (p/q, the old stored
    form) fails the check at β = 0.999."""
    import dataclasses

    me = modified_equation(rules.heavy_ball(), 3)
    expanded = dataclasses.replace(
        me, terms=tuple({t: sp.cancel(c) for t, c in f.items()} for f in me.terms)
    )
    values = {"beta": 0.999, "eta": 0.001, "a": 1.3, "z": 1.0, "w": 0.5}
    Route(me.field(LOSS, COORDS)).check(values)
    with pytest.raises(AssertionError):
        Route(expanded.field(LOSS, COORDS)).check(values)


def test_factors_vanishing_at_the_corner_are_stored_in_one_minus_p():
    """A factor that vanishes where its decays are all 1 (EMA over heavy ball's η² numerator
    β²γ² + 4β²γ + β² + 10βγ² − 32βγ + 10β + γ² + 4γ + 1) is stored as a sum of monomials in
    1 − β and 1 − γ, 6(1 − β)² + 12(1 − γ)² − 6(1 − β)²(1 − γ) − 12(1 − β)(1 − γ)² +
    (1 − β)²(1 − γ)², the same rational function; a factor that does not vanish there keeps its
    powers of β."""
    from nmech.derive.algebra.ratfunc import RationalField

    beta, gamma = (HYPERPARAMETERS[n] for n in ("beta", "gamma"))
    b, c = sp.symbols("b c")
    K = RationalField([beta, gamma])
    numerator = (beta**2 * gamma**2 + 4 * beta**2 * gamma + beta**2 + 10 * beta * gamma**2
                 - 32 * beta * gamma + 10 * beta + gamma**2 + 4 * gamma + 1)  # fmt: skip
    coefficient = numerator / (12 * (1 - beta) ** 5 * (1 - gamma) ** 2)
    stored = K.to_sympy(K.convert(coefficient))
    assert K.convert(stored) == K.convert(coefficient)
    top, _ = sp.fraction(stored.xreplace({beta: 1 - b, gamma: 1 - c}))
    terms = sp.Add.make_args(top)
    assert len(terms) == 5 and all(sp.Poly(t, b, c).is_monomial for t in terms), top
    ratio = sp.cancel(top / (6 * b**2 + 12 * c**2 - 6 * b**2 * c - 12 * b * c**2 + b**2 * c**2))
    assert ratio.is_number, top
    other = K.to_sympy(K.convert((beta**2 + 4 * beta + 1) / (1 - beta) ** 5))
    assert sp.fraction(other)[0].free_symbols == {beta}
    assert sp.expand(sp.fraction(other)[0]) == sp.fraction(other)[0]  # powers of β
