"""Symmetries of the loss with a linear generator ξ(θ) = Jθ + c (J symmetric), and what
follows from them, derived by differentiating the invariance identity.

Invariance along the generator gives, for every θ and every mini-batch, the identity
I_0(θ) = ∇L(θ)[ξ(θ)] = 0. Differentiating it k times in directions v_1..v_k (D_v ξ = J v):

    ∇^{k+1}L[ξ, v_1, …, v_k] = − Σ_i ∇^k L[v_1, …, J v_i, …, v_k]        (rewriting rule k)

k = 0 is the gradient constraint ⟨∇L, ξ⟩ = 0, k = 1 the Hessian constraint ∇²L ξ + J∇L = 0.
Q(θ) = ½⟨θ, Jθ⟩ + ⟨c, θ⟩ has ∇Q = ξ, hence dQ/dt = −⟨ξ, ∇L⟩ = 0 under gradient flow.
Reported observables follow the paper, without the ½: ⟨1_A, θ⟩ (translation), |θ_A|² (scale),
|θ_{A1}|² − |θ_{A2}|² (rescale); in general ``observable`` = 2Q when J ≠ 0, Q when J = 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

Form = tuple  # (m, args): ∇^m L[args...]; args are atom names: "xi", "v1", "J v1", ...


def _differentiate(expr: dict[Form, int], direction: str) -> dict[Form, int]:
    """D_direction of Σ c ∇^m L[args]: a new slot, plus D_v ξ = J v on every ξ argument."""
    out: dict[Form, int] = {}

    def add(form: Form, c: int) -> None:
        key = (form[0], tuple(sorted(form[1])))
        out[key] = out.get(key, 0) + c
        if out[key] == 0:
            del out[key]

    for (m, args), c in expr.items():
        add((m + 1, args + (direction,)), c)
        for i, a in enumerate(args):
            if a == "xi":
                add((m, args[:i] + ("J " + direction,) + args[i + 1 :]), c)
    return out


def _form_latex(form: Form) -> str:
    m, args = form
    head = "\\nabla L" if m == 1 else f"\\nabla^{{{m}}} L"
    names = [a.replace("xi", "\\xi").replace("J ", "J") for a in args]
    return f"{head}[{', '.join(names)}]"


@dataclass(frozen=True)
class Symmetry:
    """A linear-generator symmetry. ``has_J``/``has_c`` say which parts of ξ = Jθ + c exist."""

    name: str
    has_J: bool
    has_c: bool
    description: str = ""

    def identity(self, k: int) -> dict[Form, int]:
        """The k-times differentiated invariance identity Σ c·∇^m L[args] = 0."""
        expr: dict[Form, int] = {(1, ("xi",)): 1}
        for i in range(1, k + 1):
            expr = _differentiate(expr, f"v{i}")
        if not self.has_J:
            expr = {f: c for f, c in expr.items() if not any(a.startswith("J ") for a in f[1])}
        return expr

    def rewriting_rule(self, k: int) -> tuple[Form, dict[Form, int]]:
        """∇^{k+1}L[ξ, v_1..v_k] = Σ c·(forms without ξ): (left form, right-hand side)."""
        identity = self.identity(k)
        left = next(f for f in identity if "xi" in f[1])
        rhs = {f: -c for f, c in identity.items() if f != left}
        return left, rhs

    @property
    def gradient_constraint(self) -> str:
        """⟨∇L, ξ⟩ = 0 in LaTeX."""
        return "\\langle \\nabla L, \\xi \\rangle = 0"

    @property
    def hessian_constraint(self) -> str:
        """∇²L ξ + J∇L = 0 (∇²L ξ = 0 when J = 0) in LaTeX."""
        left, rhs = self.rewriting_rule(1)
        return "\\nabla^2 L\\,\\xi + J\\nabla L = 0" if rhs else "\\nabla^2 L\\,\\xi = 0"

    def generator_latex(self) -> str:
        """ξ(θ) = Jθ + c (the parts that exist) in LaTeX."""
        parts = (["J\\theta"] if self.has_J else []) + (["c"] if self.has_c else [])
        return "\\xi(\\theta) = " + " + ".join(parts)

    def conserved_latex(self) -> str:
        """Q with ∇Q = ξ (line integral ∫_0^1 ⟨ξ(sθ), θ⟩ ds), and the reported observable."""
        s = sp.Symbol("s")
        quad = sp.integrate(s, (s, 0, 1)) if self.has_J else 0
        parts = []
        if quad:
            parts.append(f"{sp.latex(quad)}\\langle \\theta, J\\theta \\rangle")
        if self.has_c:
            parts.append("\\langle c, \\theta \\rangle")
        return "Q = " + " + ".join(parts)

    def latex(self, max_order: int = 3) -> str:
        """Generator, constraints, rewriting rules through ``max_order`` and the conserved Q."""
        lines = [
            f"% symmetry: {self.name} ({self.description})",
            self.generator_latex(),
            self.gradient_constraint,
            self.hessian_constraint,
        ]
        for k in range(2, max_order + 1):
            left, rhs = self.rewriting_rule(k)
            body = " ".join(
                f"{'-' if c < 0 else '+'} {'' if abs(c) == 1 else abs(c)}{_form_latex(f)}"
                for f, c in sorted(rhs.items())
            ).lstrip("+ ")
            lines.append(f"{_form_latex(left)} = {body or '0'}")
        lines.append(self.conserved_latex())
        return "\n".join(lines)


def translation() -> Symmetry:
    """Softmax/cross-entropy: adding a constant to every class logit. J = 0, c = 1_A."""
    return Symmetry("translation", has_J=False, has_c=True, description="J = 0, c = 1_A")


def scale() -> Symmetry:
    """Batch norm: scaling the weights and bias feeding a normalised channel. J = P_A, c = 0."""
    return Symmetry("scale", has_J=True, has_c=False, description="J = P_A, c = 0")


def rescale() -> Symmetry:
    """Homogeneous activation: in-weights ×α, out-weights ×1/α. J = P_A1 − P_A2, c = 0."""
    return Symmetry("rescale", has_J=True, has_c=False, description="J = P_A1 - P_A2, c = 0")


BUILTINS = {"translation": translation, "scale": scale, "rescale": rescale}
