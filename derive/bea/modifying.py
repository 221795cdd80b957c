"""Modifying rules: the inverse problem of backward error analysis.

Backward error analysis maps a rule to its modified equation θ̇ = Σ_k η^k F_k. The inverse
problem (the *modifying integrator* of Chartier, Hairer & Vilmart 2007; ``modifying_integrator``
of BSeries.jl for Runge–Kutta methods) asks for the rule whose modified equation is a chosen
target θ̇ = Σ_k η^k T_k through η^p. Here the rule is kept and the gradient it evaluates is
corrected: ∇L(p) is replaced by

    G(p) = ∇L(p) + η h_1(p) + η² h_2(p) + … + η^p h_p(p),

each h_k a sum of elementary differentials (trees) at the point p where the rule evaluates its
gradient. For GD this is the corrected step θ⁺ = θ − ηG(θ); for a momentum rule the same
optimizer is fed the corrected gradient (the buffer and the step are left as they are).

**Order by order.** The rule's leading flow must be F_0 = −s∇L (s = 1 for GD, 1/(1 − β) with
momentum), and the target's T_0 must equal it: no correction of order η changes the leading
term. With G known through η^{k−1}, adding η^k Y to G changes the modified field at η^k by
exactly −sY (the order-0 balance is linear in the gradient) and nothing below; so with F_k the
η^k term of the rule fed the gradient known so far,

    Y = (F_k − T_k)/s,        h_k = J_k + Y,

where J_k is the η^k part that the realisation of h_1..h_{k−1} already carries (below). Each
order is one call of the forward machinery (:func:`~nmech.derive.bea.modified_equation.modified_equation`)
and one linear step.

GD, gradient-flow target θ̇ = −∇L: h_1 = −(1/2)∇²L∇L, h_2 = (1/6)((∇²L)²∇L + ∇³L[∇L, ∇L]),
i.e. θ⁺ = θ − η∇L + (η²/2)∇²L∇L − (η³/6)((∇²L)²∇L + ∇³L[∇L, ∇L]): the Taylor coefficients of
the exact time-η flow of −∇L, as explicit Euler's modifying integrator f + (h/2)f′f +
(h²/6)(f″(f, f) + f′f′f) is for f = −∇L.

**Realisation in the rule language** (which has gradients at points, no Hessians): each tree t
with |t| derivatives of L is written with gradients at shifted points, by nested differences
(a Runge–Kutta-like realisation)

    k_∇L = ∇L(p),
    k_t = Σ_{S ⊆ {1..m}} (−1)^{m−|S|} ∇L(p + η Σ_{i∈S} k_{t_i})   for t = ∇^{m+1}L[t_1, …, t_m],

so that k_t = η^{|t|−1} t + O(η^{|t|}) (the mixed m-th difference of ∇L along the η k_{t_i});
η^k c·t is written c·η^{k+1−|t|}·k_t, which needs |t| ≤ k + 1 (a target tree with more
derivatives than that is refused: it would need a division by η). The O(η^{|t|}) remainders are
the J_k above, corrected at the next order, so the realised G equals the series G through η^p.
The rule text is then parsed back, and its modified equation is checked to equal the target
through η^p exactly (anything else is refused, never returned); its η^{p+1} term is reported.

Targets (:class:`TargetFlow`): the gradient flow of L + cη‖∇L‖² at the rule's own rate,
θ̇ = −s∇L − 2csη∇²L∇L (c = 0: plain gradient flow; c = 1/4 is GD's own first-order modified
loss, so GD then needs no first-order correction), or any series of trees.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import sympy as sp

from nmech.derive.algebra import notation
from nmech.derive.algebra import trees as T
from nmech.derive.bea.expansion import Expander
from nmech.derive.bea.modified_equation import modified_equation
from nmech.derive.result import Derivation
from nmech.derive.rules.language import IDENT, RESERVED, parse_rule
from nmech.derive.rules.rule import PARAMETER, Assignment, Rule
from nmech.derive.symbols import eta, grad, scalar, vector
from nmech.errors import NmechError

JSON_SCHEMA = "nmech.modifying_rule/1"
MAX_ORDER = 4
HESSIAN_GRAD: T.Tree = T.node((T.GRAD,))
_NUMBER = re.compile(r"[+-]?(\d{1,15}(\.\d{0,15})?|\.\d{1,15})(/\d{1,15})?\Z")


# ---------------------------------------------------------------- targets
@dataclass(frozen=True)
class TargetFlow:
    """The flow a corrected rule should follow.

    Named (``terms`` None): θ̇ = −s∇(L + cη‖∇L‖²) = −s∇L − 2csη∇²L∇L, the gradient flow of L
    (c = 0) or of the regularised loss, at the rule's own leading rate s. Explicit: θ̇ =
    Σ_k η^k ``terms[k]`` (zero past the last term given)."""

    name: str
    regulariser: sp.Expr = sp.Integer(0)
    terms: tuple[T.Vec, ...] | None = None

    def series(self, rate: sp.Expr, order: int) -> list[T.Vec]:
        """T_0..T_order for a rule of leading rate s = ``rate``."""
        if self.terms is not None:
            return [dict(self.terms[k]) if k < len(self.terms) else {} for k in range(order + 1)]
        out: list[T.Vec] = [{T.GRAD: -rate}] + [{} for _ in range(order)]
        if order >= 1 and self.regulariser != 0:
            out[1] = {HESSIAN_GRAD: sp.factor(-2 * self.regulariser * rate)}
        return out

    def text(self) -> str:
        """The target in words and symbols."""
        if self.terms is not None:
            return f"{self.name}: " + notation.flow_text(self.terms, len(self.terms) - 1)
        if self.regulariser == 0:
            return "gradient flow dθ/dt = -s∇L"
        c = notation.plain(self.regulariser)
        return f"gradient flow of L + ({c})·η·‖∇L‖²: dθ/dt = -s∇L - 2·({c})·s·η·∇²L∇L"


def gradient_flow_target(c: sp.Expr | int | str = 0) -> TargetFlow:
    """θ̇ = −s∇(L + cη‖∇L‖²): plain gradient flow for c = 0, else the gradient flow of the
    regularised loss (c a number, a decimal or fraction string, or a sympy scalar)."""
    value = _exact(c)
    return TargetFlow("gradient-flow" if value == 0 else f"regularised:{value}", value)


def series_target(terms: Sequence[T.Vec], name: str = "target") -> TargetFlow:
    """θ̇ = Σ_k η^k ``terms[k]``: any target given as a series of trees."""
    if not terms:
        raise NmechError("a target series needs at least its leading term")
    return TargetFlow(name, terms=tuple(T.simplify(dict(v)) for v in terms))


def parse_target(text: str) -> TargetFlow:
    """``gradient-flow`` or ``regularised:C`` (C a decimal or a fraction: L + Cη‖∇L‖²)."""
    if text == "gradient-flow":
        return gradient_flow_target(0)
    head, _, value = text.partition(":")
    if head != "regularised" or not value:
        raise NmechError(
            f"unknown target {text[:40]!r}: give gradient-flow or regularised:C (L + C*eta*|∇L|²)"
        )
    return gradient_flow_target(value)


def _exact(c: sp.Expr | int | str) -> sp.Expr:
    """c as an exact sympy scalar: decimals and fractions are read as written (never
    ``sympify``-ed); a sympy expression must be free of η and of vectors."""
    if isinstance(c, bool):
        raise NmechError(f"regulariser weight must be a number, got {c!r}")
    if isinstance(c, str):
        text = c.strip()
        if not _NUMBER.match(text) or re.search(r"/0+\Z", text):
            raise NmechError(f"regulariser weight {c[:40]!r} is not a decimal or a fraction")
        return sp.Rational(text)
    if isinstance(c, int):
        return sp.Integer(c)
    if isinstance(c, float):
        if not math.isfinite(c):
            raise NmechError(f"regulariser weight must be finite, got {c!r}")
        return sp.Rational(repr(c))
    if isinstance(c, sp.Expr) and not c.has(eta, grad) and c.is_extended_real is not False:
        return c
    raise NmechError(f"regulariser weight must be a real scalar free of eta, got {c!r}")


# ---------------------------------------------------------------- the realisation
class _Stages:
    """The temporaries k_t = η^{|t|−1} t + O(η^{|t|}) of the module docstring, at the point
    ``point``, named ``prefix1``, ``prefix2``, … in the order they are needed."""

    def __init__(self, point: sp.Symbol, prefix: str) -> None:
        self.point, self.prefix = point, prefix
        self.assignments: list[Assignment] = []
        self.symbols: dict[T.Tree, sp.Symbol] = {}

    def stage(self, t: T.Tree) -> sp.Symbol:
        """The temporary of tree t (created with those of its children)."""
        if t in self.symbols:
            return self.symbols[t]
        if t[0] != "n":
            raise NmechError(
                f"the tree {notation.tree(t, latex=False)} cannot be realised with gradients "
                "at shifted points (only derivatives of L are)"
            )
        kids = [self.stage(c) for c in T.children(t)]
        if kids:
            base = self.stage(T.GRAD)
            expr = sp.Integer(0)
            m = len(kids)
            for size in range(m + 1):
                for chosen in combinations(kids, size):
                    at = grad(self.point + eta * sp.Add(*chosen)) if chosen else base
                    expr += (-1) ** (m - size) * at
        else:
            expr = grad(self.point)
        name = vector(f"{self.prefix}{len(self.assignments) + 1}")
        self.assignments.append(Assignment(str(name), expr))
        self.symbols[t] = name
        return name

    def realise(self, delta: T.Vec, k: int) -> sp.Expr:
        """η^k Σ c_t t written as Σ c_t η^{k+1−|t|} k_t."""
        out = sp.Integer(0)
        for t, c in sorted(delta.items(), key=lambda tc: (T.size(tc[0]), tc[0])):
            power = k + 1 - T.size(t)
            if power < 0:
                raise NmechError(
                    f"the target needs {notation.tree(t, latex=False)} at order eta^{k}: a tree "
                    f"with {T.size(t)} derivatives of L at eta^{k} cannot be written with "
                    "gradients at points shifted by O(eta) without dividing by eta"
                )
            out += c * eta**power * self.stage(t)
        return out

    def expand(self, expr: sp.Expr, order: int) -> list[T.Vec]:
        """The η-series of a vector expression in the temporaries, at the point."""
        vectors = frozenset({str(self.point), *(a.target for a in self.assignments)})
        expander = Expander({str(self.point): [{T.THETA: 1}]}, vectors)
        for a in self.assignments:
            expander.env[a.target] = expander.expand(a.expr, order)
        return expander.expand(expr, order)


def _fresh(name: str, taken: set[str]) -> str:
    """``name``, or ``name`` with the first number that makes it unused."""
    if name not in taken:
        return name
    return next(f"{name}{i}" for i in range(2, 10_000) if f"{name}{i}" not in taken)


def _fresh_prefix(name: str, taken: set[str]) -> str:
    """A prefix P (``name``, ``name_``, ``name__``, …) such that no name taken is P followed by
    digits: the temporaries P1, P2, … are then all new."""
    while any(re.fullmatch(re.escape(name) + r"\d*", t) for t in taken):
        name += "_"
    return name


@dataclass(frozen=True)
class _Gradient:
    """Where the rule evaluates its one gradient, and how the corrected rule is written."""

    rule: Rule
    call: sp.Expr  # grad(p)
    point: sp.Symbol  # p, or a temporary holding it
    before: int  # index of the first assignment that uses the gradient
    names: set[str]

    @classmethod
    def of(cls, rule: Rule) -> _Gradient:
        calls = set()
        for a in rule.assignments + rule.first_step:
            calls |= a.expr.atoms(grad)
        if len(calls) != 1:
            raise NmechError(
                f"rule '{rule.name}' evaluates {len(calls)} gradients: the corrected gradient "
                "replaces exactly one"
            )
        call = calls.pop()
        overrides = {a.target: a for a in rule.first_step}
        before = next(
            i
            for i, a in enumerate(rule.assignments)
            if a.expr.has(call) or (a.target in overrides and overrides[a.target].expr.has(call))
        )
        names = {str(s) for a in rule.assignments + rule.first_step for s in a.expr.free_symbols}
        names |= {a.target for a in rule.assignments} | set(rule.states) | {PARAMETER}
        point = call.args[0]
        if not point.is_Symbol:
            point = vector(_fresh("point", names))
        names.add(str(point))
        return cls(rule, call, point, before, names)

    def corrected(self, stages: _Stages, gradient: sp.Expr, name: str) -> str:
        """The text of the rule with ∇L(p) replaced by the temporary ``name`` = ``gradient``."""
        value = vector(name)

        def put(items: tuple[Assignment, ...]) -> list[Assignment]:
            return [Assignment(a.target, a.expr.xreplace({self.call: value})) for a in items]

        body = put(self.rule.assignments)
        point = self.call.args[0]
        inserted = [] if point == self.point else [Assignment(str(self.point), point)]
        inserted += [*stages.assignments, Assignment(name, gradient)]
        body[self.before : self.before] = inserted
        lines = [
            f"{a.target} = {_combination(stages, a.expr) if a.target == name else sp.sstr(a.expr)}"
            for a in body
        ]
        lines += [f"first {a.target} = {sp.sstr(a.expr)}" for a in put(self.rule.first_step)]
        return _described(lines, stages, name)


def _combination(stages: _Stages, gradient: sp.Expr) -> str:
    """Σ c_t k_t as rule text, each coefficient factored with (1 - beta) factors, as the
    results print them."""
    expanded = sp.expand(gradient)
    text = ""
    for symbol in stages.symbols.values():
        c = sp.factor(expanded.coeff(symbol))
        if c == 0:
            continue
        negative = c.could_extract_minus_sign()
        shown = notation.plain(-c if negative else c, machine=True)
        if " " in shown:
            shown = f"({shown})"
        term = str(symbol) if shown == "1" else f"{shown}*{symbol}"
        text += (" - " if negative else " + ") + term if text else ("-" if negative else "") + term
    return text


def _described(lines: list[str], stages: _Stages, name: str) -> str:
    """The rule's lines with a comment on each temporary k_t: the tree it stands for."""
    meaning = {str(s): t for t, s in stages.symbols.items()}
    out = []
    for line in lines:
        target = line.split(" = ", 1)[0]
        if target in meaning:
            t = meaning[target]
            power = T.size(t) - 1
            scale = "" if power == 0 else ("eta*" if power == 1 else f"eta^{power}*")
            rest = "" if t == T.GRAD else f" + O(eta^{power + 1})"
            line += f"  # {scale}{notation.tree(t, latex=False)}{rest}"
        elif target == name:
            line += "  # the corrected gradient"
        out.append(line)
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- the result
@dataclass(frozen=True, repr=False)
class ModifyingRule(Derivation):
    """The corrected rule: ``rule`` fed G = Σ_k η^k ``gradient[k]`` instead of ∇L (``gradient[0]``
    is ∇L), so that its modified equation is ``target`` through η^order; ``corrected`` is the
    rule parsed back from :meth:`to_rule_text`, and ``modified`` its modified equation through
    η^{order+1} (equal to the target through η^order: checked exactly)."""

    rule: Rule
    target: TargetFlow
    order: int
    rate: sp.Expr
    gradient: tuple[T.Vec, ...]
    target_terms: tuple[T.Vec, ...]
    modified: tuple[T.Vec, ...]
    corrected: Rule
    rule_text: str

    def correction(self, k: int) -> T.Vec:
        """h_k: the coefficient of η^k in the corrected gradient G."""
        return self.gradient[k]

    def next_term(self) -> T.Vec:
        """F_{p+1} − T_{p+1}: how the corrected rule's modified equation leaves the target
        first, at η^{order+1} (depends on the realisation)."""
        return T.simplify(
            T.combine([(1, self.modified[-1]), (-1, self.target_terms[self.order + 1])])
        )

    def to_rule_text(self) -> str:
        """The corrected rule in the rule language (``rules.parse`` and ``nmech derive
        --rule-file`` read it back)."""
        header = (
            f"# {self.rule.name} fed the corrected gradient G through eta^{self.order}: "
            f"its modified equation is the target ({self.target.name}) + O(eta^{self.order + 1})\n"
        )
        return header + self.rule_text

    def title(self) -> str:
        """One line naming the rule, the target and the order."""
        return f"modifying rule of {self.rule.name} for {self.target.name}, order {self.order}"

    def latex(self) -> str:
        """G = ∇L + Σ η^k h_k, then the corrected rule's modified equation through η^{p+1}."""
        return "\n".join(
            [
                f"% {self.title()}: the rule evaluates G instead of the gradient",
                notation.flow_latex(self.gradient, self.order, lhs="G"),
                "% the corrected rule's modified equation: the target, then its first defect",
                notation.flow_latex(self.modified, self.order + 1),
            ]
        )

    def text(self) -> str:
        """The same in plain text."""
        return "\n".join(
            [
                f"{self.title()}: the rule evaluates G instead of ∇L",
                f"  target: {self.target.text()}",
                "  " + notation.flow_text(self.gradient, self.order, lhs="G"),
                "  its modified equation: " + notation.flow_text(self.modified, self.order + 1),
            ]
        )

    def to_json(self) -> dict[str, Any]:
        """Schema ``nmech.modifying_rule/1``::

        {"schema", "rule", "target": {"name", "regulariser" (c, or null for a series)},
         "order", "variable": "eta", "rate" (s: the rule's leading flow is −s∇L),
         "gradient": terms of G = Σ_k η^k h_k (rows as in nmech.modified_equation/1),
         "target_terms": terms of the target through η^{order+1},
         "modified_equation": terms of the corrected rule's modified equation through
                              η^{order+1},
         "rule_text": the corrected rule in the rule language}
        """
        return {
            "schema": JSON_SCHEMA,
            "rule": self.rule.name,
            "target": {
                "name": self.target.name,
                "regulariser": None
                if self.target.terms is not None
                else notation.plain(self.target.regulariser, machine=True),
            },
            "order": self.order,
            "variable": "eta",
            "rate": notation.plain(self.rate, machine=True),
            "gradient": notation.terms_json(self.gradient),
            "target_terms": notation.terms_json(self.target_terms),
            "modified_equation": notation.terms_json(self.modified),
            "rule_text": self.to_rule_text(),
        }


