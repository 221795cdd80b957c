"""The stochastic modified equation of mini-batch SGD (Li, Tai & E 2017/2019).

One step draws a batch j uniformly from m and moves by Δ = −η∇L̂_j(θ). The SDE
dθ = b dt + √η Σ^{1/2} dW, b = b_0 + η b_1, run for time η, has increment moments
E[X_η − θ] = η b_0 + η²(b_1 + ½ b_0′b_0) + O(η³) and E[(X_η − θ)(X_η − θ)ᵀ] = η²(b_0b_0ᵀ + Σ)
+ O(η³). Matching them with SGD's, computed from the labelled expansion of one step averaged
over the m draws, makes the SDE a second-order weak approximation:

* the drift is the backward error analysis of the mean step over time η (the same solve as
  :func:`~nmech.derive.stochastic.minibatch.minibatch_equation` with one draw): b = −∇[L + (η/4)‖∇L‖²];
* Σ = [η²] E[ΔΔᵀ] − b_0b_0ᵀ = (1/m) Σ_k ∇L̂_k∇L̂_kᵀ − ∇L∇Lᵀ, which is the covariance of one
  mini-batch gradient, (1/m) Σ_k (∇L̂_k − ∇L)(∇L̂_k − ∇L)ᵀ (checked in the labelled algebra).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sympy as sp

from nmech.derive.algebra import notation
from nmech.derive.algebra import trees as T
from nmech.derive.algebra.concrete import ConcreteEvaluator
from nmech.derive.result import Derivation
from nmech.derive.stochastic import batch_sums as B
from nmech.derive.stochastic.minibatch import (
    REPLACEMENT,
    MinibatchEquation,
    epoch_moments,
    minibatch_equation,
)
from nmech.errors import NmechError

JSON_SCHEMA = "nmech.minibatch_sde/1"


def centred_covariance(m: int) -> B.Items:
    """(1/m) Σ_k (∇L̂_k − ∇L)(∇L̂_k − ∇L)ᵀ in labelled items, ∇L = (1/m) Σ_j ∇L̂_j."""
    mean = {T.node((), j): sp.Rational(1, m) for j in B.labels(m)}
    out: B.Items = {}
    for k in B.labels(m):
        centred = T.combine([(1, {T.node((), k): 1}), (-1, mean)])
        T.add_to(out, B.outer([centred, centred]), sp.Rational(1, m))
    return out


@dataclass(frozen=True, repr=False)
class MinibatchSDE(Derivation):
    """dθ = b dt + √η Σ^{1/2} dW; ``drift`` b through η, ``covariance`` Σ in labelled items,
    ``patterns`` Σ with Σ_k and L, ``centred`` whether Σ equals the batch-gradient covariance."""

    batches: int
    drift: MinibatchEquation
    covariance: B.Items
    patterns: B.Items
    centred: bool

    def covariance_latex(self, latex: bool = True) -> str:
        """Σ written with Σ_k and L (plain text with ``latex=False``)."""
        if not self.patterns:
            return "0"
        items = sorted(self.patterns, key=lambda i: (len(B.index_names(i)) == 0, i))
        text = ""
        for item in items:
            c = sp.factor(self.patterns[item])
            negative = c.could_extract_minus_sign()
            mag = -c if negative else c
            factor = (
                "" if mag == 1 else notation.coefficient(mag, latex) + ("\\," if latex else "·")
            )
            sign = ("-" if negative else "") if not text else (" - " if negative else " + ")
            text += sign + factor + B.render_matrix(item, latex)
        return text

    def latex(self) -> str:
        """dθ = −∇L̃ dt + √η Σ^{1/2} dW in LaTeX."""
        loss = self.drift.modified_loss().body()
        sigma = self.covariance_latex()
        note = (
            f" = \\frac{{1}}{{{self.batches}}}\\sum_{{k}} (\\nabla \\hat L_{{k}} - \\nabla L)"
            "(\\nabla \\hat L_{k} - \\nabla L)^\\top"
            if self.centred
            else ""
        )
        return (
            f"d\\theta = -\\nabla\\left({loss}\\right)dt + \\sqrt{{\\eta}}\\,\\Sigma(\\theta)^{{1/2}}"
            f"\\,dW,\\quad \\Sigma = {sigma}{note}"
        )

    def text(self) -> str:
        """The same in plain text."""
        loss = self.drift.modified_loss().body(latex=False)
        return (
            f"dθ = -∇({loss}) dt + √η Σ(θ)^(1/2) dW,  Σ = {self.covariance_latex(latex=False)}"
            + ("  (the covariance of one mini-batch gradient)" if self.centred else "")
            + f",  m = {self.batches}"
        )

    def to_json(self) -> dict[str, Any]:
        """Schema ``nmech.minibatch_sde/1``: {"schema", "batches", "latex", "drift": the
        minibatch/1 document of b, "diffusion": {"scale": "sqrt(eta)", "covariance":
        [{"coefficient", "indices", "left", "right", "differential"}], "centred"}}; Σ is
        Σ_terms Σ_indices coefficient·(left rightᵀ + right leftᵀ)/2."""
        covariance = [
            {
                "coefficient": sp.sstr(sp.factor(c)),
                "indices": B.index_names(item),
                "left": notation.tree_json(item[0]),
                "right": notation.tree_json(item[1]),
                "differential": B.render_matrix(item, latex=False),
            }
            for item, c in sorted(self.patterns.items())
        ]
        return {
            "schema": JSON_SCHEMA,
            "batches": self.batches,
            "latex": self.latex(),
            "drift": self.drift.to_json(),
            "diffusion": {"scale": "sqrt(eta)", "covariance": covariance, "centred": self.centred},
        }

    def matrix(self, batches: Mapping[str, sp.Expr], coords: list[sp.Symbol]) -> sp.Matrix:
        """Σ(θ) for concrete mini-batch losses {label: L̂_label(coords)}."""
        if len(batches) != self.batches:
            raise NmechError(f"give {self.batches} mini-batch losses, got {len(batches)}")
        loss = sp.Add(*batches.values()) / len(batches)
        evaluator = ConcreteEvaluator(loss, coords, batches)
        total = sp.zeros(len(coords), len(coords))
        for (a, b), c in self.covariance.items():
            va, vb = evaluator.tree(a), evaluator.tree(b)
            total += c * (va * vb.T + vb * va.T) / 2
        return total


def minibatch_sde(batches: int) -> MinibatchSDE:
    """Drift and diffusion of the second-order SDE of SGD with m = ``batches`` (module
    docstring)."""
    drift = minibatch_equation(batches, order=1, sampling=REPLACEMENT, steps=1)
    moments = epoch_moments(batches, REPLACEMENT, order=2, steps=1)
    b0 = drift.terms[0]
    covariance = T.simplify(T.combine([(1, moments.second[2]), (-1, B.outer([b0, b0]))]))
    centred = T.is_zero(T.combine([(1, covariance), (-1, centred_covariance(batches))]))
    return MinibatchSDE(batches, drift, covariance, B.decompose(covariance, batches), centred)
