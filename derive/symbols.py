"""The shared sympy symbols of the engine.

``eta`` learning rate, ``beta`` momentum, ``lam`` weight decay, ``tau`` dampening; for the
adaptive rules ``beta1``/``beta2`` (Adam's moment decays), ``alpha`` (RMSProp's decay) and
``eps`` (the denominator's ε); for averaged iterates ``gamma`` (the decay of an exponential
average of the iterates, φ⁺ = γφ + (1 − γ)θ⁺) and ``rho`` (Lookahead's slow step size). ``step`` is the 1-based iteration count n; it may only appear as
an exponent b**step (Adam's bias corrections 1 − β^n), and derivations take the rule after the
transient, b**step → 0 for |b| < 1.
:class:`grad` is the loss gradient ∇L evaluated at a point (a vector expression);
:class:`sign` the entry-wise sign of a vector on a region where no entry changes sign;
:class:`norm` the global Euclidean norm of a vector (a scalar).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping

import sympy as sp

from nmech.errors import NmechError

eta, beta, lam, tau = sp.symbols("eta beta lam tau", real=True)
beta1, beta2, alpha = sp.symbols("beta1 beta2 alpha", real=True)
gamma, rho = sp.symbols("gamma rho", real=True)
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
    "gamma": gamma,
    "rho": rho,
    "step": step,
}


class grad(sp.Function):
    """∇L(point): the loss gradient at a vector expression ``point``."""

    nargs = 1


class sign(sp.sign):
    """sign x, taken on a region where x keeps its sign (no entry of x crosses 0).

    There sign x is locally constant, so every derivative is 0; sympy's own ``sign`` would
    differentiate to 2δ(x), a distribution no expansion can use. Sign-based optimizers
    (signSGD, signum, Lion) are smooth on each such region and their modified equations hold
    there only: a derivation gives the field of the region the iterates stay in, and a point
    where an argument vanishes has none (the numerics refuse it)."""

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        """∂ sign x/∂x = 0 on a region of fixed sign."""
        return sp.S.Zero

    def _eval_derivative(self, x: sp.Symbol) -> sp.Expr:
        return sp.S.Zero


class norm(sp.Function):
    """‖x‖ = (Σ_i x_i²)^{1/2}, the global Euclidean norm of a vector expression x: a scalar,
    smooth where x ≠ 0 (normalised GD, SAM's normalised ascent, clipping by global norm); the
    derivations and the numerics refuse a point where it vanishes."""

    nargs = 1


def vector(name: str) -> sp.Symbol:
    """A vector-valued state (θ, a momentum buffer, ...) as a sympy symbol."""
    return sp.Symbol(name, commutative=True)


def scalar(name: str) -> sp.Symbol:
    """A scalar parameter; the four hyper-parameters keep their shared (real) symbols."""
    return HYPERPARAMETERS.get(name) or sp.Symbol(name, real=True)


#: Where each hyper-parameter is meaningful: (lowest, highest, lowest included, highest included).
DOMAINS: dict[str, tuple[float, float, bool, bool]] = {
    "eta": (0.0, float("inf"), False, False),
    "beta": (0.0, 1.0, True, False),
    "beta1": (0.0, 1.0, True, False),
    "beta2": (0.0, 1.0, True, False),
    "alpha": (0.0, 1.0, True, False),
    "lam": (0.0, float("inf"), True, False),
    "tau": (0.0, 1.0, True, True),
    "eps": (0.0, float("inf"), False, False),
    "gamma": (0.0, 1.0, True, False),
    "rho": (0.0, 1.0, False, True),
}


def _in_domain(name: str, x: float) -> bool:
    low, high, low_in, high_in = DOMAINS[name]
    return (low < x or (low_in and x == low)) and (x < high or (high_in and x == high))


def exact_values(
    values: Mapping[str, object], needed: Iterable[sp.Symbol]
) -> dict[sp.Symbol, sp.Rational]:
    """The numbers a derived expression is evaluated at, as exact rationals keyed by symbol.

    ``values`` maps the shared hyper-parameter names (:data:`HYPERPARAMETERS`, and any other
    scalar a rule names) to real numbers; every symbol in ``needed`` must be given. A float is
    taken as the exact decimal its ``repr`` shows (0.1 is 1/10), so that expressions with poles
    at β = 1 are evaluated without cancellation and rounded once at the end. Raises
    :class:`~nmech.errors.NmechError` naming the value for: a missing or non-numeric value
    (bool, str, complex, array), a non-finite one, one outside its domain (:data:`DOMAINS`),
    ``step`` (the iteration count is no parameter of a derived result)."""
    if not isinstance(values, Mapping):
        raise NmechError(f"values must be a mapping of parameter names to numbers, got {values!r}")
    needed = {s.name: s for s in needed}
    out: dict[sp.Symbol, sp.Rational] = {}
    for name, value in values.items():
        if not isinstance(name, str):
            raise NmechError(f"parameter names must be strings, got {name!r}")
        if name == "step":
            raise NmechError("'step' is the iteration count, not a parameter value")
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise NmechError(f"parameter {name} must be a real number, got {value!r}")
        x = float(value)
        if not math.isfinite(x):
            raise NmechError(f"parameter {name} must be finite, got {x}")
        if name in DOMAINS and not _in_domain(name, x):
            low, high, low_in, high_in = DOMAINS[name]
            span = f"{'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"
            raise NmechError(f"parameter {name} = {x!r} is outside its domain {span}")
        if name in needed:
            out[needed[name]] = sp.Rational(repr(x))
    missing = sorted(set(needed) - {s.name for s in out})
    if missing:
        raise NmechError(f"no value given for parameter(s) {', '.join(missing)}")
    return out
