"""Numeric values of elementary differentials at one point θ, for any array backend.

A tree (:mod:`nmech.derive.algebra.trees`) is evaluated bottom-up: a leaf is θ or a given
vector, a node ∇^{k+1}L(θ)[t_1, …, t_k] is the backend's k-fold directional derivative of the
gradient applied to the children's (already computed) values, an element-wise node
f(a_1, …, a_k) is f's array code applied to its arguments' values, a scaled tree φ·w the
product of w's value with φ's norms ‖a‖ = (Σ a_i²)^{1/2} and inner products ⟨a, b⟩ = Σ a_i b_i
(a point where a norm vanishes is refused: the field is not defined there). Every distinct subtree is
computed once per point (a cache keyed by the tree), so ∇L is shared by every term and ∇²L∇L
by ∇²L(∇²L∇L) and so on. A linear combination Σ c_t t is then a sum of arrays with float
coefficients (:class:`~nmech.numerics.coefficients.ExactValues`).

The backend supplies ``differential(children) -> array`` (numpy: a lambdified symbolic
contraction, :mod:`nmech.numerics.flows`; torch: nested forward-over-reverse products,
:mod:`nmech.numerics.torch_field`), the loss value (for scalar trees), and the name of the
lambdify module for element-wise functions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from nmech.derive.algebra import trees as T
from nmech.derive.bea.initial_condition import InitialCondition, deviation
from nmech.derive.bea.potential import Scalar
from nmech.errors import NmechError
from nmech.numerics.coefficients import ExactValues

Array = Any  # numpy.ndarray or torch.Tensor


class PointEvaluator:
    """Trees, linear combinations and scalar trees at one point θ.

    ``differential(children)`` returns ∇^{k+1}L(θ)[c_1..c_k] for child values c_i;
    ``loss()`` returns L(θ); ``leaves`` binds vector leaves other than θ (e.g. a state's
    deviation from the slow manifold)."""

    def __init__(
        self,
        theta: Array,
        values: ExactValues,
        differential: Callable[[Sequence[Array]], Array],
        module: str,
        loss: Callable[[], Array] | None = None,
        leaves: Mapping[str, Array] | None = None,
    ) -> None:
        self.theta = theta
        self.values = values
        self.differential = differential
        self.module = module
        self.loss = loss
        self.leaves = dict(leaves or {})
        self.cache: dict[T.Tree, Array] = {}

    def tree(self, t: T.Tree) -> Array:
        """The value of one tree at θ (computed once, then cached)."""
        if t in self.cache:
            return self.cache[t]
        if T.is_leaf(t):
            value = self._leaf(t[1])
        elif T.is_elementwise(t):
            args = [self.tree(a) for a in t[3]]
            self._require_fixed_signs(t, args)
            value = self.values.elementwise(t[2], len(t[3]), self.module)(*args)
        elif T.is_scaled(t):
            value = self._factor(t.factor) * self.tree(t.w)
        elif T.label(t) is not None:
            raise NmechError(
                f"tree {t} is a mini-batch differential (loss L_{T.label(t)}): "
                "give the full-batch rule's equation"
            )
        else:
            value = self.differential([self.tree(c) for c in T.children(t)])
        self.cache[t] = value
        return value

    def _require_fixed_signs(self, t: T.Tree, args: Sequence[Array]) -> None:
        """Refuse a point where an argument of a sign (or of a 1/|x|) in t has a zero entry:
        the modified equation of a sign-based rule holds on a region of fixed signs only."""
        for x in self.values.sign_arguments(t[2], len(args), self.module):
            if not bool((x(*args) != 0).all()):
                raise NmechError(
                    f"the sign argument {t[2]} has a zero entry at this point: the modified "
                    "equation holds only on a region where the signs are fixed"
                )

    def _factor(self, factor: T.Factor) -> Array:
        """Π_j s_j^{e_j}: the monomial of norms and inner products of a scaled tree at θ."""
        total = 1.0
        for atom, e in factor:
            values = [self.tree(a) for a in atom[1:]]
            if atom[0] == "norm":
                value = (values[0] * values[0]).sum() ** 0.5
                if not bool(value > 0):
                    raise NmechError(
                        f"the norm of {atom[1]} vanishes at this point: the field of a "
                        "normalised rule is not defined there"
                    )
            else:
                value = (values[0] * values[1]).sum()
            total = total * value**e
        return total

    def _leaf(self, name: str) -> Array:
        if name == "theta":
            return self.theta
        if name not in self.leaves:
            raise NmechError(f"no value given for the vector '{name}' of a tree")
        return self.leaves[name]

    def vec(self, v: Mapping[T.Tree, float]) -> Array:
        """Σ_t c_t · t(θ) for float coefficients (:meth:`ExactValues.vec`)."""
        total = None
        for t, c in sorted(v.items(), key=lambda kv: (T.size(kv[0]), kv[0])):
            term = c * self.tree(t)
            total = term if total is None else total + term
        return self.theta * 0.0 if total is None else total

    def series(self, terms: Sequence[Mapping[T.Tree, float]], eta: float) -> Array:
        """Σ_k η^k · vec(terms[k])."""
        total = self.vec(terms[0]) if terms else self.theta * 0.0
        for k in range(1, len(terms)):
            if terms[k]:
                total = total + eta**k * self.vec(terms[k])
        return total

    def scalar(self, s: Scalar) -> Array:
        """A scalar elementary differential: L itself, or ⟨a, b⟩ of the two vector trees on
        either side of one edge (the edge that balances their sizes, for the fewest
        derivatives)."""
        if len(s.labels) == 1:
            if self.loss is None:
                raise NmechError("this evaluator has no loss value")
            return self.loss()
        edges = [(a, b) for a in range(len(s.labels)) for b in s.adjacency[a] if a < b]
        a, b = min(
            ((s.vector_from(x, y), s.vector_from(y, x)) for x, y in edges),
            key=lambda ab: (max(T.size(ab[0]), T.size(ab[1])), ab),
        )
        return (self.tree(a) * self.tree(b)).sum()


def float_terms(values: ExactValues, terms: Sequence[Mapping[T.Tree, Any]]) -> list[dict]:
    """The η^k coefficients F_k with float coefficients, each rounded once from its exact value."""
    return [values.vec(f) for f in terms]


def shadow_start(
    correction: InitialCondition,
    at: Callable[[Array, Mapping[str, Array]], PointEvaluator],
    theta: Array,
    states: Mapping[str, Array],
    values: ExactValues,
) -> Array:
    """θ̃ = Φ(θ, w) = θ + Σ_k η^k Φ_k(θ, w): the point of the modified flow that a run at
    (θ, states) shadows (:mod:`nmech.derive.bea.initial_condition`), with the deviations
    w_s = (s − U_s(θ))/η^{a_s} from the slow manifold. ``at(θ, leaves)`` gives a point
    evaluator of the loss."""
    eta = values.floats["eta"]
    manifold = at(theta, {})
    leaves = {}
    for s, value in states.items():
        on_manifold = manifold.series(float_terms(values, correction.equation.states[s]), eta)
        leaves[deviation(s)] = (value - on_manifold) / eta ** correction.scales[s]
    terms = [{T.THETA: 1.0}] + float_terms(values, correction.terms)
    return at(theta, leaves).series(terms, eta)
