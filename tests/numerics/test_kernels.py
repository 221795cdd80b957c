"""The closed-form kernels solve their ODE with the right initial conditions in every regime."""

import numpy as np
import pytest

from nmech.derive import rules, symmetry
from nmech.derive.symmetry import dynamics
from nmech.numerics.kernels import numeric_kernels

DYN = dynamics.derive(rules.heavy_ball(weight_decay=True), symmetry.scale())


@pytest.mark.parametrize(
    "beta,lam,regime",
    [(0.9, 5e-4, "over"), (0.99, 1e-2, "under"), (0.9, 0.277**2 * 0.1 * 1.9 / 4, None)],
)
def test_kernels_solve_the_ode(beta, lam, regime):
    c = DYN.continuous_at({"eta": 0.1, "beta": beta, "lam": lam})
    kern = numeric_kernels(c)
    if regime:
        assert kern.regime == regime
    gam, w2 = c.gamma, c.omega2
    t, h = np.linspace(0.5, 20, 40), 1e-4
    for f, x0, v0 in ((kern.K, 1.0, 0.0), (kern.G, 0.0, 1.0)):
        x = f(t)
        d1 = (f(t + h) - f(t - h)) / (2 * h)
        d2 = (f(t + h) - 2 * x + f(t - h)) / h**2
        residual = d2 + 2 * gam * d1 + w2 * x
        assert np.max(np.abs(residual)) < 1e-5 * max(1.0, np.max(np.abs(d2)))
        assert abs(f(np.array(0.0)) - x0) < 1e-12
        assert abs((f(np.array(h)) - f(np.array(-h))) / (2 * h) - v0) < 1e-6
        assert np.all(np.isfinite(f(np.array([1e5]))))  # no overflow at long times


def test_critical_regime_is_detected():
    gam2 = DYN.continuous_at({"eta": 0.1, "beta": 0.9, "lam": 0.0}).gamma ** 2
    lam = gam2 * 0.1 * 1.9 / 4  # ω² = 4λ/(η(1+β)) = Γ²
    assert (
        numeric_kernels(DYN.continuous_at({"eta": 0.1, "beta": 0.9, "lam": lam})).regime
        == "critical"
    )
