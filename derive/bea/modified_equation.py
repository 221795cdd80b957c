"""Modified equations: the flow an optimizer really follows at a finite learning rate.

``modified_equation(rule, order=p)`` returns θ̇ = f̃(θ) = Σ_{k=0}^{p} η^k F_k(θ), each F_k a sum of
elementary differentials of L (trees) with exact rational coefficients in η's companions β, λ,
τ; the flow tracks the iterates to O(η^{p+1}) over a fixed time t = nη (on the slow manifold
for multi-step and state rules). Known results it reproduces (see the tests):

* GD: f̃ = −∇L − (η/2)∇²L∇L − η²[(1/3)(∇²L)²∇L + (1/12)∇³L[∇L,∇L]] + O(η³), i.e. the modified
  loss L + (η/4)‖∇L‖² at first order and no modified loss at second order.
* Heavy ball: θ̇ = −(1/(1−β))∇[L + η(1+β)/(4(1−β)²)‖∇L‖²] + O(η²).
* Quadratic L = ½θᵀAθ under GD, all orders: θ̇ = (1/η) log(I − ηA)θ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sympy as sp

from nmech.derive.algebra import notation
from nmech.derive.algebra import trees as T
from nmech.derive.algebra.concrete import ConcreteEvaluator
from nmech.derive.bea.modified_loss import ModifiedLoss, modified_loss
from nmech.derive.bea.slow_manifold import solve
from nmech.derive.result import Derivation
from nmech.derive.rules.rule import Rule
from nmech.derive.symbols import eta
from nmech.errors import NmechError

JSON_SCHEMA = "nmech.modified_equation/1"


@dataclass(frozen=True, repr=False)
class ModifiedEquation(Derivation):
    """θ̇ = Σ_k η^k F_k(θ); ``states`` holds each auxiliary state on the slow manifold."""

    rule: Rule
    order: int
    terms: tuple[T.Vec, ...]
    states: dict[str, tuple[T.Vec, ...]]

    def correction(self, k: int) -> T.Vec:
        """F_k: the coefficient of η^k (k = 0 is the leading, gradient-flow term)."""
        return self.terms[k]

    # ------------------------------------------------------------ presentation
    def latex(self) -> str:
        """``\\dot\\theta = Σ_k η^k F_k + O(η^{order+1})`` in LaTeX."""
        return notation.flow_latex(self.terms, self.order)

    def text(self) -> str:
        """The same in plain text, ``dθ/dt = …``."""
        return notation.flow_text(self.terms, self.order)

    def to_json(self) -> dict[str, Any]:
        """Schema ``nmech.modified_equation/1``::

            {"schema", "rule", "order", "variable": "eta",
             "terms": [{"order": k, "coefficient": str, "coefficient_latex": str,
                        "differential": str, "differential_latex": str,
                        "tree": nested lists ("grad" = ∇L; [c1, ..] = ∇^{k+1}L[c1, ..]; "theta";
                                 {"elementwise": f, "arguments": [a0, ..]} = f(a0, ..) entry-wise,
                                 f written in _e0, _e1, ..)}],
             "modified_loss": the nmech.modified_loss/1 document of :meth:`modified_loss`}

        The field is Σ_terms eta**order * coefficient * differential.
        """
        terms = []
        for k, f in enumerate(self.terms):
            for t in sorted(f, key=lambda t: (T.size(t), t)):
                scalar, shown = notation.split_scalar(t)
                c = sp.factor(scalar * f[t])
                terms.append(
                    {
                        "order": k,
                        "coefficient": sp.sstr(c),
                        "coefficient_latex": sp.latex(c),
                        "differential": notation.tree(shown, latex=False),
                        "differential_latex": notation.tree(shown),
                        "tree": notation.tree_json(shown),
                    }
                )
        return {
            "schema": JSON_SCHEMA,
            "rule": self.rule.name,
            "order": self.order,
            "variable": "eta",
            "terms": terms,
            "modified_loss": self.modified_loss().to_json(),
        }

    # ------------------------------------------------------------ concrete losses
    def field(self, loss: sp.Expr, coords: list[sp.Symbol]) -> sp.Matrix:
        """The modified vector field Σ_k η^k F_k for a concrete loss L(coords)."""
        evaluator = ConcreteEvaluator(loss, coords)
        total = sp.zeros(len(coords), 1)
        for k, f in enumerate(self.terms):
            total += eta**k * evaluator.vec(f)
        return total

    def state(self, name: str, loss: sp.Expr, coords: list[sp.Symbol]) -> sp.Matrix:
        """The slow-manifold value of auxiliary state ``name`` through η^{order+1}."""
        if name not in self.states:
            raise NmechError(f"rule '{self.rule.name}' has no state '{name}'")
        evaluator = ConcreteEvaluator(loss, coords)
        total = sp.zeros(len(coords), 1)
        for k, u in enumerate(self.states[name]):
            total += eta**k * evaluator.vec(u)
        return total

    # ------------------------------------------------------------ modified loss
    def modified_loss(self) -> ModifiedLoss:
        """L̃ with f̃ = −s∇L̃, order by order while a potential exists (exact curl test); when
        none exists, the result's ``obstruction``/``reason`` say from which order and why."""
        return modified_loss(self.terms, self.order)


def modified_equation(rule: Rule, order: int = 1) -> ModifiedEquation:
    """Backward error analysis of ``rule`` through η^order (see module docstring); a rule with
    bias corrections is taken after its transient (:meth:`Rule.after_transient`)."""
    rule = rule.after_transient()
    manifold = solve(rule, order)
    return ModifiedEquation(
        rule=rule,
        order=order,
        terms=tuple(manifold.F[: order + 1]),
        states={s: tuple(u) for s, u in manifold.U.items()},
    )
