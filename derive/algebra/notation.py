"""Rendering trees in the papers' notation: ∇L, ∇²L∇L, ∇³L[∇L,∇L], ‖∇L‖², θ."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sympy as sp
from sympy.printing.precedence import PRECEDENCE
from sympy.printing.str import StrPrinter

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


def tree(t: T.Tree, latex: bool = True, names: Names | None = None) -> str:
    """∇^{k+1}L[c_1,…,c_k]; a single child is written as a product, ∇²L∇L. Element-wise
    functions are written with ⊙ for the entry-wise product; |·|, quotients, powers and roots of
    vectors are entry-wise too. With ``names``, an element-wise node inside another tree is
    written by its short name (:class:`Names`)."""
    if T.is_leaf(t):
        name = t.name
        if latex:
            return "\\theta" if name == "theta" else name.replace("?", "")
        return "θ" if name == "theta" else name
    if T.is_elementwise(t):
        return elementwise(t.f, t.args, latex, names)
    if T.is_scaled(t):
        return scaled(t, latex, names)
    children = T.children(t)
    head = _power(len(children) + 1, latex, T.label(t))
    if not children:
        return head

    def child(c: T.Tree) -> str:
        if names is not None and c in names.index:
            return names.name(c, latex)
        return tree(c, latex, names)

    if len(children) == 1:
        shown = child(children[0])
        if T.is_elementwise(children[0]) and (names is None or children[0] not in names.index):
            shown = f"\\left({shown}\\right)" if latex else f"({shown})"
        named = names is not None and children[0] in names.index
        return head + ("\\," if latex else (" " if named else "")) + shown
    inner = ", ".join(child(c) for c in children)
    return f"{head}[{inner}]"


def _atom(atom: tuple, latex: bool, names: Names | None) -> str:
    """‖a‖ or ⟨a, b⟩."""
    inner = ", ".join(tree(a, latex, names) for a in atom[1:])
    if atom[0] == "norm":
        return f"\\left\\|{inner}\\right\\|" if latex else f"‖{inner}‖"
    return f"\\left\\langle {inner}\\right\\rangle" if latex else f"⟨{inner}⟩"


def _atoms(factor: tuple, latex: bool, names: Names | None) -> str:
    sup = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")
    parts = []
    for atom, e in factor:
        shown = _atom(atom, latex, names)
        if e != 1:
            shown += f"^{{{e}}}" if latex else str(e).translate(sup)
        parts.append(shown)
    return (" " if latex else "").join(parts)


def scaled(t: T.Scaled, latex: bool = True, names: Names | None = None) -> str:
    """φ·w as (numerator atoms)/(denominator atoms) w: ‖·‖ norms, ⟨·,·⟩ inner products."""
    top = tuple((a, e) for a, e in t.factor if e > 0)
    bottom = tuple((a, -e) for a, e in t.factor if e < 0)
    w = tree(t.w, latex, names)
    if latex:
        num = _atoms(top, latex, names) or "1"
        front = f"\\frac{{{num}}}{{{_atoms(bottom, latex, names)}}}" if bottom else num
        return f"{front}\\,{w}"
    num = " ".join(x for x in (_atoms(top, latex, names), w) if x)
    return f"{num}/{_atoms(bottom, latex, names)}" if bottom else num


D = sp.Symbol("D", positive=True)  # display only: |∇L| + ε, the adaptive rules' denominator


def _with_denominator(f: sp.Expr, args: tuple[T.Tree, ...]) -> sp.Expr:
    """f with every ε + |∇L| written D (an argument ∇L of the element-wise node)."""
    eps = SYMBOL_NAMES_BY_NAME["eps"]
    swap = {eps + sp.Abs(T.placeholder(j)): D for j, a in enumerate(args) if a == T.GRAD}
    return f.xreplace(swap) if swap else f


class Names:
    """Short names for what the element-wise terms repeat: u_1, u_2, … for the element-wise
    nodes that occur inside other trees (Adam's u_1 = ∇L/D in ∇²L u_1) and D = |∇L| + ε; a
    result prints its trees with the names and defines each once (:meth:`definitions`),
    instead of nesting quotients inside quotients."""

    def __init__(self, vecs: Sequence[T.Vec]) -> None:
        found: set[T.Tree] = set()
        self.uses_denominator = False

        def visit(t: T.Tree, inside: bool) -> None:
            if T.is_elementwise(t):
                if inside:
                    found.add(t)
                self.uses_denominator |= _with_denominator(t.f, t.args).has(D)
            for c in T.children(t):
                visit(c, inside or not T.is_elementwise(t))

        for v in vecs:
            for t in v:
                visit(t, False)
        ordered = sorted(found, key=lambda t: (T.size(t), t))
        self.index = {t: i + 1 for i, t in enumerate(ordered)}

    def name(self, t: T.Tree, latex: bool = True) -> str:
        """The short name of a named node."""
        return f"u_{{{self.index[t]}}}" if latex else f"u{self.index[t]}"

    def render(self, t: T.Tree, latex: bool = True) -> str:
        """A tree written with the names (the ``render`` of :func:`flow_latex`)."""
        return tree(t, latex, self)

    def definitions(self, latex: bool = True) -> list[str]:
        """``D = ε + |∇L|`` (when used), then ``u_i = f(…)``, one a line."""
        lines = []
        if self.uses_denominator:
            lines.append("D = \\epsilon + \\left|\\nabla L\\right|" if latex else "D = eps + |∇L|")
        return lines + [
            f"{self.name(t, latex)} = {elementwise(t.f, t.args, latex, self)}"
            for t in sorted(self.index, key=self.index.get)
        ]


def elementwise(
    f: sp.Expr, args: tuple[T.Tree, ...], latex: bool = True, names: Names | None = None
) -> str:
    """f(args) entry-wise, the placeholders replaced by the arguments' notation (with
    ``names``, ε + |∇L| written D)."""
    if names is not None and names.uses_denominator:
        f = _with_denominator(f, args)
    if latex:
        vectors = {T.placeholder(j) for j in range(len(args))}
        shown = {T.placeholder(j): tree(a, True, names) for j, a in enumerate(args)}
        shown = {**SYMBOL_NAMES, **_DECAY_NAMES, **shown}
        return sp.latex(_entrywise_display(f, vectors, shown), symbol_names=shown)
    symbols = {T.placeholder(j): sp.Symbol(tree(a, False, names)) for j, a in enumerate(args)}
    return _TextPrinter().doprint(f.xreplace(symbols))


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
    placeholders = [T.placeholder(j) for j in range(len(t.args))]
    c, rest = t.f.as_independent(*placeholders, as_Add=False)
    if c == 1 or not placeholders:
        return sp.Integer(1), t
    return c, T.elementwise(rest, t.args)


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
        ("gamma", "\\gamma"),
    )
}
_DECAY_NAMES = {one_minus: tex for one_minus, tex in _DECAYS.values()}
_UNFLIP = {one_minus: 1 - b for b, (one_minus, _) in _DECAYS.items()}


def _papers_signs(c: sp.Expr) -> sp.Expr:
    """Factors (β − 1)^k written as (−1)^k (1 − β)^k, the papers' form (1 − β > 0); likewise
    for β₁, β₂ and α."""
    if not isinstance(c, sp.Expr) or not any(c.has(b) for b in _DECAYS):
        return c
    if c.is_Add and not any(isinstance(a, sp.Symbol) and a in _DECAYS for a in c.args):
        return sp.Add(*[_papers_signs(a) for a in c.args])  # a sum of terms: each its own
    flipped = sp.Integer(1)
    for factor in sp.Mul.make_args(sp.factor(c)):
        base, power = factor.as_base_exp()
        match = [b for b in _DECAYS if sp.expand(base - (b - 1)) == 0]
        if match and power.is_integer:
            flipped *= (-1) ** power * _DECAYS[match[0]][0] ** power
        elif not power.is_integer and base.is_Mul | base.is_Add:
            flipped *= _papers_signs(base) ** power  # a root: the signs inside it
        else:
            flipped *= base**power
    return flipped


SYMBOL_NAMES_BY_NAME = {s.name: s for s in SYMBOL_NAMES}
_DECAY_TEXT = {one_minus: sp.Symbol(f"(1 - {b.name})") for b, (one_minus, _) in _DECAYS.items()}


class _TextPrinter(StrPrinter):
    """sympy's str printer with |x| for Abs(x)."""

    def _print_Abs(self, e: sp.Abs) -> str:
        return "|" + self._print(e.args[0]) + "|"


