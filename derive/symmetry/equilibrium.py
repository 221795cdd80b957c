"""Rotational equilibrium of scale-invariant channels, derived from the exact recursion.

For a scale-invariant channel (|θ|² the scale observable, C elements) under a momentum rule
θ⁺ = aθ − ηu with buffer b⁺ = βb + w d, d = ĝ + μθ and u = b⁺ (SGD: ĝ = g) or u = b⁺/(√v̂ + ε)
(Adam: ĝ = g/(√v̂ + ε) folded into the buffer), the exact recursion of :mod:`.adaptive`,

    |θ_{n+1}|² = a²|θ_n|² − 2aη⟨θ_n, u_n⟩ + η²|u_n|²,

is taken in expectation and made stationary (E|θ_{n+1}|² = E|θ_n|² = Q). Assumptions (the
random-walk model of Kosson, Messmer & Jaggi 2024, "Rotational equilibrium"):

1. the driving terms ĝ_n are zero-mean and uncorrelated across steps, E⟨ĝ_n, ĝ_m⟩ = G δ_nm,
   and uncorrelated with the weights they were computed at, E⟨θ_m, ĝ_m⟩ = 0 (exact for SGD:
   ⟨θ, g⟩ = 0 by scale invariance; in expectation for Adam);
2. Adam: v̂ ≈ E[g²] element-wise and ε negligible, so every element of ĝ has unit second
   moment, G = C; SGD: the gradient of a scale-invariant loss scales as 1/|θ|, so
   G = E|g̃|²/Q with g̃ the gradient at the unit-norm weights;
3. leading order in η (at fixed λ): the decay is negligible over the momentum horizon
   1/(1 − β), so θ_n − θ_{n−k} = −η Σ_{j=1}^{k} u_{n−j}, and the O(η²λ) terms drop.

Then u_n = w Σ_k β^k d_{n−k} gives E⟨θ_n, ĝ_{n−k}⟩ = −ηwG Σ_{j=1}^{k} β^{k−j},
E⟨θ_n, u_n⟩ = w Σ_k β^k (E⟨θ_n, ĝ_{n−k}⟩ + μQ) and E|u_n|² = w² G Σ_k β^{2k} (sympy sums).
The equilibrium norm is √Q at leading order in η, and the angular update η_r (the angle
between θ_n and θ_{n+1}) is √(η² E|u|²/Q) at leading order (the radial decay part of the
step is O(η²) against η_r² = O(η)). AdamW reproduces |θ| = √(ηC/(2λ)),
η_r = √(2ηλ(1−β₁)/(1+β₁)); torch SGD with momentum and coupled decay
|θ| = (η E|g̃|²/(2λ(1−β)))^{1/4}, η_r = √(2ηλ/(1+β)) (Kosson et al. 2024, Table 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from nmech.derive.algebra import notation
from nmech.derive.rules.rule import NEXT, PARAMETER, Rule
from nmech.derive.symbols import eta, grad, vector
from nmech.derive.symmetry.adaptive import adaptive_recursion, adaptive_step
from nmech.derive.symmetry.generators import scale
from nmech.errors import NmechError

#: Channel size C and E|g~|^2, the mean squared gradient at unit-norm weights.
C, G_UNIT = sp.symbols("C G_unit", positive=True)
Q = sp.Symbol("Q", positive=True)


@dataclass(frozen=True)
class MomentumModel:
    """b⁺ = βb + w(ĝ + μθ); ``normalized``: u = b⁺/(√v̂ + ε) (Adam) rather than u = b⁺."""

    beta: sp.Expr
    weight: sp.Expr
    coupled: sp.Expr
    normalized: bool


@dataclass(frozen=True)
class Equilibrium:
    """Leading-order equilibrium of a scale-invariant channel (module docstring):
    |θ| = ``norm_power``^(1/``root``) and η_r = √``angular_sq``, both rational in the
    parameters."""

    rule: str
    norm_power: sp.Expr
    root: int
    angular_sq: sp.Expr

    @property
    def norm(self) -> sp.Expr:
        """|θ| at equilibrium, ``norm_power``^(1/``root``), unevaluated."""
        return sp.Pow(self.norm_power, sp.Rational(1, self.root), evaluate=False)

    @property
    def angular_update(self) -> sp.Expr:
        """η_r = √``angular_sq``, unevaluated."""
        return sp.Pow(self.angular_sq, sp.S.Half, evaluate=False)

    def text(self) -> str:
        """|θ| and η_r in plain text."""
        return (
            f"|θ| = ({notation.plain(self.norm_power)})^(1/{self.root}),  "
            f"η_r = sqrt({notation.plain(self.angular_sq)})"
        )

    def latex(self) -> str:
        """|θ| and η_r in LaTeX, (1 − β) factors written the papers' way."""
        root = "\\sqrt" if self.root == 2 else f"\\sqrt[{self.root}]"
        return (
            f"% rotational equilibrium of a scale-invariant channel under {self.rule} "
            "(C: its number of elements, G_unit: E|g|^2 at unit norm)\n"
            f"\\|\\theta\\| = {root}{{{_latex(self.norm_power)}}},\\quad "
            f"\\eta_r = \\sqrt{{{_latex(self.angular_sq)}}}"
        )


