"""The shared sympy symbols of the engine.

``eta`` learning rate, ``beta`` momentum, ``lam`` weight decay, ``tau`` dampening; for the
adaptive rules ``beta1``/``beta2`` (Adam's moment decays), ``alpha`` (RMSProp's decay) and
``eps`` (the denominator's ε). ``step`` is the 1-based iteration count n; it may only appear as
an exponent b**step (Adam's bias corrections 1 − β^n), and derivations take the rule after the
transient, b**step → 0 for |b| < 1.
:class:`grad` is the loss gradient ∇L evaluated at a point (a vector expression).
"""

from __future__ import annotations

import sympy as sp

eta, beta, lam, tau = sp.symbols("eta beta lam tau", real=True)
beta1, beta2, alpha = sp.symbols("beta1 beta2 alpha", real=True)
eps = sp.Symbol("eps", positive=True)
step = sp.Symbol("step", integer=True, positive=True)

#: Hyper-parameter symbols by their name in rule text, CLI options and numeric calls.
HYPERPARAMETERS: dict[str, sp.Symbol] = {
    "eta": eta,
    "beta": beta,
    "lam": lam,
    "tau": tau,
    "beta1": beta1,
    "beta2": beta2,
    "alpha": alpha,
    "eps": eps,
    "step": step,
}


class grad(sp.Function):
    """∇L(point): the loss gradient at a vector expression ``point``."""

    nargs = 1


def vector(name: str) -> sp.Symbol:
    """A vector-valued state (θ, a momentum buffer, ...) as a sympy symbol."""
    return sp.Symbol(name, commutative=True)


def scalar(name: str) -> sp.Symbol:
    """A scalar parameter; the four hyper-parameters keep their shared (real) symbols."""
    return HYPERPARAMETERS.get(name) or sp.Symbol(name, real=True)
