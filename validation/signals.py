"""The registry of recorded per-step signals: what each one sums over a block, and when.

Per step n and block A, with the element symbols θ = θ_n, θ' = θ_{n+1}, g = g_n (the loss
gradient as left by ``backward()``) and u = u_n (the optimizer's update direction, θ_{n+1} =
aθ_n − ηu_n), a signal is Σ_{i∈A} s_i f(θ_i, θ'_i, g_i, u_i) for its per-element *summand* f,
where s_i is the element's sign in J (quadratic family) or 1 (linear family):

    grad_sq   = ⟨g, Jg⟩            f = g²
    step_sq   = ⟨Δ, JΔ⟩            f = (θ' − θ)²        Δ = θ_{n+1} − θ_n
    step_grad = ⟨Δ, Jg⟩            f = (θ' − θ) g
    theta_u   = ⟨Jθ, u⟩            f = θ u              (optimizers with an update direction)
    u_sq      = ⟨u, Ju⟩            f = u²
    c_u       = ⟨1_A, u⟩           f = u                (linear family)

``needs_update`` marks the signals that need u_n: they are recorded when the run's optimizer
has an update-direction recursion (Adam, AdamW, RMSprop, Adagrad, the fallback). The
recorder's compiled kernels are generated from these summands
(:mod:`nmech.validation.codegen`), so a new signal is one :func:`register_signal` call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nmech.validation.kinds import LINEAR_FAMILY, QUADRATIC_FAMILY
from nmech.validation.registry import Registry

#: The element symbols a summand may use (their names in :mod:`nmech.validation.codegen`).
ELEMENTS: tuple[str, ...] = ("theta", "theta_next", "g", "u")


@dataclass(frozen=True)
class Signal:
    """One recorded signal: ``summand(e)`` builds f from the element symbols ``e[name]``."""

    name: str
    family: str
    needs_update: bool
    summand: Callable[[dict[str, Any]], Any]
    formula: str


SIGNALS: Registry[Signal] = Registry("signal", family=(QUADRATIC_FAMILY, LINEAR_FAMILY))

#: Add an entry to the registry (its name must be new); returns it.
register_signal = SIGNALS.register


def _step(e: dict[str, Any]) -> Any:
    return e["theta_next"] - e["theta"]


register_signal(Signal("grad_sq", QUADRATIC_FAMILY, False, lambda e: e["g"] ** 2, "<g_n, J g_n>"))
register_signal(Signal("step_sq", QUADRATIC_FAMILY, False, lambda e: _step(e) ** 2,
                       "<D_n, J D_n>, D_n = theta_{n+1} - theta_n"))  # fmt: skip
register_signal(Signal("step_grad", QUADRATIC_FAMILY, False, lambda e: _step(e) * e["g"],
                       "<D_n, J g_n>"))  # fmt: skip
register_signal(Signal("theta_u", QUADRATIC_FAMILY, True, lambda e: e["theta"] * e["u"],
                       "<J theta_n, u_n>"))  # fmt: skip
register_signal(Signal("u_sq", QUADRATIC_FAMILY, True, lambda e: e["u"] ** 2, "<u_n, J u_n>"))
register_signal(Signal("c_u", LINEAR_FAMILY, True, lambda e: e["u"], "<1_A, u_n>"))


def recorded(family: str, update: bool) -> tuple[str, ...]:
    """The signals a block of ``family`` records, in registry order; ``update``: the
    optimizer has an update direction u_n."""
    return tuple(
        s.name for s in SIGNALS.values() if s.family == family and (update or not s.needs_update)
    )
