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

from collections.abc import Callable, Mapping
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
#: The definition of D = ε + |∇L| (notation.Names) in the JSON document.
DENOMINATOR_JSON = {
    "name": "D",
    "text": "eps + |∇L|",
    "latex": "\\epsilon + \\left|\\nabla L\\right|",
    "tree": {"elementwise": "eps + Abs(_e0)", "arguments": ["grad"]},
}


@dataclass(frozen=True, repr=False)
class ModifiedEquation(Derivation):
    """θ̇ = Σ_k η^k F_k(θ); ``states`` holds each auxiliary state on the slow manifold."""

    rule: Rule
    order: int
    terms: tuple[T.Vec, ...]
    states: Mapping[str, tuple[T.Vec, ...]]

    #: The left-hand side (the flowing quantity's derivative) in (LaTeX, text).
    LHS = ("\\dot\\theta", "dθ/dt")

    def correction(self, k: int) -> T.Vec:
        """F_k: the coefficient of η^k (k = 0 is the leading, gradient-flow term)."""
        return self.terms[k]

    # ------------------------------------------------------------ presentation
    def latex(self) -> str:
        """``\\dot\\theta = Σ_k η^k F_k + O(η^{order+1})`` in LaTeX, then one line
        ``u_i = …`` for each element-wise node named inside the trees
        (:class:`~nmech.derive.algebra.notation.Names`)."""
        names = notation.Names(self.terms)
        flow = notation.flow_latex(self.terms, self.order, render=names.render, lhs=self.LHS[0])
        return "\n".join([flow, *names.definitions()])

    def text(self) -> str:
        """The same in plain text, ``dθ/dt = …`` and ``where u1 = …, …``."""
        names = notation.Names(self.terms)
        flow = notation.flow_text(self.terms, self.order, render=names.render, lhs=self.LHS[1])
        where = names.definitions(latex=False)
        return flow + (f"\n  where {';  '.join(where)}" if where else "")

    def to_json(self) -> dict[str, Any]:
        """Schema ``nmech.modified_equation/1``::

            {"schema", "rule", "order", "variable": "eta",
             "terms": [{"order": k, "coefficient": str, "coefficient_latex": str,
                        "differential": str, "differential_latex": str,
                        "tree": nested lists ("grad" = ∇L; [c1, ..] = ∇^{k+1}L[c1, ..]; "theta";
                                 {"elementwise": f, "arguments": [a0, ..]} = f(a0, ..) entry-wise,
                                 f written in _e0, _e1, ..)}],
             "definitions": [{"name": "D" or "u1", …, "text", "latex", "tree"}] (what the
                             differentials name: D = eps + |∇L|, the element-wise nodes u_i),
             "modified_loss": the nmech.modified_loss/1 document of :meth:`modified_loss`}

        The field is Σ_terms eta**order * coefficient * differential; coefficients are written
        with (1 - beta) factors, as in the text and the LaTeX.
        """
        names = notation.Names(self.terms)
        terms = notation.terms_json(self.terms, names.render)
        definitions = [
            {
                "name": names.name(t, latex=False),
                "text": notation.elementwise(t.f, t.args, False, names),
                "latex": notation.elementwise(t.f, t.args, True, names),
                "tree": notation.tree_json(t),
            }
            for t in sorted(names.index, key=names.index.get)
        ]
        if names.uses_denominator:
            definitions.insert(0, DENOMINATOR_JSON)
        return {
            "schema": JSON_SCHEMA,
            "rule": self.rule.name,
            "order": self.order,
            "variable": "eta",
            "terms": terms,
            "definitions": definitions,
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


def modified_equation(
    rule: Rule, order: int = 1, progress: Callable[[int, int], None] | None = None
) -> ModifiedEquation:
    """Backward error analysis of ``rule`` through η^order (see module docstring); a rule with
    bias corrections is taken after its transient (:meth:`Rule.after_transient`).
    ``progress(done, total)`` is told of each solved level (:func:`.slow_manifold.solve`)."""
    rule = rule.after_transient()
    manifold = solve(rule, order, progress)
    return ModifiedEquation(
        rule=rule,
        order=order,
        terms=tuple(manifold.F[: order + 1]),
        states=manifold.U,
    )
