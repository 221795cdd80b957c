"""Rendering trees in the papers' notation: ∇L, ∇²L∇L, ∇³L[∇L,∇L], ‖∇L‖², θ."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sympy as sp
from sympy.printing.precedence import PRECEDENCE

from nmech.derive.algebra import trees as T


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
    """∇^{k+1}L[c_1,…,c_k]; a single child is written as a product, ∇²L∇L. Element-wise
    functions are written with ⊙ for the entry-wise product; |·|, quotients, powers and roots of
    vectors are entry-wise too."""
    if T.is_leaf(t):
        name = t[1]
        if latex:
            return "\\theta" if name == "theta" else name.replace("?", "")
        return "θ" if name == "theta" else name
    if T.is_elementwise(t):
        return elementwise(t[2], t[3], latex)
    children = T.children(t)
    head = _power(len(children) + 1, latex, T.label(t))
    if not children:
        return head
    if len(children) == 1:
        child = tree(children[0], latex)
        if T.is_elementwise(children[0]):
            child = f"\\left({child}\\right)" if latex else f"({child})"
        return head + ("\\," if latex else "") + child
    inner = ", ".join(tree(c, latex) for c in children)
    return f"{head}[{inner}]"


def elementwise(f: sp.Expr, args: tuple[T.Tree, ...], latex: bool = True) -> str:
    """f(args) entry-wise, the placeholders replaced by the arguments' notation."""
    if latex:
        vectors = {T.placeholder(j) for j in range(len(args))}
        names = {T.placeholder(j): tree(a) for j, a in enumerate(args)}
        names = {**SYMBOL_NAMES, **_DECAY_NAMES, **names}
        shown = _entrywise_display(f, vectors, names)
        return sp.latex(shown, symbol_names=names)
    names = {T.placeholder(j): sp.Symbol(tree(a, latex=False)) for j, a in enumerate(args)}
    return sp.sstr(f.xreplace(names))


class _Hadamard(sp.Function):
    """Display only: the entry-wise product of its (vector) arguments, printed with ⊙."""

    def _latex(self, printer: Any) -> str:
        return " \\odot ".join(printer.parenthesize(a, PRECEDENCE["Mul"]) for a in self.args)


def _entrywise_display(e: sp.Expr, vectors: set, names: dict) -> sp.Expr:
    """e rewritten for printing: terms of a sum collected by their vector part (each scalar
    coefficient factored and shown as one symbol printing as its LaTeX, ``names`` gains them),
    and products of two or more vector factors in a numerator as ⊙ products."""
    if not e.free_symbols & vectors:
        if e.is_Number or e.is_Symbol:
            return e
        c = sp.factor(_papers_signs(sp.factor(e)))
        negative = c.could_extract_minus_sign()
        number, rest = (-c if negative else c).as_coeff_Mul()
        text = sp.latex(rest, symbol_names={**SYMBOL_NAMES, **_DECAY_NAMES, **names})
        text = f"\\left({text}\\right)" if rest.is_Add else text
        symbol = sp.Dummy()
        names[symbol] = text if number == 1 else f"{sp.latex(number)} {text}"
        return -symbol if negative else symbol
    if e.is_Add:
        groups: dict[sp.Expr, sp.Expr] = {}
        for term in e.args:
            c, v = term.as_independent(*vectors, as_Add=False)
            groups[v] = groups.get(v, sp.Integer(0)) + c
        return sp.Add(
            *[
                _entrywise_display(c, vectors, names) * _entrywise_display(v, vectors, names)
                for v, c in groups.items()
            ]
        )
    if e.is_Mul:
        scalar = sp.Mul(*[a for a in e.args if not a.free_symbols & vectors])
        shown = scalar if scalar in (1, -1) else _entrywise_display(scalar, vectors, names)
        factors = [
            _entrywise_display(a, vectors, names) for a in e.args if a.free_symbols & vectors
        ]
        upper = [a for a in factors if not (a.is_Pow and a.exp.is_negative)]
        lower = [a for a in factors if a.is_Pow and a.exp.is_negative]
        product = _Hadamard(*upper) if len(upper) > 1 else sp.Mul(*upper)
        return shown * product * sp.Mul(*lower)
    if e.is_Atom:
        return e
    return e.func(*[_entrywise_display(a, vectors, names) for a in e.args])


def split_scalar(t: T.Tree) -> tuple[sp.Expr, T.Tree]:
    """(c, t') with t = c·t' and c free of vectors (an element-wise node's scalar factor)."""
    if not T.is_elementwise(t):
        return sp.Integer(1), t
    placeholders = [T.placeholder(j) for j in range(len(t[3]))]
    c, rest = t[2].as_independent(*placeholders, as_Add=False)
    if c == 1 or not placeholders:
        return sp.Integer(1), t
    return c, ("e", sp.srepr(rest), rest, t[3])


