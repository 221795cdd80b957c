"""The continuous (paper-form) dynamics of a symmetry's observable, and its kernels.

* One-step rules: the observable under the modified flow θ̇ = f̃ (first order in η), reduced with
  the symmetry (⟨Jθ, ∇L⟩ = 0, ⟨Jθ, ∇²L v⟩ = −⟨J∇L, v⟩, ⟨c, ∇²L v⟩ = 0):
  Q̇ = −a Q + Σ w_i σ_i. GD with weight decay: Q̇ = −(2λ + ηλ²) Q + η⟨g, Jg⟩ for |θ_A|²-type Q
  (the ηλ² is weight decay inside the modified loss; the paper drops it: ``paper=True``), and
  Q̇ = −λ(1 + ηλ/2) Q for translation.
* Momentum rules: from the second-order flow m θ̈ + γθ̇ + λθ + ηρ∇²Lθ̇ = −κ∇L,
  Q̈ + 2Γ Q̇ + ω² Q = F with Γ = γ/(2m), ω² = 2λ/m (quadratic Q, F = 2|θ̇|_J² + (2ηρ/m)⟨Jg, θ̇⟩)
  or ω² = λ/m (linear Q, F = 0). Heavy ball: Γ = (1−β)/(η(1+β)), ω² = 4λ/(η(1+β)).

Solution: Q(t) = K(t) Q(0) + ∫_0^t G(t − s) F(s) ds with Q̇(0) = 0 (started at rest), K and G in
closed form for the over-, critically and under-damped regimes (:func:`kernels`). Continuous
signals are read from the per-step ones: |θ̇|_J² ≈ step_sq/η², ⟨Jg, θ̇⟩ ≈ step_grad/η.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache

import sympy as sp

from nmech.derive.algebra import notation
from nmech.derive.algebra import trees as T
from nmech.derive.bea.modified_equation import modified_equation
from nmech.derive.bea.second_order import modified_flow
from nmech.derive.rules.rule import Rule
from nmech.derive.symbols import eta, exact_values, lam
from nmech.derive.symmetry.generators import Symmetry
from nmech.errors import NmechError

t, Gamma, omega, delta, Omega = sp.symbols("t Gamma omega delta Omega", positive=True)


@dataclass(frozen=True)
class NumericContinuous:
    """The continuous form at numbers, plain floats: ``ode_order`` 1, Q̇ = −rate·Q + F;
    2, Q̈ + 2Γ Q̇ + ω² Q = F (``gamma`` = Γ, ``omega2`` = ω²); F = Σ forcing[name]·σ_name(t);
    ``eta`` the step, t = nη."""

    ode_order: int
    rate: float
    gamma: float
    omega2: float
    forcing: dict[str, float]
    eta: float


@dataclass(frozen=True)
class ContinuousDynamics:
    """``ode_order`` 1: Q̇ = −rate·Q + F; 2: Q̈ + 2Γ Q̇ + ω² Q = F; F = Σ forcing[name]·σ_name."""

    ode_order: int
    rate: sp.Expr
    gamma: sp.Expr
    omega2: sp.Expr
    forcing: dict[str, sp.Expr]

    @property
    def signals(self) -> tuple[str, ...]:
        """The driving signals' names, in the order of :attr:`forcing`."""
        return tuple(self.forcing)

    def at(self, values: Mapping[str, float]) -> NumericContinuous:
        """Every coefficient evaluated exactly at ``values`` (keyed by the shared names; floats
        taken as exact decimals) and rounded once to float64."""
        exprs = [self.rate, self.gamma, self.omega2, *self.forcing.values()]
        needed = set().union(*(sp.sympify(e).free_symbols for e in exprs)) | {eta}
        exact = exact_values(values, needed - {t, Gamma, omega, delta, Omega})

        def num(e: sp.Expr) -> float:
            return float(sp.sympify(e).xreplace(exact))

        forcing = {name: num(w) for name, w in self.forcing.items()}
        rate, gamma, omega2 = num(self.rate), num(self.gamma), num(self.omega2)
        return NumericContinuous(self.ode_order, rate, gamma, omega2, forcing, float(exact[eta]))

    def text(self) -> str:
        """The ODE and its solution in plain text, a line each."""

        def f(c: sp.Expr) -> str:
            text = sp.sstr(c)
            return f"({text})" if c.is_Add or c.could_extract_minus_sign() else text

        force = " + ".join(f"{f(w)}·{n}(t)" for n, w in self.forcing.items()) or "0"
        if self.ode_order == 1:
            ode = f"dQ/dt = -{f(self.rate)}·Q + {force}"
            sol = f"Q(t) = exp(-{f(self.rate)}·t)·Q(0) + ∫_0^t exp(-{f(self.rate)}·(t-s))·F(s) ds"
        else:
            ode = f"Q'' + 2·{f(self.gamma)}·Q' + {f(self.omega2)}·Q = {force}"
            sol = "Q(t) = K(t)·Q(0) + ∫_0^t G(t-s)·F(s) ds"
        return f"{ode}\n{sol}"

    def latex(self) -> str:
        """The ODE and its solution as an integral, a line each."""
        f = notation.factor_latex
        names = {n: "\\mathrm{{{}}}".format(n.replace("_", "\\_")) for n in self.forcing}
        force = " + ".join(f"{f(w)}\\,{names[n]}(t)" for n, w in self.forcing.items()) or "0"
        if self.ode_order == 1:
            ode = f"\\dot Q = -{f(self.rate)}\\,Q + {force}"
            sol = f"Q(t) = e^{{-{f(self.rate)} t}} Q(0) + \\int_0^t e^{{-{f(self.rate)}(t-s)}} F(s)\\,ds"
        else:
            ode = f"\\ddot Q + 2{f(self.gamma)}\\,\\dot Q + {f(self.omega2)}\\,Q = {force}"
            sol = "Q(t) = K(t)\\,Q(0) + \\int_0^t G(t-s)\\,F(s)\\,ds"
        return f"{ode}\n{sol}"


