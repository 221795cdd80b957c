"""The modified loss: L̃ = Σ_k η^k Φ_k with f̃ = −s ∇L̃, order by order while a potential exists.

Given the terms F_k of a modified field (or their mini-batch patterns), s = −[∇L]F_0 is the
scale of the leading term, and Φ_k the potential of −F_k/s found by the exact curl test of
:mod:`nmech.derive.bea.potential`. The first k whose F_k has no potential is the obstruction:
no modified loss exists from that order on (GD: k = 2, the η² term
−η²[(1/3)(∇²L)²∇L + (1/12)∇³L[∇L,∇L]] is not a gradient). A leading term with no −∇L part (an
entry-wise preconditioned flow: Adam, RMSProp) has none at all (obstruction 0). Nor is one
given for a field with norm-scaled terms (normalised GD, SAM's normalised ascent, clipping):
the curl test covers differentials of L only, so it refuses rather than guess.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sympy as sp

from nmech.derive.algebra import notation
from nmech.derive.algebra import trees as T
from nmech.derive.bea import potential
from nmech.derive.result import Derivation

JSON_SCHEMA = "nmech.modified_loss/1"
Terms = dict  # {potential.Scalar: coefficient}


@dataclass(frozen=True, repr=False)
class ModifiedLoss(Derivation):
    """f̃ = −``scale``·∇L̃ with L̃ = Σ_k η^k ``terms[k]`` through order ``exists_through``
    (derived through ``order``); ``obstruction`` is the first order whose term is not a
    gradient (None: L̃ exists through ``order``), ``reason`` says why when none exists at all.
    Scalars carrying mini-batch labels are summed over those indices (Σ_k ‖∇L̂_k‖²)."""

    scale: sp.Expr
    terms: tuple[Terms, ...]
    exists_through: int
    obstruction: int | None
    order: int
    reason: str | None = None

    def verdict(self) -> str:
        """One line: through which order L̃ exists, or why not."""
        if self.reason is not None:
            return f"no modified loss: {self.reason}"
        if self.obstruction is None:
            return f"a modified loss exists through order {self.order}"
        k = self.obstruction
        return f"no modified loss at order {k} (the eta^{k} term is not a gradient)"

    def body(self, latex: bool = True) -> str:
        """Σ_k η^k Φ_k, the right-hand side of L̃ = …"""
        parts = []
        for k, phi in enumerate(self.terms):
            items = sorted(phi.items(), key=lambda kv: (len(kv[0].labels), kv[0].key))
            shown = []
            for s, c in items:
                c = sp.factor(c)
                sep = "\\," if latex else "·"
                factor = {1: "", -1: "-"}.get(c, notation.coefficient(c, latex) + sep)
                shown.append(factor + notation.sum_prefix(s.loss_labels(), latex) + s.latex(latex))
            if not shown:
                continue
            inner = " + ".join(shown)
            if k == 0:
                parts.append(inner)
            elif latex:
                parts.append(f"{notation.eta_power(k)}\\left({inner}\\right)")
            else:
                parts.append(f"{'η' if k == 1 else f'η^{k}'}·({inner})")
        return " + ".join(parts).replace("+ -", "- ")

    def latex(self) -> str:
        """``\\tilde L = …``, or a ``%`` line with the verdict when no L̃ exists."""
        if not self.terms:
            return f"% {self.verdict()}"
        return "\\tilde L = " + self.body(latex=True)

    def text(self) -> str:
        """``L̃ = …`` in plain text, or the verdict when no L̃ exists."""
        return "L̃ = " + self.body(latex=False) if self.terms else self.verdict()

    def to_json(self) -> dict[str, Any]:
        """Schema ``nmech.modified_loss/1``: {"schema", "latex" (None when no L̃ exists),
        "text", "scale", "exists_through_order", "obstruction_order", "verdict", "terms":
        [{"order", "coefficient", "scalar", "scalar_latex", "indices"}]}; L̃ is
        Σ_terms Σ_indices eta**order * coefficient * scalar."""
        terms = [
            {
                "order": k,
                "coefficient": notation.plain(c, machine=True),
                "scalar": s.latex(latex=False),
                "scalar_latex": s.latex(),
                "indices": s.loss_labels(),
            }
            for k, phi in enumerate(self.terms)
            for s, c in sorted(phi.items(), key=lambda kv: (len(kv[0].labels), kv[0].key))
        ]
        return {
            "schema": JSON_SCHEMA,
            "latex": self.latex() if self.terms else None,
            "text": self.text(),
            "scale": notation.plain(self.scale, machine=True),
            "exists_through_order": self.exists_through,
            "obstruction_order": self.obstruction,
            "verdict": self.verdict(),
            "terms": terms,
        }


def modified_loss(
    field: Sequence[T.Vec], order: int, accept: Callable[[int, Terms], bool] | None = None
) -> ModifiedLoss:
    """L̃ of the field Σ_k η^k ``field[k]`` (module docstring); ``accept(k, Φ_k)`` may reject a
    potential found on a shorthand form of the field (mini-batch patterns) by checking it on the
    full one."""
    if any(T.is_scaled(t) for f in field for t in f):
        reason = (
            "the field has terms scaled by norms or inner products of differentials, which the "
            "curl test does not cover"
        )
        return ModifiedLoss(sp.Integer(0), (), -1, 0, order, reason)
    scale = -field[0].get(T.GRAD, 0)
    if scale == 0:
        preconditioned = any(map(T.is_elementwise, field[0]))
        reason = "the leading term has no -grad L component" + (
            " (it is preconditioned entry-wise)" if preconditioned else ""
        )
        return ModifiedLoss(sp.Integer(0), (), -1, 0, order, reason)
    phis: list[Terms] = []
    obstruction = None
    for k, f in enumerate(field):
        phi = potential.potential(f)
        if phi is None or (accept is not None and not accept(k, phi)):
            obstruction = k
            break
        phis.append({s: sp.factor(sp.cancel(-c / scale)) for s, c in phi.items()})
    return ModifiedLoss(sp.factor(scale), tuple(phis), len(phis) - 1, obstruction, order)
