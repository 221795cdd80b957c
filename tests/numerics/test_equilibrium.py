"""The rotational equilibrium at numbers keeps its digits (hyper-parameters put in exactly,
momenta close to 1 included) and is vectorised over channels."""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nmech.derive import rules
from nmech.derive.symmetry.equilibrium import equilibrium
from nmech.errors import NmechError
from nmech.numerics.equilibrium import equilibrium_at

ADAMW = equilibrium(rules.adamw())
SGD = equilibrium(rules.torch_sgd(momentum=True, weight_decay=True))


def _exact_sqrt(x: Fraction) -> float:
    """√x correctly rounded enough for a 1e-15 comparison (Fraction -> float -> Newton step)."""
    y = float(x) ** 0.5
    return float((Fraction(y) + x / Fraction(y)) / 2)


@settings(max_examples=40, deadline=None)
@given(
    eta=st.floats(1e-4, 0.5),
    lam=st.floats(1e-6, 1.0),
    beta1=st.floats(0.0, 0.999),
    size=st.integers(1, 10_000),
)
def test_adamw_equilibrium_matches_the_closed_form(eta, lam, beta1, size):
    """Kosson et al.: |θ| = √(ηC/(2λ)), η_r = √(2ηλ(1−β₁)/(1+β₁)), to float64 rounding."""
    at = equilibrium_at(ADAMW, {"eta": eta, "lam": lam, "beta1": beta1})
    # the convention of exact_values: a float means the decimal its repr shows
    f = {k: Fraction(repr(v)) for k, v in {"eta": eta, "lam": lam, "b": beta1}.items()}
    norm = _exact_sqrt(f["eta"] * size / (2 * f["lam"]))
    angle = _exact_sqrt(2 * f["eta"] * f["lam"] * (1 - f["b"]) / (1 + f["b"]))
    got = at.norm(np.array([size]), np.array([0.0]))[0]
    assert abs(got - norm) <= 1e-15 * norm  # a few ulp: each side rounded once
    assert abs(at.angular_update - angle) <= 1e-15 * angle
    assert at.needs_size and not at.needs_gradient


def test_sgd_equilibrium_is_vectorised_over_channels():
    """|θ| = (η E|g̃|²/(2λ(1−β)))^{1/4} per channel, β = 0.999 without cancellation."""
    values = {"eta": 0.1, "beta": 0.999, "lam": 5e-4}
    at = equilibrium_at(SGD, values)
    g = np.array([0.5, 2.0, 8.0])
    expected = (0.1 * g / (2 * 5e-4 * (1 - 0.999))) ** 0.25
    np.testing.assert_allclose(at.norm(np.zeros(3), g), expected, rtol=1e-13)
    assert at.needs_gradient and not at.needs_size
    assert at.angular_update == pytest.approx((2 * 0.1 * 5e-4 / 1.999) ** 0.5, rel=1e-15)


def test_missing_or_bad_values_are_refused():
    with pytest.raises(NmechError, match="no value given for parameter\\(s\\) beta"):
        equilibrium_at(SGD, {"eta": 0.1, "lam": 5e-4})
    with pytest.raises(NmechError, match="lam must be finite"):
        equilibrium_at(SGD, {"eta": 0.1, "beta": 0.9, "lam": float("inf")})
