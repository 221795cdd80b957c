"""Update rules: one optimizer step as sequential assignments of vector expressions.

A :class:`Rule` maps the current state (θ and auxiliary vectors such as a momentum buffer ``v``
or the previous iterate ``theta_prev``) to the next one. Each assignment ``target = expr`` is a
sympy expression in which ``grad(p)`` is ∇L(p):

* ``X_next = ...`` gives the next value of state ``X`` (``theta_next`` is required);
* ``X_prev`` (for a state ``X``) is the previous value of ``X``: two-step forms are state rules
  with the implicit update ``X_prev_next = X``;
* any other target is a temporary of the step (e.g. Nesterov's look-ahead point ``y``);
* ``first X_next = ...`` overrides an assignment on the very first step only (torch's first
  momentum buffer is the first gradient, undampened);
* ``averages`` names states that are averages of the iterates (``average X_next = ...`` in the
  rule language, e.g. X⁺ = γX + (1 − γ)θ⁺): the quantity whose flow is derived
  (:mod:`nmech.derive.bea.averaged`) instead of θ's.

Products, quotients, powers and ``sqrt`` of two vectors act element-wise (Hadamard), scalars
broadcast. ``step`` (the 1-based iteration count) appears only in bias corrections b**step;
:meth:`Rule.after_transient` drops them (b**step → 0), which is the rule the derivations use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import sympy as sp

from nmech.derive.symbols import DOMAINS, step, vector
from nmech.errors import NmechError

PARAMETER = "theta"
NEXT = "_next"
PREV = "_prev"


@dataclass(frozen=True)
class Assignment:
    """``target = expr`` within one step."""

    target: str
    expr: sp.Expr


@dataclass(frozen=True, eq=False)
class Rule:
    """One optimizer step. See the module docstring for the conventions."""

    name: str
    assignments: tuple[Assignment, ...]
    first_step: tuple[Assignment, ...] = ()
    defaults: dict[str, float] = field(default_factory=dict)
    source: str = ""
    averages: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        targets = [a.target for a in self.assignments]
        if PARAMETER + NEXT not in targets:
            raise NmechError(f"rule '{self.name}' never assigns '{PARAMETER}{NEXT}'")
        for a in self.first_step:
            if a.target not in targets:
                raise NmechError(f"first-step assignment '{a.target}' overrides nothing")
        for name in self.averages:
            if name == PARAMETER or name + NEXT not in targets:
                raise NmechError(
                    f"average '{name}' is no state of the rule (declare 'average {name}_next = ...')"
                )

    @property
    def states(self) -> tuple[str, ...]:
        """Auxiliary states (everything carried from step to step except θ), in a fixed order."""
        carried = [a.target[: -len(NEXT)] for a in self.assignments if a.target.endswith(NEXT)]
        names = [s for s in carried if s != PARAMETER]
        return tuple(names + [s for s in self.implicit_previous() if s not in names])

    def implicit_previous(self) -> tuple[str, ...]:
        """States ``X_prev`` referenced by the rule (previous value of a carried state ``X``)."""
        carried = {a.target[: -len(NEXT)] for a in self.assignments if a.target.endswith(NEXT)}
        found: list[str] = []
        for a in self.assignments + self.first_step:
            for s in sorted(a.expr.free_symbols, key=str):
                name = str(s)
                if name.endswith(PREV) and name[: -len(PREV)] in carried and name not in found:
                    found.append(name)
        return tuple(found)

    @property
    def vectors(self) -> frozenset[str]:
        """Names that denote vectors: θ, the states and every assignment target."""
        names = {PARAMETER, *self.states}
        names.update(a.target for a in self.assignments)
        return frozenset(names)

    def step(self, first: bool = False) -> tuple[Assignment, ...]:
        """The assignments of one step, the implicit ``X_prev_next = X`` ones included."""
        overrides = {a.target: a for a in self.first_step} if first else {}
        body = tuple(overrides.get(a.target, a) for a in self.assignments)
        shifts = tuple(
            Assignment(p + NEXT, vector(p[: -len(PREV)])) for p in self.implicit_previous()
        )
        return body + shifts

    def unread_states(self) -> tuple[str, ...]:
        """States that θ's update never depends on, directly or through temporaries and other
        states' updates (an average of the iterates, or a buffer nothing uses)."""
        reads: dict[str, set[str]] = {}
        for a in self.step() + self.first_step:
            reads.setdefault(a.target, set()).update(str(s) for s in a.expr.free_symbols)
        for s in self.states:
            reads.setdefault(s, set()).add(s + NEXT)  # X is last step's X_next
        seen: set[str] = set()
        todo = [PARAMETER + NEXT]
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(reads.get(name, ()))
        return tuple(s for s in self.states if s not in seen)

    def initial_value(self, state: str) -> sp.Expr:
        """The value of an auxiliary state before the first step: X_prev = X(0), an average
        θ(0), others 0."""
        if state.endswith(PREV):
            return vector(state[: -len(PREV)])
        if state in self.averages:
            return vector(PARAMETER)
        return sp.Integer(0)

    def parameters(self) -> frozenset[sp.Symbol]:
        """Scalar symbols of the rule (hyper-parameters and any user-named constant)."""
        free: set[sp.Symbol] = set()
        for a in self.assignments + self.first_step:
            free |= {s for s in a.expr.free_symbols if str(s) not in self.vectors}
        return frozenset(free)

    def with_values(self, values: Mapping[sp.Symbol, sp.Expr]) -> Rule:
        """The same rule with parameter values put in (exact rationals, for derivations at
        numbers)."""

        def put(items: tuple[Assignment, ...]) -> tuple[Assignment, ...]:
            return tuple(Assignment(a.target, sp.expand(a.expr.xreplace(values))) for a in items)

        return replace(self, assignments=put(self.assignments), first_step=put(self.first_step))

    def after_transient(self) -> Rule:
        """The autonomous rule reached after the start-up transient: every bias-correction
        power b**step replaced by 0, which needs |b| < 1: b a number in (−1, 1) or a decay
        parameter (β, β₁, β₂, α, each in [0, 1)). Any other use of ``step`` is refused. The
        rule itself if it has none."""
        if step not in self.parameters():
            return self

        def vanishing(e: sp.Expr) -> sp.Expr:
            base, k = e.base, sp.cancel(e.exp / step)
            if any(str(s) in self.vectors for s in base.free_symbols) or base.has(sp.Function):
                raise NmechError(f"'{e}': 'step' may be the exponent of a scalar only")
            if not k.is_Rational:
                raise NmechError(f"'{e}': the exponent must be a constant multiple of step")
            decay = (
                DOMAINS.get(base.name, (0, 0, 0, True))[1:] == (1, 1, False)
                if base.is_Symbol
                else False
            )
            if not ((decay and k > 0) or (base.is_Number and abs(base) ** k < 1)):
                raise NmechError(
                    f"'{e}' does not vanish as step grows: derivations drop b**step only for "
                    "|b| < 1 (a number, or beta, beta1, beta2, alpha)"
                )
            return sp.S.Zero

        def drop(items: tuple[Assignment, ...]) -> tuple[Assignment, ...]:
            out = []
            for a in items:
                expr = a.expr.replace(lambda e: e.is_Pow and e.exp.has(step), vanishing)
                if expr.has(step):
                    raise NmechError(
                        f"'{a.target}': 'step' may appear only as an exponent b**step "
                        "(a bias correction); the derivations need an autonomous rule "
                        "(weights that change with the step, such as a uniform average's "
                        "1/(step + 1) or schedule-free SGD's c_t, have no autonomous modified "
                        "equation: docs/math.md section 11)"
                    )
                out.append(Assignment(a.target, expr))
            return tuple(out)

        return Rule(
            name=self.name,
            assignments=drop(self.assignments),
            first_step=drop(self.first_step),
            defaults=self.defaults,
            source=self.source,
            averages=self.averages,
        )


def rule_key(rule: Rule) -> str:
    """A string identifying the rule's mathematics (for caches)."""
    body = ";".join(f"{a.target}={sp.srepr(a.expr)}" for a in rule.assignments)
    first = ";".join(f"{a.target}={sp.srepr(a.expr)}" for a in rule.first_step)
    return f"{body}|{first}"