def plain(c: sp.Expr, machine: bool = False) -> str:
    """c as plain text with the papers' (1 − β) factors (the one sign convention of text, LaTeX
    and JSON); ``machine``: readable back by ``sympify`` (Abs(x) rather than |x|)."""
    c = _papers_signs(sp.sympify(c)).xreplace(_DECAY_TEXT)
    return sp.sstr(c) if machine else _TextPrinter().doprint(c)


def coefficient(c: sp.Expr, latex: bool = True, names: dict | None = None) -> str:
    """A sympy expression in LaTeX (λ, τ, ε for lam, tau, eps; (1 − β) for −(β − 1);
    ``names``: more symbol -> LaTeX); plain text (:func:`plain`) with ``latex=False``."""
    if not latex:
        return plain(c)
    names = {**SYMBOL_NAMES, **_DECAY_NAMES, **(names or {})}
    return sp.latex(_papers_signs(c), symbol_names=names)


def factor_latex(c: sp.Expr) -> str:
    """A coefficient as a factor: parenthesised when it is a sum or negative (in the papers'
    signs: (1 − β)/η is neither)."""
    c = sp.sympify(c)
    text = coefficient(c)
    shown = _papers_signs(c)
    return f"\\left({text}\\right)" if shown.is_Add or shown.could_extract_minus_sign() else text


