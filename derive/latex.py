"""Publication LaTeX: a result's equations as display math, with a legend and, on request, as a
complete document.

A result's :meth:`~nmech.derive.result.Derivation.latex` gives one equation a line (``%`` lines
for context). :func:`display` turns each equation ``lhs = rhs`` into an ``align*`` environment:
the right-hand side is broken at its top-level sums (one order of η a line for a modified
equation), and a group ``η^k\\left( … \\right)`` that is still too long is opened with
``\\Bigl(``/``\\Bigr)`` (which, unlike ``\\left``/``\\right``, may span lines) and broken inside.
A legend names every symbol the equations use (η, β, λ, τ, β₁, β₂, α, ε, and the Γ, ω, δ, Ω of
the dynamics kernels). :func:`document` wraps the display in a document that pdflatex compiles
with the packages of Debian's texlive-latex-base alone (amsmath, amssymb).
"""

from __future__ import annotations

import re

MAX_LINE = 150  # characters of LaTeX source per displayed line

#: (pattern in the LaTeX source, the symbol, its meaning), in the legend's order
LEGEND: tuple[tuple[str, str, str], ...] = (
    (r"\\eta(?![A-Za-z_])", r"\eta", "the learning rate"),
    (r"\\beta(?![A-Za-z_])", r"\beta", "the momentum"),
    (r"\\beta_\{?1", r"\beta_1", "Adam's first-moment decay"),
    (r"\\beta_\{?2", r"\beta_2", "Adam's second-moment decay"),
    (r"\\alpha(?![A-Za-z])", r"\alpha", "RMSProp's decay of the squared gradient"),
    (r"\\lambda(?![A-Za-z])", r"\lambda", "the weight decay"),
    (
        r"\\bar\\theta",
        r"\bar\theta",
        r"the average of the iterates (the derivatives of $L$ taken at $\bar\theta$)",
    ),
    (r"\\gamma(?![A-Za-z])", r"\gamma", "the decay of the averaged iterate"),
    (r"\\rho(?![A-Za-z])", r"\rho", "Lookahead's slow step size"),
    (r"\\tau(?![A-Za-z])", r"\tau", "the dampening"),
    (r"\\epsilon(?![A-Za-z])", r"\epsilon", r"the $\epsilon$ of the update's denominator"),
    (
        r"\\Gamma(?![A-Za-z])|\\omega(?![A-Za-z])",
        r"\Gamma$, $\omega",
        r"the damping rate and natural frequency of $\ddot Q + 2\Gamma\dot Q + \omega^2 Q = F$",
    ),
    (r"\\delta(?![A-Za-z])", r"\delta = \sqrt{\Gamma^2 - \omega^2}", "(over-damped)"),
    (r"\\Omega(?![A-Za-z])", r"\Omega = \sqrt{\omega^2 - \Gamma^2}", "(under-damped)"),
    (
        r"\\odot|\\left\|\{",
        r"\odot",
        r"the entry-wise product; $|\cdot|$, quotients, powers and roots of vectors are "
        "entry-wise too",
    ),
    (
        r"\\left\\\|",
        r"\|\cdot\|",
        r"the Euclidean norm of the whole vector, $\langle\cdot,\cdot\rangle$ the inner product",
    ),
    (r"\\hat L_", r"\hat L_k", r"the loss of mini-batch $k$, $L = \frac{1}{m}\sum_k \hat L_k$"),
    (r"\bG &=", "G", r"the corrected gradient a modifying rule evaluates in place of $\nabla L$"),
    (
        r"\\nabla\^",
        r"\nabla^{k+1} L[a_1, \dots, a_k]",
        r"the $(k+1)$-th derivative of $L$ at $\theta$ with $k$ slots filled",
    ),
)

_OPEN = re.compile(r"\\left[(\[.|]|\\left\\[{|]|\\Bigl[(\[]|[{]")
_CLOSE = re.compile(r"\\right[)\].|]|\\right\\[}|]|\\Bigr[)\]]|[}]")


def _depths(text: str) -> list[int]:
    """The nesting depth (braces, \\left…\\right, \\Bigl…\\Bigr) before each character."""
    out, depth, i = [], 0, 0
    while i < len(text):
        opened, closed = _OPEN.match(text, i), _CLOSE.match(text, i)
        step = opened or closed
        width = step.end() - i if step else 1
        out.extend([depth] * width)
        depth += 1 if opened else (-1 if closed else 0)
        i += width
    return out


