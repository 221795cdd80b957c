"""The dynamics of a symmetry's observable under an update rule, derived three ways.

``derive(rule, symmetry, order=1) -> SymmetryDynamics`` bundles

* the continuous ODE the observable obeys under the rule's modified flow, reduced with the
  symmetry's rewriting rules to Q itself plus named driving signals (:mod:`.continuous`);
* its solution as an integral with closed-form kernels K and G in each damping regime;
* the exact discrete recursion, a closed linear recursion driven by measured per-step signals
  (:mod:`.recursion`).

Rules that are not linear steps (Adam, AdamW, RMSProp: element-wise preconditioning) take both
forms from :mod:`.adaptive`: θ⁺ = aθ − ηu and the recursion driven by the measured update u.

Numeric evaluation lives in :func:`nmech.numerics.predict`: symbolic objects in, lambdified
kernels and rational recursion matrices out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

import sympy as sp

from nmech.derive.algebra import notation
from nmech.derive.result import Derivation
from nmech.derive.rules.rule import Rule
from nmech.derive.symbols import exact_values
from nmech.derive.symmetry.adaptive import (
    AdaptiveStep,
    adaptive_continuous,
    adaptive_recursion,
    adaptive_step,
    is_adaptive,
)
from nmech.derive.symmetry.continuous import (
    ContinuousDynamics,
    NumericContinuous,
    continuous_dynamics,
    kernels,
)
from nmech.derive.symmetry.equilibrium import Equilibrium, equilibrium
from nmech.derive.symmetry.generators import Symmetry
from nmech.derive.symmetry.recursion import (
    SIGNAL_LATEX,
    NumericRecursion,
    Recursion,
    derive_recursion,
)
from nmech.errors import NmechError

#: Generic parameter values at which the signal set of the exact recursion is decided quickly.
GENERIC = {"eta": 0.0713, "beta": 0.3719, "lam": 0.0291, "tau": 0.1931}


@dataclass(frozen=True, eq=False, repr=False)
class SymmetryDynamics(Derivation):
    rule: Rule
    symmetry: Symmetry
    order: int = 1
    paper: bool = False
    _cache: dict = field(default_factory=dict, repr=False)

    @cached_property
    def adaptive(self) -> AdaptiveStep | None:
        """θ⁺ = aθ − ηu for a rule that is not a linear step (Adam, AdamW, RMSProp), else None."""
        return adaptive_step(self.rule) if is_adaptive(self.rule) else None

    @cached_property
    def equilibrium(self) -> Equilibrium | None:
        """The rotational equilibrium of a scale-invariant channel (scale symmetry, momentum
        rules with weight decay, :mod:`.equilibrium`), or None where the model does not apply."""
        if self.symmetry.name != "scale":
            return None
        try:
            return equilibrium(self.rule)
        except NmechError:
            return None

    @cached_property
    def continuous(self) -> ContinuousDynamics:
        """The continuous ODE of the observable (module docstring), with its driving signals."""
        if self.adaptive is not None:
            return adaptive_continuous(self.adaptive, self.symmetry)
        return continuous_dynamics(self.rule, self.symmetry, self.order, self.paper)

    @cached_property
    def recursion(self) -> Recursion:
        """The exact recursion with symbolic parameters (for display)."""
        if self.adaptive is not None:
            return adaptive_recursion(self.adaptive, self.symmetry)
        return derive_recursion(self.rule, self.symmetry)

    def recursion_at(self, values: Mapping[str, float]) -> Recursion:
        """The exact recursion at numeric parameter values, in exact rationals (floats taken as
        exact decimals): re-derived with the values put in the rule, so that a symbolic form
        singular at an edge of the domain (λ = 0, ...) is never evaluated there."""
        adaptive = self.recursion if self.adaptive is not None else None
        if adaptive is None:
            needed = self.rule.parameters()
        else:
            needed = set().union(*(m.free_symbols for m in _matrices(adaptive)))
        exact = exact_values(values, needed)
        key = tuple(sorted((s.name, v) for s, v in exact.items()))
        if key not in self._cache:
            if adaptive is None:
                rec = derive_recursion(self.rule.with_values(exact), self.symmetry)
            else:
                put = [m.xreplace(exact) for m in _matrices(adaptive)]
                rec = Recursion(adaptive.hidden, adaptive.signals, *put)
            self._cache[key] = rec
        return self._cache[key]

    def exact_at(self, values: Mapping[str, float]) -> NumericRecursion:
        """The exact recursion at ``values`` as plain float data for numerics."""
        return self.recursion_at(values).numeric()

    def continuous_at(self, values: Mapping[str, float]) -> NumericContinuous:
        """The continuous form at ``values`` as plain float data for numerics."""
        return self.continuous.at(values)

    @property
    def signals(self) -> tuple[str, ...]:
        """Per-step signals the exact form needs (decided at generic parameter values)."""
        if self.adaptive is not None:
            return self.recursion.signals
        generic = {str(s): GENERIC.get(str(s), 0.1234) for s in self.rule.parameters()}
        return self.recursion_at(generic).signals

    @property
    def continuous_signals(self) -> tuple[str, ...]:
        """Per-step signals the continuous form needs."""
        return self.continuous.signals

    def latex(self) -> str:
        """The continuous form with its kernels, the exact recursion (and the equilibrium)."""
        c = self.continuous
        lines = [f"% {self.symmetry.name} observable under {self.rule.name}"]
        if self.adaptive is not None:
            lines.append(f"% update: {self.adaptive.latex()}")
        lines.append("% continuous:")
        lines.append(c.latex())
        if c.ode_order == 2:
            for regime, (K, G) in kernels().items():
                lines.append(
                    f"% {regime}-damped: K(t) = {notation.coefficient(K)},\\quad "
                    f"G(t) = {notation.coefficient(G)}"
                )
        lines.append("% exact discrete recursion:")
        lines.append(self.recursion.latex())
        if self.equilibrium is not None:
            lines.append(self.equilibrium.latex())
        return "\n".join(lines)

    def text(self) -> str:
        """The continuous form, the exact recursion (and the equilibrium) in plain text."""
        lines = [f"{self.symmetry.name} observable under {self.rule.name}"]
        if self.adaptive is not None:
            lines.append(f"update: {self.adaptive.text()}")
        lines += ["continuous:", self.continuous.text(), "exact discrete recursion:"]
        lines.append(self.recursion.text())
        if self.equilibrium is not None:
            lines.append(f"rotational equilibrium: {self.equilibrium.text()}")
        return "\n".join(lines)

    def to_json(self) -> dict:
        """Schema ``nmech.symmetry_dynamics/1``: update, equilibrium, continuous and exact forms
        (sympy strings)."""
        c = self.continuous
        rec = self.recursion
        update = self.adaptive
        return {
            "schema": "nmech.symmetry_dynamics/1",
            "rule": self.rule.name,
            "symmetry": self.symmetry.name,
            "update": None if update is None else {"a": sp.sstr(update.a), "u": sp.sstr(update.u)},
            "equilibrium": None
            if self.equilibrium is None
            else {
                "norm": sp.sstr(self.equilibrium.norm),
                "angular_update": sp.sstr(self.equilibrium.angular_update),
            },
            "continuous": {
                "ode_order": c.ode_order,
                "rate": sp.sstr(c.rate),
                "gamma": sp.sstr(c.gamma),
                "omega2": sp.sstr(c.omega2),
                "forcing": {k: sp.sstr(v) for k, v in c.forcing.items()},
            },
            "exact": {
                "signals": {n: SIGNAL_LATEX[n] for n in rec.signals},
                "hidden": [sp.sstr(h) for h in rec.hidden],
                "A": [[sp.sstr(x) for x in row] for row in rec.A.tolist()],
                "B": [[sp.sstr(x) for x in row] for row in rec.B.tolist()],
                "a1": [sp.sstr(x) for x in rec.a1],
                "B1": [[sp.sstr(x) for x in row] for row in rec.B1.tolist()],
            },
        }


def _matrices(rec: Recursion) -> tuple[sp.Matrix, ...]:
    return rec.A, rec.B, rec.a1, rec.B1


def derive(rule: Rule, symmetry: Symmetry, order: int = 1, paper: bool = False) -> SymmetryDynamics:
    """The dynamics of ``symmetry``'s observable under ``rule`` (``paper``: weight decay only at
    leading order in the continuous form, as in the paper)."""
    return SymmetryDynamics(rule, symmetry, order, paper)
