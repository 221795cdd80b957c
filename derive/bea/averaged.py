"""The modified equation of an averaged iterate: the flow that θ̄ itself follows.

A rule may carry, besides θ, an average of its iterates, e.g. the exponential (Polyak–Ruppert
EMA) average θ̄⁺ = γθ̄ + (1 − γ)θ⁺, or schedule-free SGD's x⁺ = γx + (1 − γ)z⁺ with constant
weight. On the slow manifold of the rule (:mod:`nmech.derive.bea.slow_manifold`) the average is
a near-identity function of θ,

    θ̄ = Φ(θ) = θ + Σ_{k≥1} η^k U_k(θ)      (EMA: Φ(θ) = θ − η γ/(1 − γ) F_0(θ) + O(η²)),

and θ follows θ̇ = f̃(θ). Then θ̄ follows the pushed-forward field F̃ = Φ_* f̃,

    dθ̄/dt = F̃(θ̄),        F̃(Φ(θ)) = Φ′(θ) f̃(θ) = L_f̃ Φ (θ),

which is computed without any inverse Jacobian: write Φ as the time-η flow of a field W,
Φ = exp(η L_W) θ (:func:`~nmech.derive.algebra.series.field_of_map`, the same inversion as an
epoch of mini-batch SGD), so that Φ⁻¹ is its time −η flow and, for any function G,
G ∘ Φ⁻¹ = exp(−η L_W) G. Hence

    F̃ = exp(−η L_W) (L_f̃ Φ),

two Lie series (:class:`~nmech.derive.algebra.series.Flow`). F̃ holds to the order of f̃: the
average tracks the flow of F̃ to O(η^{p+1}) over a fixed time, for the same (fixed) γ < 1 as
η → 0 — the averaging window is η/(1 − γ) in time, so the expansion is in η/(1 − γ) and needs
η ≪ 1 − γ. Averages whose weights change with the step (the uniform Polyak average
θ̄_n = (1/n) Σ_k θ_k, schedule-free's c_t = 1/(t + 1)) have no slow manifold (the average's
contraction 1 − c_t tends to 1) and no autonomous modified equation (docs/math.md §11).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nmech.derive.algebra import trees as T
from nmech.derive.algebra.ratfunc import RationalField
from nmech.derive.algebra.series import Flow, field_of_map
from nmech.derive.bea.modified_equation import ModifiedEquation, modified_equation
from nmech.derive.rules.rule import Rule
from nmech.derive.symbols import eta
from nmech.errors import NmechError

JSON_SCHEMA = "nmech.averaged_equation/1"


@dataclass(frozen=True, repr=False)
class AveragedEquation(ModifiedEquation):
    """dθ̄/dt = Σ_k η^k F_k(θ̄) for the average ``average`` of the rule's iterates; ``iterate``
    is θ's own modified equation (with the slow manifold of every state, as functions of θ).
    ``terms`` are differentials of L at θ̄; :meth:`field` and :meth:`modified_loss` act on
    them as for θ."""

    average: str = ""
    iterate: ModifiedEquation | None = field(default=None, compare=False)

    LHS = ("\\dot{\\bar\\theta}", "dθ̄/dt")

    def latex(self) -> str:
        """``\\dot{\\bar\\theta} = …``, the differentials taken at θ̄."""
        return f"% the average {self.average} = \\bar\\theta of the iterates\n" + super().latex()

    def to_json(self) -> dict[str, Any]:
        """Schema ``nmech.averaged_equation/1``: the ``nmech.modified_equation/1`` document
        of the average's field plus ``"average"`` (the state's name)."""
        return {**super().to_json(), "schema": JSON_SCHEMA, "average": self.average}


def averaged_equation(
    rule: Rule,
    order: int = 1,
    average: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> AveragedEquation:
    """The modified equation of the average ``average`` (default: the rule's one declared
    average, :attr:`Rule.averages`) through η^order (module docstring). The average must tend
    to θ as η → 0 on the slow manifold (it is refused otherwise: then it is no average of the
    iterates)."""
    if average is None:
        if len(rule.averages) != 1:
            declared = ", ".join(rule.averages) or "none"
            raise NmechError(
                f"rule '{rule.name}' declares {len(rule.averages) or 'no'} average(s) "
                f"({declared}): name the one to derive"
            )
        average = rule.averages[0]
    base = modified_equation(rule, order, progress)
    if average not in base.states:
        raise NmechError(f"rule '{rule.name}' has no state '{average}'")
    manifold = base.states[average]
    if manifold[0] != {T.THETA: 1}:
        raise NmechError(
            f"state '{average}' does not tend to theta as eta -> 0: it is no average of the "
            "iterates"
        )
    K = RationalField(base.rule.parameters() - {eta})
    convert = K.convert

    def field_of(v: T.Vec) -> T.Vec:
        return {t: convert(c) for t, c in v.items()}

    f = [field_of(v) for v in base.terms]
    phi = [field_of(v) for v in manifold]
    W = field_of_map(phi, 1, order - 1, convert) if order > 0 else []
    pushed = [Flow(f, convert=convert).lie("phi", phi, 1, m) for m in range(order + 1)]
    back = Flow(W, time=-1, convert=convert)
    terms = []
    for n in range(order + 1):
        v = T.simplify(back.coefficient("pushed", pushed, n))
        v = {t: K.to_sympy(c) for t, c in v.items() if c != 0}
        terms.append(T.merge_elementwise(v) if any(map(T.is_elementwise, v)) else v)
    return AveragedEquation(
        rule=base.rule, order=order, terms=tuple(terms), states={}, average=average, iterate=base
    )
