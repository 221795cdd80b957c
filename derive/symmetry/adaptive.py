"""Exact symmetry dynamics under adaptive (element-wise preconditioned) update rules.

Every rule's parameter update can be written θ⁺ = a θ − η u with a scalar a and an update
direction u: for ``torch.optim.AdamW`` a = 1 − ηλ and u = m̂/(√v̂ + ε); for Adam and RMSProp
with coupled decay a = 1 and the decay λθ sits inside u; for torch's SGD a = 1 and u = v⁺ (the
momentum buffer). :func:`adaptive_step` reads a and u off the rule: a is the coefficient of the
terms linear in θ of ``theta_next`` (scalar times θ, nothing else), and u = (aθ − θ⁺)/η.

For an observable Q = ⟨θ, Jθ⟩ + 2⟨c, θ⟩ (J ≠ 0) or ⟨c, θ⟩ (J = 0) the step gives, exactly,

    scale / rescale:  Q_{n+1} = a² Q_n − 2aη ⟨Jθ_n, u_n⟩ + η² ⟨u_n, J u_n⟩
    translation:      Q_{n+1} = a Q_n − η ⟨c, u_n⟩

(the bilinear expansion of ⟨aθ − ηu, J(aθ − ηu)⟩; with both J and c, a = 1 is required, see
:func:`adaptive_recursion`). The signals are ``theta_u`` = ⟨Jθ_n, u_n⟩, ``u_sq`` =
⟨u_n, J u_n⟩ and ``c_u`` = ⟨c, u_n⟩, measured per step (in the validation, u_n is computed
from the optimizer's state after the step).

Why the SGD closure fails. For SGD the direction is built from gradients, and the symmetry
gives ⟨Jθ, g⟩ + ⟨c, g⟩ = 0 at the point where g was evaluated: the cross term of the expansion
is then −λQ plus momentum history, and the Gram-entry elimination of
:mod:`nmech.derive.symmetry.recursion` closes with ⟨g, Jg⟩ or ⟨Δ, JΔ⟩ alone. An element-wise
preconditioner D_n = diag(1/(√v̂_n + ε)) is not a multiple of the identity on a block, so
⟨Jθ, D_n g⟩ = Σ_i (Jθ)_i g_i / (√v̂_{n,i} + ε) ≠ 0 although Σ_i (Jθ)_i g_i = 0; and D_n changes
every step, so no finite set of hidden Gram entries absorbs the history either (the rule is not
a linear step, :func:`nmech.derive.rules.linear_step.linear_step` refuses it). The one extra signal
⟨Jθ_n, u_n⟩ (⟨c, u_n⟩ for translation) closes the recursion in one dimension.

Continuous form (first order in η, the paper's convention for SGD): θ̇ = −((1 − a)/η) θ − u, so
for a = 1 − ηλ (``lam`` the decoupled decay; rate 0 when a = 1)

    Q̇ = −2λ Q − 2⟨Jθ, u⟩ + η⟨u, Ju⟩        (J ≠ 0),        Q̇ = −λ Q − ⟨c, u⟩   (J = 0),

where η⟨u, Ju⟩ is the second-order increment of one step, kept as the paper keeps η⟨g, Jg⟩.
It is the exact recursion with a² → 1 − 2ηλ and a → 1 in the cross term; no backward-error
correction of the preconditioner's own dynamics is included (those need signals beyond u).
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from nmech.derive.algebra import notation
from nmech.derive.rules.rule import NEXT, PARAMETER, Rule
from nmech.derive.symbols import eta, grad, vector
from nmech.derive.symmetry.continuous import ContinuousDynamics
from nmech.derive.symmetry.generators import Symmetry
from nmech.derive.symmetry.recursion import Recursion, _gram, _lin
from nmech.errors import NmechError

#: Per-step signals of the adaptive recursions (their LaTeX is in ``recursion.SIGNAL_LATEX``).
ADAPTIVE_SIGNALS = ("theta_u", "u_sq", "c_u")

U = "u_dir"  # the update direction's name inside the Gram algebra


@dataclass(frozen=True)
class AdaptiveStep:
    """θ⁺ = a θ − η u: ``a`` a scalar expression, ``u`` the direction (vector expression in the
    rule's states, their next values and gradients; temporaries resolved)."""

    a: sp.Expr
    u: sp.Expr

    def text(self) -> str:
        """θ[n+1] = a·θ[n] − η·u[n] and u in plain text."""
        return f"θ[n+1] = ({sp.sstr(self.a)})·θ[n] - η·u[n],  u = {sp.sstr(self.u)}"

    def latex(self) -> str:
        """θ_{n+1} = a θ_n − η u_n and u in LaTeX."""
        a = notation.coefficient(self.a)
        return (
            f"\\theta_{{n+1}} = \\left({a}\\right)\\theta_n - \\eta\\,u_n,\\quad "
            f"u_n = {notation.coefficient(self.u)}"
        )


def _vectors(rule: Rule) -> set[str]:
    return set(rule.vectors) | {s + NEXT for s in (PARAMETER, *rule.states)}


def _is_vector(expr: sp.Expr, names: set[str]) -> bool:
    return expr.has(grad) or bool({str(s) for s in expr.free_symbols} & names)


def _resolve(expr: sp.Expr, rule: Rule) -> sp.Expr:
    """Temporaries (targets that are not next states) replaced by their assignments."""
    temps = {vector(a.target): a.expr for a in rule.assignments if not a.target.endswith(NEXT)}
    for _ in range(len(temps) + 1):
        new = expr.xreplace(temps)
        if new == expr:
            return new
        expr = new
    raise NmechError(f"rule '{rule.name}': temporaries refer to each other in a cycle")


def adaptive_step(rule: Rule) -> AdaptiveStep:
    """a and u of ``rule`` (module docstring): a = Σ of the scalar coefficients c of the terms
    c·θ of θ⁺ (expanded), u = (aθ − θ⁺)/η."""
    body = {a.target: a.expr for a in rule.assignments}
    nxt = sp.expand(_resolve(body[PARAMETER + NEXT], rule))
    theta = vector(PARAMETER)
    names = _vectors(rule)
    a = sp.Integer(0)
    for term in sp.Add.make_args(nxt):
        coeff = sp.cancel(term / theta)
        if term.has(theta) and not _is_vector(coeff, names):
            a += coeff
    a = sp.factor(a)
    raw = sp.expand(a * theta - body[PARAMETER + NEXT])  # temporaries kept: a readable u
    u = _resolve(sp.Add(*[t / eta for t in sp.Add.make_args(raw)]), rule)
    return AdaptiveStep(a, u)


def adaptive_recursion(step: AdaptiveStep, sym: Symmetry) -> Recursion:
    """The exact recursion of ``sym``'s observable for θ⁺ = aθ − ηu, in the Recursion form
    h_{n+1} = A h_n + B σ_n (one hidden quantity, h = Q; the first step is the same step)."""
    a = step.a
    theta_next = {PARAMETER: a, U: -eta}

    def bilinear(x: dict, y: dict) -> sp.Expr:
        return sum(cx * cy * _gram(p, q) for p, cx in x.items() for q, cy in y.items())

    def linear(x: dict) -> sp.Expr:
        return sum(c * _lin(p) for p, c in x.items())

    def observable(x: dict) -> sp.Expr:
        if sym.has_J:
            return bilinear(x, x) + (2 * linear(x) if sym.has_c else 0)
        return linear(x)

    signals = {
        "theta_u": _gram(PARAMETER, U) if sym.has_J else None,
        "u_sq": _gram(U, U) if sym.has_J else None,
        "c_u": _lin(U) if sym.has_c else None,
    }
    used = tuple(n for n, s in signals.items() if s is not None)
    q_next = sp.expand(observable(theta_next))
    coeffs = [q_next.coeff(signals[n]) for n in used]
    rest = sp.expand(q_next - sum(c * signals[n] for c, n in zip(coeffs, used)))
    q = observable({PARAMETER: 1})
    k = sp.Symbol("k")
    solution = sp.solve(sp.Poly(sp.expand(rest - k * q), *q.free_symbols).coeffs(), k, dict=True)
    if not solution:
        raise NmechError(
            f"the {sym.name} observable with both J and c needs a = 1 (got a = {a}): "
            "<theta, J theta> and <c, theta> would have to be tracked separately"
        )
    factor = sp.factor(solution[0][k])
    A = sp.Matrix([[factor]])
    B = sp.Matrix([[sp.factor(c) for c in coeffs]])
    return Recursion((q,), used, A, B, sp.Matrix([factor]), B)


def adaptive_continuous(step: AdaptiveStep, sym: Symmetry) -> ContinuousDynamics:
    """The first-order continuous form of the module docstring: Q̇ = −rate·Q + Σ w σ."""
    decay = sp.factor(sp.simplify((1 - step.a) / eta))
    if decay.has(eta):
        raise NmechError(f"the decay (1 - a)/eta = {decay} of the rule depends on eta")
    if sym.has_J:
        forcing = {"theta_u": sp.Integer(-2), "u_sq": eta}
        rate = 2 * decay
    else:
        forcing, rate = {"c_u": sp.Integer(-1)}, decay
    if sym.has_J and sym.has_c:
        forcing["c_u"] = sp.Integer(-2)
    return ContinuousDynamics(1, rate, sp.Integer(0), sp.Integer(0), forcing)


def is_adaptive(rule: Rule) -> bool:
    """True when the rule is not a linear step (its vectors are multiplied, divided or passed
    through functions): its symmetry dynamics come from this module."""
    from nmech.derive.rules.linear_step import linear_step

    try:
        linear_step(rule)
    except NmechError:
        return True
    return False
