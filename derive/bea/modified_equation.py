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

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import sympy as sp

from nmech.derive.algebra import notation
from nmech.derive.algebra import trees as T
from nmech.derive.bea import potential
from nmech.derive.bea.slow_manifold import solve
from nmech.derive.rules.rule import Rule
from nmech.derive.symbols import eta
from nmech.errors import NmechError

JSON_SCHEMA = "nmech.modified_equation/1"


@dataclass(frozen=True)
class ModifiedLoss:
    """f̃ = −s ∇L̃ through order ``exists_through``; ``obstruction`` is the first order (power of
    η) whose correction is not a gradient, or None."""

    scale: sp.Expr
    terms: tuple[dict, ...]  # per order k: {potential.Scalar: coefficient} of L̃'s η^k part
    exists_through: int
    obstruction: int | None

    def latex(self) -> str:
        parts = []
        for k, phi in enumerate(self.terms):
            if phi:
                body = _scalar_sum(phi)
                parts.append(body if k == 0 else f"{eta_power(k)}\\left({body}\\right)")
        text = "\\tilde L = " + " + ".join(parts)
        return text.replace("+ -", "- ")


def eta_power(k: int) -> str:
    return "\\eta" if k == 1 else f"\\eta^{{{k}}}"


def flow_latex(terms: Sequence[T.Vec], order: int, render: Callable = notation.tree) -> str:
    """θ̇ = Σ_k η^k F_k + O(η^{order+1}) in LaTeX; ``render`` writes one tree."""
    parts = []
    for k, f in enumerate(terms):
        if f:
            body = notation.linear_combination(f, render=render)
            parts.append(body if k == 0 else f"{eta_power(k)}\\left({body}\\right)")
    rhs = " + ".join(parts) if parts else "0"
    return f"\\dot\\theta = {rhs} + O(\\eta^{{{order + 1}}})"


def flow_text(terms: Sequence[T.Vec], order: int, render: Callable = notation.tree) -> str:
    """The same as plain text."""
    parts = []
    for k, f in enumerate(terms):
        if f:
            prefix = "" if k == 0 else ("η·" if k == 1 else f"η^{k}·")
            parts.append(f"{prefix}({notation.linear_combination(f, latex=False, render=render)})")
    return f"dθ/dt = {' + '.join(parts) or '0'} + O(η^{order + 1})"


def _scalar_sum(phi: dict) -> str:
    items = sorted(phi.items(), key=lambda kv: (len(kv[0].labels), kv[0].key))
    out = []
    for s, c in items:
        c = sp.factor(c)
        factor = "" if c == 1 else ("-" if c == -1 else notation.coefficient(c) + "\\,")
        out.append(factor + s.latex())
    return " + ".join(out).replace("+ -", "- ")


