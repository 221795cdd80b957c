"""The rotational equilibrium at numbers: the derive → numerics hand-off of
:mod:`nmech.derive.symmetry.equilibrium`.

Derived: |θ| = P^{1/r} and η_r = √S, with P (``norm_power``) a function of the hyper-parameters,
the channel's number of elements C and the mean squared gradient at unit norm G_unit, and S
(``angular_sq``) of the hyper-parameters alone. Here the hyper-parameters are put in exactly
(:func:`nmech.derive.symbols.exact_values`), and P becomes a numpy function of (C, G_unit),
vectorised over channels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import sympy as sp

from nmech.derive.symbols import exact_values
from nmech.derive.symmetry.equilibrium import G_UNIT, C, Equilibrium


@dataclass(frozen=True)
class NumericEquilibrium:
    """``norm(size, g_unit)`` -> per-channel |θ| at equilibrium; ``angular_update`` η_r (radians
    per step); ``needs_size``/``needs_gradient``: whether the norm depends on C / G_unit."""

    norm: Callable[[np.ndarray, np.ndarray], np.ndarray]
    angular_update: float
    needs_size: bool
    needs_gradient: bool


def equilibrium_at(eq: Equilibrium, values: Mapping[str, float]) -> NumericEquilibrium:
    """``eq`` at the hyper-parameters ``values`` (keyed by the shared names)."""
    power, angular = sp.sympify(eq.norm_power), sp.sympify(eq.angular_sq)
    free = (power.free_symbols | angular.free_symbols) - {C, G_UNIT}
    exact = exact_values(values, free)
    power = power.xreplace(exact)
    # numeric sub-expressions to 30 digits before printing: rounded once to float64, never
    # handed to numpy as huge exact integers
    fn = sp.lambdify([C, G_UNIT], sp.N(power ** sp.Rational(1, eq.root), 30), "numpy")

    def norm(size: np.ndarray, g_unit: np.ndarray) -> np.ndarray:
        size = np.asarray(size, dtype=np.float64)
        g_unit = np.asarray(g_unit, dtype=np.float64)
        shape = np.broadcast_shapes(size.shape, g_unit.shape)
        return np.broadcast_to(np.asarray(fn(size, g_unit), dtype=np.float64), shape)

    angular_update = float(sp.N(sp.sqrt(angular.xreplace(exact)), 30))
    return NumericEquilibrium(norm, angular_update, power.has(C), power.has(G_UNIT))