def linear_combination(v: dict, latex: bool = True, render=tree) -> str:
    """Σ c·t with signs folded in, largest trees last; ``render(t, latex)`` writes a tree."""
    if not v:
        return "0"
    parts = []
    for t in sorted(v, key=lambda t: (T.size(t), t)):
        scalar, shown = split_scalar(t)
        c = _papers_signs(sp.factor(scalar * v[t]))
        negative = c.could_extract_minus_sign()
        mag = -c if negative else c
        factor = "" if mag == 1 else coefficient(mag.xreplace(_UNFLIP), latex)
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


def flow_latex(
    terms: Sequence[T.Vec], order: int, render: Callable = tree, lhs: str = "\\dot\\theta"
) -> str:
    """θ̇ = Σ_k η^k F_k + O(η^{order+1}) in LaTeX; ``render`` writes one tree, ``lhs`` is the
    left-hand side (any η-series of trees, not only a flow)."""
    parts = []
    for k, f in enumerate(terms):
        if f:
            body = linear_combination(f, render=render)
            parts.append(body if k == 0 else f"{eta_power(k)}\\left({body}\\right)")
    rhs = " + ".join(parts) if parts else "0"
    return f"{lhs} = {rhs} + O(\\eta^{{{order + 1}}})"


def flow_text(
    terms: Sequence[T.Vec], order: int, render: Callable = tree, lhs: str = "dθ/dt"
) -> str:
    """The same as plain text."""
    parts = []
    for k, f in enumerate(terms):
        if f:
            prefix = "" if k == 0 else ("η·" if k == 1 else f"η^{k}·")
            parts.append(f"{prefix}({linear_combination(f, latex=False, render=render)})")
    return f"{lhs} = {' + '.join(parts) or '0'} + O(η^{order + 1})"


def terms_json(terms: Sequence[T.Vec], render: Callable = tree) -> list[dict[str, Any]]:
    """The η-series Σ_k η^k Σ_t c_{k,t} t as JSON rows ``{"order": k, "coefficient",
    "coefficient_latex", "differential", "differential_latex", "tree"}`` (coefficients with
    the papers' (1 − β) factors; ``coefficient`` readable back by ``sympify``)."""
    rows = []
    for k, f in enumerate(terms):
        for t in sorted(f, key=lambda t: (T.size(t), t)):
            scalar, shown = split_scalar(t)
            c = sp.factor(scalar * f[t])
            rows.append(
                {
                    "order": k,
                    "coefficient": plain(c, machine=True),
                    "coefficient_latex": coefficient(c),
                    "differential": render(shown, latex=False),
                    "differential_latex": render(shown),
                    "tree": tree_json(shown),
                }
            )
    return rows


def tree_json(t: T.Tree) -> Any:
    """ "theta" (a leaf's name), "grad" (∇L), [c1, ..] (∇^{k+1}L[c1, ..]); a labelled node
    ∇^{k+1}L̂_j[..] is {"loss": j, "tree": the same for its derivative}; a scaled tree φ·w is
    {"scaled": [{"norm": [a], "power": e} or {"dot": [a, b], "power": e}, ..], "tree": w}."""
    if T.is_leaf(t):
        return t.name
    if T.is_elementwise(t):
        return {"elementwise": sp.sstr(t.f), "arguments": [tree_json(a) for a in t.args]}
    if T.is_scaled(t):
        factor = [{atom[0]: [tree_json(a) for a in atom[1:]], "power": e} for atom, e in t.factor]
        return {"scaled": factor, "tree": tree_json(t.w)}
    kids = T.children(t)
    body = "grad" if not kids else [tree_json(c) for c in kids]
    return body if T.label(t) is None else {"loss": T.label(t), "tree": body}
