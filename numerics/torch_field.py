"""The torch hand-off: modified fields, modified losses and slow-manifold states of ANY
differentiable torch loss (the one module of :mod:`nmech.numerics` that imports torch).

``loss`` maps a flat float parameter vector θ (1-D tensor) to a scalar tensor;
:func:`nmech.numerics.torch_loss.module_loss` builds it from an ``nn.Module``, a batch and a
criterion. Elementary differentials are evaluated at θ by nested
forward-over-reverse products: with g = ∇L (``torch.func.grad``),

    ∇^{k+1}L(θ)[u_1, …, u_k] = D_{u_k} ⋯ D_{u_1} g(θ),   D_u h(θ) = jvp(h, θ, u)

(``torch.func.jvp``), the children u_i computed first and held fixed; every distinct subtree is
computed once per point (:class:`~nmech.numerics.differentials.PointEvaluator`), element-wise
nodes (Adam, RMSProp) are their sympy function lambdified to torch ops, and coefficients are
exact rationals rounded once (:mod:`nmech.numerics.coefficients`). No Hessian is ever formed:
memory is a few parameter vectors per nesting level.

Cost, in Hessian-vector-product equivalents (one HVP = one jvp of the gradient, about two to
three gradients): a node with k ≥ 1 children is a k-fold nested jvp, 2^{k−1} HVPs (each forward
level carries a primal and a tangent); ∇L itself is one gradient. :func:`hvp_equivalents`
counts a field's distinct trees this way, order by order; GD's order-2 field
−∇L − (η/2)∇²L∇L − η²[(1/3)(∇²L)²∇L + (1/12)∇³L[∇L,∇L]] costs 1 gradient + 4 HVPs
(``nmech bench --only torch_field`` measures it on a 1M-parameter network).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch.func import jvp

from nmech.derive.algebra import trees as T
from nmech.derive.bea.modified_equation import ModifiedEquation
from nmech.errors import NmechError
from nmech.numerics.coefficients import ExactValues
from nmech.numerics.differentials import PointEvaluator, float_terms
from nmech.numerics.torch_loss import Loss, check_loss_value, check_theta


# ---------------------------------------------------------------- tree evaluation
def _directional(h: Callable[[torch.Tensor], torch.Tensor], u: torch.Tensor) -> Callable:
    """θ ↦ D_u h(θ) (one forward-mode product)."""
    return lambda theta: jvp(h, (theta,), (u,))[1]


class TorchTrees:
    """Elementary differentials of one torch loss, at any point θ."""

    def __init__(self, loss: Loss, values: ExactValues) -> None:
        self.loss = loss
        self.values = values
        self.gradient = torch.func.grad(loss)

    def at(self, theta: torch.Tensor, leaves: Mapping[str, torch.Tensor] | None = None):
        """A :class:`PointEvaluator` at θ (``leaves``: values of other vector leaves)."""

        def differential(children: Sequence[torch.Tensor]) -> torch.Tensor:
            h = self.gradient
            for u in children:
                h = _directional(h, u)
            return h(theta)

        return PointEvaluator(
            theta, self.values, differential, "torch", loss=lambda: self.loss(theta), leaves=leaves
        )


def _checked(me: ModifiedEquation, loss: Loss, values: Mapping[str, float]) -> ExactValues:
    if not isinstance(me, ModifiedEquation):
        raise NmechError(f"expected a ModifiedEquation, got {type(me).__name__}")
    if not callable(loss):
        raise NmechError("loss must be a callable: flat parameter vector -> scalar tensor")
    exact = ExactValues(values)
    if "eta" not in exact.floats or exact.floats["eta"] <= 0:
        raise NmechError("give a positive learning rate 'eta' among the hyper-parameters")
    return exact


class TorchField:
    """θ ↦ f̃(θ) = Σ_{k ≤ order} η^k F_k(θ) for a torch loss; coefficients evaluated once."""

    def __init__(self, me: ModifiedEquation, loss: Loss, values: Mapping[str, float]) -> None:
        exact = _checked(me, loss, values)
        self.eta = exact.floats["eta"]
        self.terms = float_terms(exact, me.terms)
        self.trees = TorchTrees(loss, exact)

    def __call__(self, theta: torch.Tensor) -> torch.Tensor:
        return self.trees.at(theta).series(self.terms, self.eta)


class TorchState:
    """θ ↦ U_s(θ) = Σ_k η^k U_{s,k}(θ), auxiliary state s on the slow manifold."""

    def __init__(
        self, me: ModifiedEquation, name: str, loss: Loss, values: Mapping[str, float]
    ) -> None:
        exact = _checked(me, loss, values)
        if name not in me.states:
            raise NmechError(f"rule '{me.rule.name}' has no state '{name}'")
        self.eta = exact.floats["eta"]
        self.series = float_terms(exact, me.states[name])
        self.trees = TorchTrees(loss, exact)

    def __call__(self, theta: torch.Tensor) -> torch.Tensor:
        return self.trees.at(theta).series(self.series, self.eta)


class TorchModifiedLoss:
    """θ ↦ L̃(θ) = Σ_k η^k Σ_s c_{k,s} s(θ) with f̃ = −``scale``·∇L̃ through the equation's
    order (NmechError where the modified loss stops existing before it)."""

    def __init__(self, me: ModifiedEquation, loss: Loss, values: Mapping[str, float]) -> None:
        exact = _checked(me, loss, values)
        modified = me.modified_loss()
        if modified.exists_through < me.order:
            raise NmechError(
                f"rule '{me.rule.name}' has no modified loss at order {modified.obstruction} "
                f"(that term of the field is not a gradient); use order <= {modified.exists_through}"
            )
        self.eta = exact.floats["eta"]
        self.scale = exact.coefficient(modified.scale)
        self.terms = [{s: exact.coefficient(c) for s, c in phi.items()} for phi in modified.terms]
        self.trees = TorchTrees(loss, exact)

    def __call__(self, theta: torch.Tensor) -> torch.Tensor:
        point = self.trees.at(theta)
        total = theta.new_zeros(())
        for k, phi in enumerate(self.terms):
            for s, c in phi.items():
                total = total + (self.eta**k * c) * point.scalar(s)
        return total


def _first_check(loss: Loss, theta: torch.Tensor) -> None:
    check_theta(theta, loss)
    check_loss_value(loss(theta))


def torch_field(
    me: ModifiedEquation, loss: Loss, theta: torch.Tensor, values: Mapping[str, float]
) -> torch.Tensor:
    """f̃(θ), the modified vector field at θ (see the module docstring)."""
    _first_check(loss, theta)
    return TorchField(me, loss, values)(theta)


def torch_modified_loss(
    me: ModifiedEquation, loss: Loss, theta: torch.Tensor, values: Mapping[str, float]
) -> torch.Tensor:
    """L̃(θ), the modified loss at θ (its gradient flow, times ``TorchModifiedLoss.scale``, is
    the modified equation)."""
    _first_check(loss, theta)
    return TorchModifiedLoss(me, loss, values)(theta)


def torch_state(
    me: ModifiedEquation, name: str, loss: Loss, theta: torch.Tensor, values: Mapping[str, float]
) -> torch.Tensor:
    """U_s(θ), the slow-manifold value of the rule's auxiliary state ``name`` at θ."""
    _first_check(loss, theta)
    return TorchState(me, name, loss, values)(theta)


# ---------------------------------------------------------------- cost
def tree_cost(t: T.Tree) -> float:
    """HVP equivalents of one tree's own top node: 2^{k−1} for k ≥ 1 children, 0 otherwise
    (∇L is one gradient; element-wise nodes, scaled trees -- norms and inner products -- and
    leaves are vector arithmetic)."""
    k = len(T.children(t))
    vector_arithmetic = T.is_leaf(t) or T.is_elementwise(t) or T.is_scaled(t)
    return 0.0 if vector_arithmetic or k == 0 else 2.0 ** (k - 1)


def hvp_equivalents(terms: Sequence[Mapping[T.Tree, Any]]) -> list[float]:
    """HVP equivalents added by each order of a field: the distinct subtrees it needs beyond
    those of the lower orders (shared subtrees counted once)."""
    seen: set[T.Tree] = set()
    out = []

    def visit(t: T.Tree) -> float:
        if t in seen:
            return 0.0
        seen.add(t)
        return tree_cost(t) + sum(visit(c) for c in T.children(t))

    for f in terms:
        out.append(sum(visit(t) for t in f))
    return out
