"""The second-order modified flow of momentum rules (the form the paper uses).

From the rule's linear step, eliminate the auxiliary states by the z-transform: with A the state
map and b the gradient's column, D(z) = det(zI − A) and N(z) = [adj(zI − A) b]_θ relate the
iterates to the gradients, D(z)θ = N(z)∇L(p). Centred on the current iterate (divided by
z^{deg D − 1}) and with the shift z = e^{ηs} (s = d/dt), expanding to first order in η gives

    m θ̈ + γ θ̇ + λ_eff θ + η ρ ∇²L θ̇ = −κ ∇L,

e.g. heavy ball / torch SGD: (η(1+β)/2) θ̈ + (1−β) θ̇ + λθ = −∇L, with dampening τ the right
side and λ_eff carry (1−τ), and Nesterov (gradient at a look-ahead point) adds the Hessian
damping ρ = β. Each coefficient is kept at its leading order in η, as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sympy as sp

from nmech.derive.algebra import notation
from nmech.derive.result import Derivation
from nmech.derive.rules.linear_step import linear_step
from nmech.derive.rules.rule import PARAMETER, Rule
from nmech.derive.symbols import eta
from nmech.errors import NmechError


@dataclass(frozen=True, repr=False)
class SecondOrderFlow(Derivation):
    """m θ̈ + γ θ̇ + λ_eff θ + η ρ ∇²L θ̇ = −κ ∇L."""

    m: sp.Expr
    gamma: sp.Expr
    lam_eff: sp.Expr
    rho: sp.Expr
    kappa: sp.Expr

    def latex(self) -> str:
        """The flow in LaTeX, terms with a zero coefficient left out."""
        f = notation.factor_latex
        lhs = f"{f(self.m)}\\,\\ddot\\theta + {f(self.gamma)}\\,\\dot\\theta"
        if self.lam_eff != 0:
            lhs += f" + {f(self.lam_eff)}\\,\\theta"
        if self.rho != 0:
            lhs += f" + \\eta\\,{f(self.rho)}\\,\\nabla^2 L\\,\\dot\\theta"
        rhs = "-\\nabla L" if self.kappa == 1 else f"-{f(self.kappa)}\\,\\nabla L"
        return f"{lhs} = {rhs}".replace("+ -", "- ")

    def text(self) -> str:
        """The same in plain text."""

        def f(c: sp.Expr) -> str:
            text = sp.sstr(c)
            return f"({text})" if c.is_Add or c.could_extract_minus_sign() else text

        lhs = f"{f(self.m)}·θ'' + {f(self.gamma)}·θ'"
        if self.lam_eff != 0:
            lhs += f" + {f(self.lam_eff)}·θ"
        if self.rho != 0:
            lhs += f" + η·{f(self.rho)}·∇²L θ'"
        rhs = "-∇L" if self.kappa == 1 else f"-{f(self.kappa)}·∇L"
        return f"{lhs} = {rhs}"

    def to_json(self) -> dict[str, Any]:
        """Schema ``nmech.second_order_flow/1``: the five coefficients (sympy strings) of
        m θ̈ + γ θ̇ + λ_eff θ + η ρ ∇²L θ̇ = −κ ∇L, and the LaTeX."""
        fields = {"m": self.m, "gamma": self.gamma, "lam_eff": self.lam_eff}
        fields.update(rho=self.rho, kappa=self.kappa)
        return {
            "schema": "nmech.second_order_flow/1",
            **{k: sp.sstr(v) for k, v in fields.items()},
            "latex": self.latex(),
        }


def modified_flow(rule: Rule) -> SecondOrderFlow:
    """The second-order modified flow of a linear rule with one gradient per step."""
    step = linear_step(rule)
    if len(step.gradients) != 1:
        raise NmechError("modified_flow needs exactly one gradient evaluation per step")
    ((g, point),) = step.gradients
    if set(point) - set(step.states):
        raise NmechError("modified_flow: the gradient's point depends on another gradient")
    states = step.states
    z, s = sp.symbols("z s")
    A = sp.Matrix([[step.next[a].get(b, 0) for b in states] for a in states])
    b = sp.Matrix([step.next[a].get(g, 0) for a in states])
    resolvent = (z * sp.eye(len(states)) - A).adjugate()
    D = sp.expand((z * sp.eye(len(states)) - A).det())
    N = sp.expand((resolvent * b)[states.index(PARAMETER)])
    Np = sp.expand((sp.Matrix([[point.get(a, 0) for a in states]]) * resolvent * b)[0])
    shift = sp.exp(eta * s)
    centre = z ** (sp.degree(D, z) - 1)

    def series(expr: sp.Expr, order: int) -> sp.Expr:
        return sp.expand(sp.series(expr.subs(z, shift), eta, 0, order).removeO())

    lhs = series(D / centre / eta, 2)
    rhs = series(N / centre / eta, 2)
    if N == 0:
        raise NmechError("the parameter does not depend on the gradient")
    lookahead = series((Np - N) / N, 2)
    if sp.simplify(lookahead.subs(eta, 0)) != 0:
        raise NmechError("the gradient is taken at a point that does not tend to theta")
    kappa = sp.factor(-rhs.coeff(s, 0).subs(eta, 0))
    c1 = sp.factor(lookahead.coeff(eta, 1).coeff(s, 1))
    n1 = sp.factor(rhs.coeff(s, 1).coeff(eta, 1))
    return SecondOrderFlow(
        m=sp.factor(eta * lhs.coeff(s, 2).coeff(eta, 1)),
        gamma=sp.factor(lhs.coeff(s, 1).subs(eta, 0)),
        lam_eff=sp.factor(lhs.coeff(s, 0).subs(eta, 0)),
        rho=sp.factor(kappa * c1 - n1),
        kappa=kappa,
    )
