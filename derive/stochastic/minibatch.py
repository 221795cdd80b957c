"""Mini-batch SGD: the modified flow of an epoch, with or without replacement.

m mini-batch losses L̂_1..L̂_m, L = (1/m) Σ_k L̂_k; a step with batch j is θ ← θ − η∇L̂_j(θ).
An epoch of n steps with batches s_1..s_n is the map θ ↦ θ + δ_n, δ_i = δ_{i−1} − η∇L̂_{s_i}(θ +
δ_{i−1}), expanded in η with labelled elementary differentials (Taylor: ∇L̂_j(θ + δ) =
Σ_r (1/r!) ∇^{r+1}L̂_j[δ, …, δ]). Averaging the expansion over the sampling gives the mean epoch
map θ + Σ_p η^p d_p, and backward error analysis over the epoch time nη gives its modified field
f̃ = Σ_k η^k F_k: exp(nη L_f̃)θ = θ + Σ_p η^p d_p, i.e. with P_1 = f̃, P_j = P_{j−1}′ f̃,

    n F_{p−1} = d_p − Σ_{j=2}^{p} (n^j / j!) [η^{p−j}] P_j.

* *Random reshuffling* (every ordering of the m batches equally likely, n = m), Smith, Dherin,
  Barrett & De (2021): f̃ = −∇[L + (η/4m) Σ_k ‖∇L̂_k‖²] + O(η²).
* *With replacement* (n = m independent uniform draws): the mean iterate follows GD's modified
  flow at first order, f̃ = −∇[L + (η/4)‖∇L‖²] + O(η²); the spread of the batches
  ((1/m)Σ_k‖∇L̂_k‖² − ‖∇L‖², the trace of their covariance) is not in the mean. From η² on the
  mean's field depends on n, through ∇³L̂ contracted with the batches' second moment: the mean
  of a noisy iteration is no autonomous flow, and the SDE below is the faithful description.
  Derived: F_2 = F_2^GD − ((n − 1)/4) ∇³L[Σ] with Σ the batch-gradient covariance below.
* *General m* (:func:`general_minibatch_equation`): the reshuffling coefficients, derived for several m,
  follow a + b/m + c/m²; through η²: F_1 = −(1/2m) Σ_k ∇²L̂_k∇L̂_k and F_2 =
  −(1/12m) Σ_k ∇³L̂_k[∇L̂_k, ∇L̂_k] − (1/3m) Σ_k (∇²L̂_k)²∇L̂_k + (1/12) Σ_k ∇³L̂_k[∇L̂_k, ∇L]
  − (1/12) Σ_k (∇²L̂_k)²∇L + (1/6) Σ_k ∇²L̂_k∇²L∇L̂_k − (1/12) Σ_k ∇³L[∇L̂_k, ∇L̂_k]
  − (1/12) Σ_k ∇²L∇²L̂_k∇L̂_k, which is no gradient (as for GD).
* *SDE* (Li, Tai & E 2017/2019): one uniform draw per step is matched to second weak order by
  dθ = b dt + √η Σ^{1/2} dW with b = b_0 + η b_1 and, from the one-step increment Δ,
  η b_0 + η²(b_1 + ½ b_0′b_0) = E[Δ] and η²(b_0b_0ᵀ + Σ) = E[ΔΔᵀ] through η², giving
  b = −∇[L + (η/4)‖∇L‖²] and Σ = (1/m) Σ_k (∇L̂_k − ∇L)(∇L̂_k − ∇L)ᵀ.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sympy as sp

from nmech.derive.algebra import notation
from nmech.derive.algebra import trees as T
from nmech.derive.algebra.concrete import ConcreteEvaluator
from nmech.derive.algebra.series import Series, field_of_map, gradient_at, zero_series
from nmech.derive.bea.modified_loss import ModifiedLoss, modified_loss
from nmech.derive.result import Derivation
from nmech.derive.stochastic import batch_sums as B
from nmech.derive.symbols import eta
from nmech.errors import NmechError

MAX_ORDER = 2
M = sp.Symbol("m", positive=True, integer=True)
GENERAL_POWERS = (0, -1, -2)  # the general form's coefficients: a + b/m + c/m²
MAX_SEQUENCES = 720
RESHUFFLING, REPLACEMENT = "reshuffling", "replacement"
JSON_SCHEMA = "nmech.minibatch/1"


# ---------------------------------------------------------------- the epoch in trees
def step(delta: Series, label: str, order: int) -> Series:
    """δ − η∇L̂_label(θ + δ): the displacement after one more step."""
    g = gradient_at(delta, order - 1, label)
    return [T.combine([(1, delta[p]), (-1, g[p - 1] if p else {})]) for p in range(order + 1)]


@dataclass(frozen=True)
class Moments:
    """Mean and (symmetrised) second moment of the epoch displacement, per power of η."""

    mean: Series
    second: list[B.Items]
    sequences: int


def sequence_count(m: int, sampling: str, steps: int) -> int:
    """m! (reshuffling, steps = m) or m^steps, capped at MAX_SEQUENCES + 1."""
    count = 1
    for i in range(steps):
        count *= m - i if sampling == RESHUFFLING else m
        if count > MAX_SEQUENCES:
            return MAX_SEQUENCES + 1
    return count


def epoch_moments(m: int, sampling: str, order: int, steps: int | None = None) -> Moments:
    """Average over every equally likely batch sequence of an epoch (enumerated)."""
    steps = m if steps is None else steps
    _check(m, sampling, steps)
    count = sequence_count(m, sampling, steps)
    mean, second = zero_series(order), [{} for _ in range(order + 1)]
    weight = sp.Rational(1, count)

    def walk(delta: Series, used: tuple[str, ...]) -> None:
        if len(used) == steps:
            for p in range(order + 1):
                T.add_to(mean[p], delta[p], weight)
                for a in range(1, p):
                    T.add_to(second[p], B.outer([delta[a], delta[p - a]]), weight)
            return
        for j in B.labels(m):
            if sampling == RESHUFFLING and j in used:
                continue
            walk(step(delta, j, order), used + (j,))

    walk(zero_series(order), ())
    return Moments([T.simplify(v) for v in mean], second, count)


def _check(m: int, sampling: str, steps: int) -> None:
    if sampling not in (RESHUFFLING, REPLACEMENT):
        raise NmechError(f"sampling must be '{RESHUFFLING}' or '{REPLACEMENT}', got {sampling!r}")
    if not isinstance(m, int) or isinstance(m, bool) or m < 1:
        raise NmechError(f"the number of mini-batches must be an integer >= 1, got {m!r}")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise NmechError(f"the number of steps must be an integer >= 1, got {steps!r}")
    if sampling == RESHUFFLING and steps != m:
        raise NmechError("random reshuffling takes one step per mini-batch (steps = batches)")
    if sequence_count(m, sampling, steps) > MAX_SEQUENCES:
        raise NmechError(
            f"{m} mini-batches with {sampling} and {steps} steps give more than "
            f"{MAX_SEQUENCES} batch sequences to enumerate (use fewer batches)"
        )


# ---------------------------------------------------------------- the result
@dataclass(frozen=True, repr=False)
class MinibatchEquation(Derivation):
    """θ̇ = Σ_k η^k F_k for the mean epoch of ``batches`` mini-batches; ``terms`` in labelled
    trees (labels "1".."m"), ``patterns`` the same written with Σ_k and L (batch_sums)."""

    batches: int | sp.Symbol  # the symbol m for the general form (no labelled terms)
    sampling: str
    steps: int | sp.Symbol
    order: int
    terms: tuple[T.Vec, ...]
    patterns: tuple[T.Vec, ...]

    def modified_loss(self) -> ModifiedLoss:
        """L̃ with f̃ = −∇L̃ (L = (1/m) Σ_k L̂_k), order by order while it exists. Σ over
        indices commutes with ∇, so the potential is found on the patterns and its gradient
        checked on the labelled terms."""
        return modified_loss(
            self.patterns, self.order, None if not self.terms else self._has_gradient
        )

    def _has_gradient(self, k: int, phi: dict) -> bool:
        """Whether ∇Φ, written in the labelled losses, is F_k."""
        gradient = T.combine((c, s.gradient()) for s, c in phi.items())
        labelled = B.as_vec(B.concrete(B.as_items(gradient), self.batches))
        return T.is_zero(T.combine([(1, labelled), (-1, self.terms[k])]))

    def title(self) -> str:
        """One line naming the setting (batches, sampling, epoch time)."""
        how = (
            "random reshuffling"
            if self.sampling == RESHUFFLING
            else f"with replacement, {self.steps} draws"
        )
        size = f"m = {self.batches}" if self.terms else "any number m of"
        return f"mini-batch SGD, {size} batches ({how}), epoch time {self.steps}·eta"

    def latex(self) -> str:
        """The mean-epoch flow in LaTeX, sums over batches written with Σ_k."""
        return notation.flow_latex(self.patterns, self.order, render=B.render_tree)

    def text(self) -> str:
        """The same in plain text."""
        return notation.flow_text(self.patterns, self.order, render=B.render_tree)

    def to_json(self) -> dict[str, Any]:
        """Schema ``nmech.minibatch/1``: {"schema", "batches", "sampling", "steps", "order",
        "terms": [{"order", "coefficient", "differential", "differential_latex", "indices",
        "tree"}], "modified_loss": the nmech.modified_loss/1 document}. A term is
        Σ_indices eta**order * coefficient * differential (L = (1/m) Σ_k L̂_k)."""
        return {
            "schema": JSON_SCHEMA,
            "batches": self.batches if self.terms else str(M),
            "sampling": self.sampling,
            "steps": self.steps if self.terms else str(M),
            "order": self.order,
            "variable": "eta",
            "terms": _terms_json(self.patterns),
            "modified_loss": self.modified_loss().to_json(),
        }

    def field(self, batches: Mapping[str, sp.Expr], coords: list[sp.Symbol]) -> sp.Matrix:
        """Σ_k η^k F_k for concrete mini-batch losses {label: L̂_label(coords)}."""
        if not self.terms:
            raise NmechError("the general form has no field: derive for a number of batches")
        if len(batches) != self.batches:
            raise NmechError(f"give {self.batches} mini-batch losses, got {len(batches)}")
        loss = sp.Add(*batches.values()) / len(batches)
        evaluator = ConcreteEvaluator(loss, coords, batches)
        total = sp.zeros(len(coords), 1)
        for k, f in enumerate(self.terms):
            total += eta**k * evaluator.vec(f)
        return total


def _terms_json(patterns: Iterable[T.Vec]) -> list[dict[str, Any]]:
    out = []
    for k, f in enumerate(patterns):
        for t in sorted(f, key=lambda t: (T.size(t), t)):
            out.append(
                {
                    "order": k,
                    "coefficient": notation.plain(f[t], machine=True),
                    "differential": B.render_tree(t, latex=False),
                    "differential_latex": B.render_tree(t),
                    "indices": B.index_names((t,)),
                    "tree": notation.tree_json(t),
                }
            )
    return out


def minibatch_equation(
    batches: int, order: int = 1, sampling: str = RESHUFFLING, steps: int | None = None
) -> MinibatchEquation:
    """The modified flow of the mean epoch (module docstring), through η^order."""
    if not isinstance(order, int) or isinstance(order, bool) or not 0 <= order <= MAX_ORDER:
        raise NmechError(f"order must be an integer in 0..{MAX_ORDER}, got {order!r}")
    steps = batches if steps is None else steps
    moments = epoch_moments(batches, sampling, order + 1, steps)
    terms = field_of_map(moments.mean, steps, order)
    patterns = [B.as_vec(B.decompose(B.as_items(f), batches)) for f in terms]
    return MinibatchEquation(batches, sampling, steps, order, tuple(terms), tuple(patterns))


def general_minibatch_equation(order: int = 1) -> MinibatchEquation:
    """Random reshuffling for any number m of batches: each pattern's coefficient is fitted as
    a + b/m + c/m² on m = order+1..order+3 (the patterns are unique from m = order + 1 on) and
    confirmed at m = order + 4; ``terms`` is empty (no labelled form for a symbolic m)."""
    sizes = range(order + 1, order + 5)
    found = [minibatch_equation(m, order).patterns for m in sizes]
    unknowns = sp.symbols(f"a0:{len(GENERAL_POWERS)}")
    ansatz = sum(a * M**p for a, p in zip(unknowns, GENERAL_POWERS))
    general = []
    for k in range(order + 1):
        fitted: T.Vec = {}
        for t in sorted(set().union(*(f[k] for f in found))):
            values = [f[k].get(t, 0) for f in found]
            fit = sp.solve([ansatz.subs(M, m) - v for m, v in zip(sizes, values)][:-1], unknowns)
            c = sp.factor(ansatz.subs(fit))
            if c.subs(M, sizes[-1]) != values[-1]:
                raise NmechError(f"the eta^{k} coefficients do not follow a + b/m + c/m^2")
            if c != 0:
                fitted[t] = c
        general.append(fitted)
    return MinibatchEquation(M, RESHUFFLING, M, order, (), tuple(general))