# ---------------------------------------------------------------- the solver
def _leading_rate(rule: Rule) -> sp.Expr:
    """s with F_0 = −s∇L, or a refusal."""
    f0 = modified_equation(rule, 0).terms[0]
    if set(f0) != {T.GRAD}:
        shown = notation.linear_combination(f0, latex=False)
        raise NmechError(
            f"rule '{rule.name}' has the leading flow dθ/dt = {shown}: the inverse problem "
            "needs a leading flow -s∇L (no weight decay, no entry-wise preconditioner)"
        )
    return sp.factor(-f0[T.GRAD])


def _rule_scalars(goal: list[T.Vec], rule: Rule) -> list[T.Vec]:
    """The target with each coefficient's symbols made the rule language's scalars of the same
    name (``beta`` is the shared real β however the caller made it); refused: η (its powers are
    the orders), a vector of the rule, ``step``, a name rule text cannot write."""
    out = []
    for k, v in enumerate(goal):
        for c in v.values():
            for s in sp.sympify(c).free_symbols:
                name = str(s)
                if name in ("eta", "step") or name in rule.vectors:
                    raise NmechError(
                        f"the target's coefficient {c} at order eta^{k} names '{name}': "
                        "coefficients are scalars free of eta (the order gives the power of eta)"
                    )
                if name.startswith("_") or not IDENT.match(name) or name in RESERVED:
                    raise NmechError(
                        f"the target's coefficient {c} names '{name}', which rule text cannot"
                    )
        out.append(
            {
                t: sp.sympify(c).xreplace({s: scalar(str(s)) for s in sp.sympify(c).free_symbols})
                for t, c in v.items()
            }
        )
    return out