def _latex(expr: sp.Expr) -> str:
    """LaTeX with momentum factors written the papers' way, (1 − β)."""
    betas = [s for s in expr.free_symbols if s.name.startswith("beta")]
    names = {}
    for b in betas:
        one_minus = sp.Symbol(f"one_minus_{b.name}", positive=True)
        expr = sp.factor(expr).xreplace({b - 1: -one_minus})
        names[one_minus] = f"\\left(1 - {sp.latex(b)}\\right)"
    return notation.coefficient(expr, names=names)


def _generic(expr: sp.Expr) -> sp.Expr:
    """A sympy sum's value for |β| < 1 and generic β (its Piecewise branches resolved)."""

    def branch(pw: sp.Piecewise) -> sp.Expr:
        return next(e for e, c in pw.args if not isinstance(c, sp.Eq) and not e.has(sp.Sum))

    return sp.simplify(expr.replace(lambda e: isinstance(e, sp.Piecewise), branch))


def _buffer(
    update: sp.Expr, buf: str, vectors: frozenset[str]
) -> tuple[sp.Expr, sp.Expr, sp.Expr] | None:
    """(β, w, wμ) when ``update`` = βb + w∇L(θ) + wμθ with scalar β, w, μ, else None (RMSprop's
    buffer b⁺ = βb + g/(√v⁺ + ε) has an entry-wise weight: not of this form)."""
    g, th, b = grad(vector(PARAMETER)), vector(PARAMETER), vector(buf)
    update = sp.expand(update)
    beta, w, mu = update.coeff(b), update.coeff(g), update.coeff(th)
    if w == 0 or sp.expand(update - beta * b - w * g - mu * th) != 0:
        return None
    names = vectors | {name + NEXT for name in vectors}
    if any(str(s) in names for e in (beta, w, mu) for s in sp.sympify(e).free_symbols):
        return None
    return beta, w, mu


def momentum_model(rule: Rule) -> MomentumModel:
    """Read b⁺ = βb + w(∇L(θ) + μθ) and the form of u off ``rule`` (after the transient)."""
    rule = rule.after_transient()
    u = adaptive_step(rule).u
    body = {a.target: a.expr for a in rule.assignments}
    found = {
        s: parts
        for s in rule.states
        if u.has(vector(s + NEXT))
        and (parts := _buffer(body[s + NEXT], s, rule.vectors)) is not None
    }
    if len(found) != 1:
        raise NmechError(
            f"rule '{rule.name}': the equilibrium needs u built from one momentum buffer "
            "b_next = beta*b + w*(grad(theta) + mu*theta)"
        )
    (buf, (beta, w, mu)), *_ = found.items()
    normalized = u != vector(buf + NEXT)
    if normalized and mu != 0:
        raise NmechError(
            f"rule '{rule.name}': coupled decay inside a preconditioned update has no "
            "equilibrium of this form (the decay is rescaled per element)"
        )
    return MomentumModel(beta, w, sp.cancel(mu / w), normalized)


def equilibrium(rule: Rule) -> Equilibrium:
    """The leading-order equilibrium norm and angular update (module docstring)."""
    model = momentum_model(rule)
    rec = adaptive_recursion(adaptive_step(rule.after_transient()), scale())
    A, B0, B1 = rec.A[0, 0], rec.B[0, 0], rec.B[0, 1]
    real = set().union(*(sp.sympify(e).free_symbols for e in (A, B0, B1, *vars(model).values())))
    pos = {s: sp.Symbol(s.name, positive=True) for s in real if not s.is_positive}
    A, B0, B1, beta, w, mu = (
        sp.sympify(e).xreplace(pos) for e in (A, B0, B1, model.beta, model.weight, model.coupled)
    )
    h = pos.get(eta, eta)
    k, j = sp.symbols("k j", integer=True, nonnegative=True)
    G = C if model.normalized else G_UNIT / Q
    lagged = -h * w * G * _generic(sp.summation(beta ** (k - j), (j, 1, k)))
    cross = w * _generic(sp.summation(beta**k * (lagged + mu * Q), (k, 0, sp.oo)))
    u_sq = w**2 * G * _generic(sp.summation(beta ** (2 * k), (k, 0, sp.oo)))
    stationary = sp.numer(sp.together(A * Q + B0 * cross + B1 * u_sq - Q))
    # 0 < beta < 1: write beta = 1 - d with d > 0 so that the roots' signs are decided
    d = sp.Symbol("one_minus_beta", positive=True)
    inside = {beta: 1 - d} if beta.is_Symbol else {}
    leading = [_leading(r, h) for r in sp.solve(stationary.xreplace(inside), Q)]
    roots = [r for r in leading if r.is_positive]
    if len(roots) != 1:
        raise NmechError(f"rule '{rule.name}': no unique stationary norm")
    q = roots[0]
    angular_sq = _leading(h**2 * u_sq.xreplace(inside) / Q, h).subs(Q, q)
    back = {**{v: k for k, v in pos.items()}, d: 1 - model.beta}
    root = 2 if q.is_rational_function() else 4
    power = sp.factor(sp.simplify(q ** (root // 2)))
    return Equilibrium(
        rule.name,
        sp.factor(power.xreplace(back)),
        root,
        sp.factor(sp.simplify(angular_sq).xreplace(back)),
    )


def _leading(expr: sp.Expr, h: sp.Symbol) -> sp.Expr:
    """The leading term of ``expr`` as the learning rate h → 0 (other parameters fixed)."""
    return sp.simplify(sp.powsimp(expr.as_leading_term(h), force=True))