@dataclass(frozen=True)
class ModifiedEquation:
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
        return flow_latex(self.terms, self.order)

    def text(self) -> str:
        return flow_text(self.terms, self.order)

    def to_json(self) -> dict[str, Any]:
        """Schema ``nmech.modified_equation/1``::

            {"schema", "rule", "order", "variable": "eta",
             "terms": [{"order": k, "coefficient": str, "coefficient_latex": str,
                        "differential": str, "differential_latex": str,
                        "tree": nested lists ("grad" = ∇L; [c1, ..] = ∇^{k+1}L[c1, ..]; "theta";
                                 {"elementwise": f, "arguments": [a0, ..]} = f(a0, ..) entry-wise,
                                 f written in _e0, _e1, ..)}]}

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
                        "tree": tree_json(shown),
                    }
                )
        return {
            "schema": JSON_SCHEMA,
            "rule": self.rule.name,
            "order": self.order,
            "variable": "eta",
            "terms": terms,
        }

    def to_json_text(self) -> str:
        return json.dumps(self.to_json(), indent=2, ensure_ascii=False)

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
        """L̃ with f̃ = −s∇L̃, order by order while a potential exists (exact curl test)."""
        scale = -self.terms[0].get(T.GRAD, 0)
        if scale == 0:
            raise NmechError(
                "no modified loss: the leading term has no -grad L component"
                + (
                    " (it is preconditioned entry-wise)"
                    if any(map(T.is_elementwise, self.terms[0]))
                    else ""
                )
            )
        phis: list[dict] = []
        obstruction = None
        for k, f in enumerate(self.terms):
            phi = potential.potential(f)
            if phi is None:
                obstruction = k
                break
            phis.append({s: sp.factor(sp.cancel(-c / scale)) for s, c in phi.items()})
        return ModifiedLoss(
            scale=sp.factor(scale),
            terms=tuple(phis),
            exists_through=len(phis) - 1,
            obstruction=obstruction,
        )


def tree_json(t: T.Tree) -> Any:
    """ "theta" (a leaf's name), "grad" (∇L), [c1, ..] (∇^{k+1}L[c1, ..]); a labelled node
    ∇^{k+1}L̂_j[..] is {"loss": j, "tree": the same for its derivative}."""
    if T.is_leaf(t):
        return t[1]
    if T.is_elementwise(t):
        return {"elementwise": sp.sstr(t[2]), "arguments": [tree_json(a) for a in t[3]]}
    kids = T.children(t)
    body = "grad" if not kids else [tree_json(c) for c in kids]
    return body if T.label(t) is None else {"loss": T.label(t), "tree": body}


class ConcreteEvaluator:
    """Evaluates trees on a concrete loss: ∇^{k+1}L[c_1..c_k] by symbolic differentiation;
    labelled nodes ∇^{k+1}L̂_j[..] on ``batches[j]``."""

    def __init__(
        self, loss: sp.Expr, coords: list[sp.Symbol], batches: Mapping[str, sp.Expr] | None = None
    ) -> None:
        if not coords:
            raise NmechError("coords must name at least one coordinate")
        self.loss, self.coords = sp.sympify(loss), list(coords)
        self.batches = {j: sp.sympify(b) for j, b in (batches or {}).items()}
        self.cache: dict[T.Tree, sp.Matrix] = {}

    @cache  # noqa: B019 -- one evaluator per (loss, coords)
    def _contraction(
        self, k: int, label: str | None = None
    ) -> tuple[sp.Matrix, tuple[tuple[sp.Symbol, ...], ...]]:
        n = len(self.coords)
        dummies = tuple(sp.symbols(f"w{i}_0:{n}") for i in range(k))
        if label is not None and label not in self.batches:
            raise NmechError(f"no mini-batch loss given for label '{label}'")
        expr = self.loss if label is None else self.batches[label]
        for w in dummies:
            expr = sum(sp.diff(expr, x) * wj for x, wj in zip(self.coords, w))
        return sp.Matrix([sp.diff(expr, x) for x in self.coords]), dummies

    def tree(self, t: T.Tree) -> sp.Matrix:
        if t in self.cache:
            return self.cache[t]
        if T.is_leaf(t):
            if t != T.THETA:
                raise NmechError(f"cannot evaluate vector '{t[1]}' on a concrete loss")
            value = sp.Matrix(self.coords)
        elif T.is_elementwise(t):
            args = [self.tree(a) for a in t[3]]
            value = sp.Matrix(
                [
                    t[2].xreplace({T.placeholder(j): a[i] for j, a in enumerate(args)})
                    for i in range(len(self.coords))
                ]
            )
        else:
            base, dummies = self._contraction(len(T.children(t)), T.label(t))
            subs = {}
            for w, child in zip(dummies, T.children(t)):
                subs.update(dict(zip(w, self.tree(child))))
            value = base.xreplace(subs)
        self.cache[t] = value
        return value

    def vec(self, v: T.Vec) -> sp.Matrix:
        total = sp.zeros(len(self.coords), 1)
        for t, c in v.items():
            total += c * self.tree(t)
        return total


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