SYMBOL_NAMES = {
    sp.Symbol("lam", real=True): "\\lambda",
    sp.Symbol("tau", real=True): "\\tau",
    sp.Symbol("eps", positive=True): "\\epsilon",
    sp.Symbol("beta1", real=True): "\\beta_1",
    sp.Symbol("beta2", real=True): "\\beta_2",
}


_DECAYS = {
    sp.Symbol(name, real=True): (
        sp.Symbol(f"one_minus_{name}", positive=True),
        f"\\left(1 - {tex}\\right)",
    )
    for name, tex in (
        ("beta", "\\beta"),
        ("beta1", "\\beta_1"),
        ("beta2", "\\beta_2"),
        ("alpha", "\\alpha"),
    )
}
_DECAY_NAMES = {one_minus: tex for one_minus, tex in _DECAYS.values()}


def _papers_signs(c: sp.Expr) -> sp.Expr:
    """Factors (β − 1)^k written as (−1)^k (1 − β)^k, the papers' form (1 − β > 0); likewise
    for β₁, β₂ and α."""
    if not isinstance(c, sp.Expr) or not any(c.has(b) for b in _DECAYS):
        return c
    flipped = sp.Integer(1)
    for factor in sp.Mul.make_args(sp.factor(c)):
        base, power = factor.as_base_exp()
        match = [b for b in _DECAYS if sp.expand(base - (b - 1)) == 0]
        if match and power.is_integer:
            flipped *= (-1) ** power * _DECAYS[match[0]][0] ** power
        else:
            flipped *= base**power
    return flipped


def coefficient(c: sp.Expr, latex: bool = True, names: dict | None = None) -> str:
    """A sympy expression in LaTeX (λ, τ, ε for lam, tau, eps; (1 − β) for −(β − 1);
    ``names``: more symbol -> LaTeX)."""
    if not latex:
        return sp.sstr(c)
    names = {**SYMBOL_NAMES, **_DECAY_NAMES, **(names or {})}
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
        scalar, shown = split_scalar(t)
        c = sp.factor(scalar * v[t])
        c = _papers_signs(c) if latex else c
        negative = c.could_extract_minus_sign()
        mag = -c if negative else c
        factor = "" if mag == 1 else coefficient(mag, latex)
        if factor and (mag.is_Add):
            factor = f"\\left({factor}\\right)" if latex else f"({factor})"
        sep = "\\," if latex and factor else ("·" if factor and not latex else "")
        parts.append(("-" if negative else "+", f"{factor}{sep}{render(shown, latex)}"))
    text = ("-" if parts[0][0] == "-" else "") + parts[0][1]
    for sign, body in parts[1:]:
        text += f" {sign} {body}"
    return text


def sum_prefix(names: list[str], latex: bool) -> str:
    """Σ over the mini-batch indices ``names`` (empty when there are none)."""
    if not names:
        return ""
    joined = ",".join(names)
    return f"\\sum_{{{joined}}} " if latex else f"Σ_{joined} "


def eta_power(k: int) -> str:
    """η^k in LaTeX (η for k = 1)."""
    return "\\eta" if k == 1 else f"\\eta^{{{k}}}"


def flow_latex(terms: Sequence[T.Vec], order: int, render: Callable = tree) -> str:
    """θ̇ = Σ_k η^k F_k + O(η^{order+1}) in LaTeX; ``render`` writes one tree."""
    parts = []
    for k, f in enumerate(terms):
        if f:
            body = linear_combination(f, render=render)
            parts.append(body if k == 0 else f"{eta_power(k)}\\left({body}\\right)")
    rhs = " + ".join(parts) if parts else "0"
    return f"\\dot\\theta = {rhs} + O(\\eta^{{{order + 1}}})"


def flow_text(terms: Sequence[T.Vec], order: int, render: Callable = tree) -> str:
    """The same as plain text."""
    parts = []
    for k, f in enumerate(terms):
        if f:
            prefix = "" if k == 0 else ("η·" if k == 1 else f"η^{k}·")
            parts.append(f"{prefix}({linear_combination(f, latex=False, render=render)})")
    return f"dθ/dt = {' + '.join(parts) or '0'} + O(η^{order + 1})"


def tree_json(t: T.Tree) -> Any:
    """ "theta" (a leaf's name), "grad" (∇L), [c1, ..] (∇^{k+1}L[c1, ..]); a labelled node
    ∇^{k+1}L̂_j[..] is {"loss": j, "tree": the same for its derivative}."""
    if T.is_leaf(t):
        return t[1]
    if T.is_elementwise(t):
        return {"elementwise": sp.sstr(t[2]), "arguments": [tree_json(a) for a in t[3]]}
    kids = T.children(t)
    body = "grad" if not kids else [tree_json(c) for c in kids]
    return body if T.label(t) is None else {"loss": T.label(t), "tree": body}
