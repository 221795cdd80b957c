"""Rendering trees in the papers' notation: ∇L, ∇²L∇L, ∇³L[∇L,∇L], ‖∇L‖², θ."""

from __future__ import annotations

import sympy as sp

from . import trees as T


def loss(label: str | None, latex: bool = True) -> str:
    """L, or the labelled loss L̂_label."""
    if label is None:
        return "L"
    return f"\\hat L_{{{label}}}" if latex else f"L̂_{label}"


def _power(k: int, latex: bool, label: str | None = None) -> str:
    name = loss(label, latex)
    if k == 1:
        return f"\\nabla {name}" if latex else f"∇{name}"
    if latex:
        return f"\\nabla^{{{k}}} {name}" if k > 9 else f"\\nabla^{k} {name}"
    sup = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")
    return "∇" + str(k).translate(sup) + name


def tree(t: T.Tree, latex: bool = True) -> str:
    """∇^{k+1}L[c_1,…,c_k]; a single child is written as a product, ∇²L∇L."""
    if T.is_leaf(t):
        name = t[1]
        if latex:
            return "\\theta" if name == "theta" else name.replace("?", "")
        return "θ" if name == "theta" else name
    children = T.children(t)
    head = _power(len(children) + 1, latex, T.label(t))
    if not children:
        return head
    if len(children) == 1:
        return head + ("\\," if latex else "") + tree(children[0], latex)
    inner = ", ".join(tree(c, latex) for c in children)
    return f"{head}[{inner}]"


SYMBOL_NAMES = {sp.Symbol("lam", real=True): "\\lambda", sp.Symbol("tau", real=True): "\\tau"}


_BETA = sp.Symbol("beta", real=True)
_ONE_MINUS_BETA = sp.Symbol("one_minus_beta", positive=True)


def _papers_signs(c: sp.Expr) -> sp.Expr:
    """Factors (β − 1)^k written as (−1)^k (1 − β)^k, the papers' form (1 − β > 0)."""
    if not isinstance(c, sp.Expr) or not c.has(_BETA):
        return c
    flipped = sp.Integer(1)
    for factor in sp.Mul.make_args(sp.factor(c)):
        base, power = factor.as_base_exp()
        if sp.expand(base - (_BETA - 1)) == 0 and power.is_integer:
            flipped *= (-1) ** power * _ONE_MINUS_BETA**power
        else:
            flipped *= base**power
    return flipped


def coefficient(c: sp.Expr, latex: bool = True, names: dict | None = None) -> str:
    """A sympy expression in LaTeX (λ, τ for lam, tau; (1 − β) for −(β − 1); ``names``: more
    symbol -> LaTeX)."""
    if not latex:
        return sp.sstr(c)
    names = {**SYMBOL_NAMES, _ONE_MINUS_BETA: "\\left(1 - \\beta\\right)", **(names or {})}
    return sp.latex(_papers_signs(c), symbol_names=names)


def factor_latex(c: sp.Expr) -> str:
    """A coefficient as a factor: parenthesised when it is a sum."""
    text = coefficient(sp.sympify(c))
    c = sp.sympify(c)
    return f"\\left({text}\\right)" if c.is_Add or c.could_extract_minus_sign() else text


def linear_combination(v: dict, latex: bool = True, render=tree) -> str:
    """Σ c·t with signs folded in, largest trees last; ``render(t, latex)`` writes a tree."""
    if not v:
        return "0"
    parts = []
    for t in sorted(v, key=lambda t: (T.size(t), t)):
        c = _papers_signs(sp.factor(v[t])) if latex else sp.factor(v[t])
        negative = c.could_extract_minus_sign()
        mag = -c if negative else c
        factor = "" if mag == 1 else coefficient(mag, latex)
        if factor and (mag.is_Add):
            factor = f"\\left({factor}\\right)" if latex else f"({factor})"
        sep = "\\," if latex and factor else ("·" if factor and not latex else "")
        parts.append(("-" if negative else "+", f"{factor}{sep}{render(t, latex)}"))
    text = ("-" if parts[0][0] == "-" else "") + parts[0][1]
    for sign, body in parts[1:]:
        text += f" {sign} {body}"
    return text
