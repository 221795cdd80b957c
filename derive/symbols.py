"""The shared sympy symbols of the engine.

``eta`` learning rate, ``beta`` momentum, ``lam`` coupled weight decay, ``tau`` dampening.
:class:`grad` is the loss gradient ∇L evaluated at a point (a vector expression).
"""

from __future__ import annotations

import sympy as sp

eta, beta, lam, tau = sp.symbols("eta beta lam tau", real=True)

#: Hyper-parameter symbols by their name in rule text, CLI options and numeric calls.
HYPERPARAMETERS: dict[str, sp.Symbol] = {"eta": eta, "beta": beta, "lam": lam, "tau": tau}


class grad(sp.Function):
    """∇L(point): the loss gradient at a vector expression ``point``."""

    nargs = 1


def vector(name: str) -> sp.Symbol:
    """A vector-valued state (θ, a momentum buffer, ...) as a sympy symbol."""
    return sp.Symbol(name, commutative=True)


def scalar(name: str) -> sp.Symbol:
    """A scalar parameter; the four hyper-parameters keep their shared (real) symbols."""
    return HYPERPARAMETERS.get(name) or sp.Symbol(name, real=True)