def _top_level_terms(text: str) -> list[str]:
    """``text`` cut before each top-level binary + or − (never inside a group)."""
    depth = _depths(text)
    cuts = [
        i
        for i in range(1, len(text) - 1)
        if depth[i] == 0 and text[i] in "+-" and text[i - 1] == " " and text[i + 1] == " "
    ]
    pieces, start = [], 0
    for i in cuts:
        pieces.append(text[start:i].rstrip())
        start = i
    pieces.append(text[start:].strip())
    return [p for p in pieces if p]


def _split_equals(line: str) -> tuple[str, str] | None:
    depth = _depths(line)
    for i, ch in enumerate(line):
        if ch == "=" and depth[i] == 0:
            return line[:i].rstrip(), line[i + 1 :].strip()
    return None


def _opened(term: str) -> list[str] | None:
    """A long ``prefix\\left( body \\right)`` as lines ``prefix\\Bigl( …``, …, ``… \\Bigr)``."""
    if not term.endswith("\\right)"):
        return None
    depth = _depths(term)
    start = next(
        (i for i in range(len(term)) if term.startswith("\\left(", i) and depth[i] == 0),
        None,
    )
    if start is None:
        return None
    prefix, body = term[:start], term[start + len("\\left(") : -len("\\right)")]
    lines = _packed(_top_level_terms(body))
    if len(lines) < 2:
        return None
    return [prefix + "\\Bigl(" + lines[0], *lines[1:-1], lines[-1] + "\\Bigr)"]


def _packed(terms: list[str]) -> list[str]:
    """Terms joined into lines of at most :data:`MAX_LINE` characters (a longer term alone)."""
    lines: list[str] = []
    for term in terms:
        if lines and len(lines[-1]) + len(term) + 1 <= MAX_LINE:
            lines[-1] += " " + term
        else:
            lines.append(term)
    return lines


def _equation(line: str) -> str:
    """One ``lhs = rhs`` line as an ``align*`` environment, broken as the module says."""
    parts = _split_equals(line)
    if parts is None:
        return "\\begin{equation*}\n" + line + "\n\\end{equation*}"
    lhs, rhs = parts
    rows: list[str] = []
    for term in _top_level_terms(rhs):
        if len(term) > MAX_LINE and (opened := _opened(term)) is not None:
            rows.extend(opened)
        elif rows and len(rows[-1]) + len(term) + 1 <= MAX_LINE and not _is_order(term):
            rows[-1] += " " + term
        else:
            rows.append(term)
    body = f"{lhs} &= {rows[0]}"
    for row in rows[1:]:
        body += f" \\\\\n&\\quad {row}"
    return "\\begin{align*}\n" + body + "\n\\end{align*}"


def _is_order(term: str) -> bool:
    """Whether a term opens a new order of η (it starts a line of its own)."""
    return bool(re.match(r"[+-] \\eta(\^\{\d+\})?\\(left|Bigl)\(", term))


def legend(math: str) -> str:
    """A paragraph naming every symbol of :data:`LEGEND` that ``math`` uses ('' if none)."""
    used = [
        f"${symbol}$ {meaning}" for pattern, symbol, meaning in LEGEND if re.search(pattern, math)
    ]
    if not used:
        return ""
    return "\\noindent where " + ",\n".join(used) + "."


def display(latex: str) -> str:
    """The lines of a result's ``latex()`` as display math (module docstring), with the
    legend; ``%`` lines are kept as they are."""
    blocks = []
    for line in latex.splitlines():
        if not line.strip():
            continue
        blocks.append(line if line.lstrip().startswith("%") else _equation(line))
    body = "\n".join(blocks)
    math = "\n".join(b for b in blocks if not b.lstrip().startswith("%"))
    note = legend(math)
    return f"{body}\n{note}" if note else body


def document(body: str, title: str = "") -> str:
    """A complete LaTeX document around ``body`` (amsmath and amssymb only)."""
    head = f"\\section*{{{_escape(title)}}}\n" if title else ""
    return (
        "\\documentclass{article}\n\\usepackage{amsmath,amssymb}\n"
        "\\allowdisplaybreaks\n\\begin{document}\n"
        f"{head}{body}\n\\end{{document}}\n"
    )


def _escape(text: str) -> str:
    """Plain text safe in LaTeX (one line; special characters escaped)."""
    specials = {c: "\\" + c for c in "&%$#_{}"}
    specials |= {"\\": "\\textbackslash{}", "~": "\\textasciitilde{}", "^": "\\textasciicircum{}"}
    return "".join(specials.get(c, c) for c in " ".join(text.split()))