def _difference(a: T.Vec, b: T.Vec) -> T.Vec:
    return T.simplify(T.combine([(1, a), (-1, b)]))


def modifying_rule(
    rule: Rule,
    target: TargetFlow | None = None,
    order: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> ModifyingRule:
    """The rule fed a corrected gradient G = ∇L + Σ_{k=1}^{order} η^k h_k whose modified
    equation is ``target`` (default: the gradient flow θ̇ = −s∇L at the rule's rate s) up to
    O(η^{order+1}) -- the modifying integrator of the module docstring, order by order, realised
    in the rule language with gradients at shifted points and checked by the forward map.
    ``progress(done, total)`` is told of each order solved. Raises
    :class:`~nmech.errors.NmechError` for a rule whose leading flow is not −s∇L or that evaluates
    several gradients, a target whose leading term differs from the rule's, or a target tree
    that gradients at O(η)-shifted points cannot realise."""
    if not isinstance(order, int) or isinstance(order, bool) or not 1 <= order <= MAX_ORDER:
        raise NmechError(f"order {order!r} is outside the supported range 1..{MAX_ORDER}")
    target = gradient_flow_target(0) if target is None else target
    rule = rule.after_transient()
    rate = _leading_rate(rule)
    goal = target.series(rate, order + 1)
    goal = _rule_scalars(goal, rule)
    leading = _difference(goal[0], {T.GRAD: -rate})
    if leading:
        raise NmechError(
            f"the target's leading term differs from the rule's (-({notation.plain(rate)})·∇L) "
            f"by {notation.linear_combination(leading, latex=False)}: no correction of order "
            "eta can change it"
        )
    where = _Gradient.of(rule)
    stages = _Stages(where.point, _fresh_prefix("k", where.names))
    gradient_name = _fresh("corrected", where.names)
    expr = stages.stage(T.GRAD)
    series: list[T.Vec] = [{T.GRAD: 1}]
    for k in range(1, order + 1):
        text = where.corrected(stages, expr, gradient_name)
        candidate = parse_rule(text, name=rule.name)
        field = modified_equation(candidate, k).terms[k]
        carried = stages.expand(expr, k)[k]
        delta = T.simplify(T.scaled(_difference(field, goal[k]), 1 / rate))
        series.append(T.simplify(T.combine([(1, carried), (1, delta)])))
        expr = expr + stages.realise(delta, k)
        if progress is not None:
            progress(k, order + 1)
    text = where.corrected(stages, expr, gradient_name)
    corrected = parse_rule(text, name=f"{rule.name}-modifying-{order}")
    modified = modified_equation(corrected, order + 1).terms
    for k in range(order + 1):
        if _difference(modified[k], goal[k]):
            raise NmechError(
                f"the corrected rule misses the target at order eta^{k}: rule '{rule.name}' does "
                "not respond to its gradient as -s times the correction (unsupported rule)"
            )
    if progress is not None:
        progress(order + 1, order + 1)
    return ModifyingRule(
        rule=rule,
        target=target,
        order=order,
        rate=rate,
        gradient=tuple(series),
        target_terms=tuple(goal),
        modified=tuple(T.simplify(dict(f)) for f in modified),
        corrected=corrected,
        rule_text=text,
    )