def _reduce_pairing(sym: Symmetry, field: T.Vec) -> tuple[sp.Expr, dict[str, sp.Expr]]:
    """⟨∇Q, field⟩ = −rate·Q + Σ w σ for ∇Q = 2Jθ (J ≠ 0) or c; (rate, weights)."""
    rate, weights = sp.Integer(0), {}
    scale = 2 if sym.has_J else 1
    for tree, c in field.items():
        if tree == T.THETA:
            rate -= scale * c  # ⟨Jθ, θ⟩ = Q/1 (J) ; ⟨c, θ⟩ = Q (c)
            continue
        if not sym.has_J:
            continue  # ⟨c, ∇^{k+1}L[...]⟩ = −Σ ∇^k L[.., J·, ..] = 0 for J = 0
        children = tree[1]
        if children == ():
            continue  # ⟨Jθ, ∇L⟩ = 0
        if children == (T.THETA,):
            continue  # ⟨Jθ, ∇²L θ⟩ = −⟨J∇L, θ⟩ = 0
        if children == (T.GRAD,):
            weights["grad_sq"] = weights.get("grad_sq", 0) - scale * c  # = −⟨g, Jg⟩
            continue
        raise NmechError(
            f"the continuous form needs <J theta, {notation.tree(tree, latex=False)}>, a signal "
            "outside the vocabulary (use order=1 or the exact recursion)"
        )
    return rate, weights


def continuous_dynamics(
    rule: Rule, sym: Symmetry, order: int = 1, paper: bool = False
) -> ContinuousDynamics:
    """The observable's ODE under the rule's modified flow (see module docstring)."""
    if rule.states:
        flow = modified_flow(rule)
        g2 = sp.factor(flow.gamma / flow.m)
        if sym.has_J:
            forcing = {"step_sq": sp.factor(2 / eta**2)}
            if flow.rho != 0:
                forcing["step_grad"] = sp.factor(2 * flow.rho / flow.m)
            w2 = sp.factor(2 * flow.lam_eff / flow.m)
        else:
            forcing, w2 = {}, sp.factor(flow.lam_eff / flow.m)
        return ContinuousDynamics(2, sp.Integer(0), sp.factor(g2 / 2), w2, forcing)
    me = modified_equation(rule, order)
    field = T.combine((eta**k, f) for k, f in enumerate(me.terms))
    rate, weights = _reduce_pairing(sym, field)
    rate = sp.expand(rate)
    if paper:  # weight decay at leading order only: drop η·λ^{≥2}
        rate = sum(
            term
            for term in sp.Add.make_args(rate)
            if sp.degree(term, lam) <= 1 or not term.has(eta)
        )
    return ContinuousDynamics(
        1,
        sp.factor(rate),
        sp.Integer(0),
        sp.Integer(0),
        {k: sp.factor(v) for k, v in weights.items()},
    )


@cache
def kernels() -> dict[str, tuple[sp.Expr, sp.Expr]]:
    """K (x(0)=1, ẋ(0)=0) and G (x(0)=0, ẋ(0)=1) of ẍ + 2Γẋ + ω²x = 0 in each regime, in t, Γ
    and δ = √(Γ²−ω²) (over-damped) or Ω = √(ω²−Γ²) (under-damped), written with decaying
    exponentials only (δ < Γ), so that they can be evaluated at any t."""
    out = {}
    a, b = sp.symbols("a b")
    for regime, (r1, r2) in {
        "over": (-Gamma + delta, -Gamma - delta),
        "under": (-Gamma + sp.I * Omega, -Gamma - sp.I * Omega),
    }.items():
        x = a * sp.exp(r1 * t) + b * sp.exp(r2 * t)
        pair = []
        for x0, v0 in ((1, 0), (0, 1)):
            sol = sp.solve([x.subs(t, 0) - x0, sp.diff(x, t).subs(t, 0) - v0], [a, b])
            expr = x.subs(sol)
            if regime == "under":
                expr = sp.exp(-Gamma * t) * sp.simplify(
                    sp.expand_complex(sp.expand(expr * sp.exp(Gamma * t)))
                )
            if regime == "over":  # every exponent −(Γ ∓ δ)t ≤ 0: no overflow at long times
                expr = sp.powsimp(sp.expand(sp.simplify(expr).rewrite(sp.exp)), combine="exp")
            pair.append(expr)
        out[regime] = tuple(pair)
    out["critical"] = tuple(sp.simplify(sp.limit(k, delta, 0)) for k in out["over"])
    return out
