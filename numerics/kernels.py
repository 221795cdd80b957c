"""Lambdified kernels of the continuous dynamics: the derive → numerics hand-off.

:func:`nmech.derive.symmetry.continuous.kernels` gives K (response to Q(0) = 1, Q̇(0) = 0) and G
(Green's function) in closed form for each damping regime of Q̈ + 2ΓQ̇ + ω²Q = F; a first-order
law Q̇ = −aQ + F has K = G = e^{−at}. Here they become numpy callables of t at given parameter
values (:meth:`ContinuousDynamics.at`), with the regime chosen from Γ² − ω² (critical within a
relative 1e-12).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import sympy as sp

from nmech.derive.symmetry.continuous import Gamma, NumericContinuous, Omega, delta, kernels, t

Kernel = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Kernels:
    """K and G of one damping regime as numpy callables of t; |K|, |G| ≲ e^{−decay·t}."""

    regime: str
    K: Kernel
    G: Kernel
    decay: float  # Γ (second order) or a (first order)


def numeric_kernels(c: NumericContinuous) -> Kernels:
    """The kernels of the continuous form ``c`` (at numbers), the regime chosen from Γ² − ω²
    (critical within a relative 1e-12)."""
    if c.ode_order == 1:
        fn = sp.lambdify(t, sp.exp(-c.rate * t), "numpy")
        return Kernels("first-order", fn, fn, c.rate)
    gam, w2 = c.gamma, c.omega2
    disc = gam * gam - w2
    closed = kernels()
    if abs(disc) <= 1e-12 * max(gam * gam, w2, 1e-300):
        regime, subs = "critical", {Gamma: gam}
    elif disc > 0:
        regime, subs = "over", {Gamma: gam, delta: np.sqrt(disc)}
    else:
        regime, subs = "under", {Gamma: gam, Omega: np.sqrt(-disc)}
    K, G = (sp.lambdify(t, k.xreplace(subs), "numpy") for k in closed[regime])
    return Kernels(regime, K, G, gam)
