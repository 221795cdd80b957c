"""The rule language: optimizer steps written as text, parsed without ``eval``.

Grammar (one assignment per line, ``#`` starts a comment)::

    line   := ["first" | "average"] NAME "=" expr
    expr   := expr ("+" | "-" | "*" | "/" | "**") expr | ("+" | "-") expr | "(" expr ")"
            | NUMBER | NAME | "grad" "(" expr ")" | "norm" "(" expr ")" | FUNC "(" expr ")"
    FUNC   := "sqrt" | "exp" | "log" | "sin" | "cos" | "tanh" | "sign"

Products, quotients, powers and functions of vectors act entry-wise (Adam's
``m_next/(sqrt(v_next) + eps)``); a scalar added to a vector is broadcast. ``sign`` is the
entry-wise sign (signSGD, signum, Lion), smooth on each region where its argument keeps its
signs: derivations hold there (:class:`~nmech.derive.symbols.sign`). ``norm`` is the global
Euclidean norm of a vector, a scalar that may only multiply a vector, raised to an integer
power (normalised GD ``theta - eta*grad(theta)/norm(grad(theta))``; smooth where its argument
is not 0, :class:`~nmech.derive.symbols.norm`). ``step`` is the
iteration count, allowed only as an exponent (bias corrections ``1 - beta1**step``).
``average X_next = ...`` declares the state X an average of the iterates (e.g.
``average avg_next = gamma*avg + (1 - gamma)*theta_next``): its own flow is what is derived
(:mod:`nmech.derive.bea.averaged`). A state that θ's update never reads, directly or through
other names, and that is not declared so, is refused: its value would be silently ignored.

Rule text is ASCII outside comments: Python's parser would read the full-width ``ｅｔａ`` and
the mathematical bold ``𝐠𝐫𝐚𝐝`` as ``eta`` and ``grad`` (NFKC), so such look-alikes are refused
(a UTF-8 byte-order mark at the start is dropped). Every number the text computes stays below
:data:`MAX_BITS` bits; elementary functions apply to vectors only (a function of a constant or
a parameter is no rational coefficient, and evaluating ``sin(exp(exp(40)))`` would not end).
Hyper-parameters (``eta``, ``beta``, …) and ``step`` are not states, and no assignment may use
its own target.

Each right-hand side is read by Python's ``ast`` parser (which builds a tree and runs nothing);
the tree is then walked against the whitelist above and turned into sympy objects directly, so
rule text never reaches ``eval``, ``sympify`` or ``parse_expr``. Anything else -- attribute access,
subscripts, lambdas, comprehensions, keywords, strings, unknown or non-smooth functions -- is
refused with a one-line :class:`~nmech.errors.NmechError` giving line and column. Input size,
nesting depth, literal size and exponents are bounded so that parsing cannot hang.

Example (``torch.optim.SGD`` with momentum)::

    v_next = beta*v + grad(theta) + lam*theta
    theta_next = theta - eta*v_next
"""

from __future__ import annotations

import ast
import re

import sympy as sp

from nmech.derive.rules.rule import NEXT, PARAMETER, Assignment, Rule
from nmech.derive.symbols import HYPERPARAMETERS, grad, norm, scalar, sign, vector
from nmech.errors import NmechError

MAX_TEXT = 20_000
MAX_LINE = 2_000
MAX_LINES = 200
MAX_DEPTH = 60
MAX_NODES = 2_000
MAX_EXPONENT = 64
MAX_LITERAL = 1e15
MAX_BITS = 4096  # a numeric power may have at most this many bits

NON_SMOOTH = {"abs", "max", "min", "relu", "floor", "ceil", "round", "clip", "heaviside"}
ELEMENTWISE = {
    "sqrt": sp.sqrt,
    "exp": sp.exp,
    "log": sp.log,
    "sin": sp.sin,
    "cos": sp.cos,
    "tanh": sp.tanh,
    "sign": sign,
}
IDENT = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
RESERVED = {"grad", "first", "average", "lambda", "import"}
PREFIXES = ("first", "average")

_BINARY = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow)


def _bits(number: sp.Expr) -> int:
    """Bits of a rational number's numerator or denominator, whichever is larger."""
    p, q = sp.fraction(sp.Rational(number))
    return max(int(abs(p)).bit_length(), int(abs(q)).bit_length(), 1)


def _too_large(expr: sp.Expr) -> bool:
    """Whether a rational number in ``expr`` has more than :data:`MAX_BITS` bits."""
    return any(n.is_Rational and _bits(n) > MAX_BITS for n in expr.atoms(sp.Number))


class _Where:
    """Position of the text being parsed, for error messages."""

    def __init__(self, line: int, offset: int) -> None:
        self.line, self.offset = line, offset

    def error(self, message: str, node: ast.AST | None = None) -> NmechError:
        col = self.offset + (getattr(node, "col_offset", 0) if node is not None else 0) + 1
        return NmechError(f"rule line {self.line}, column {col}: {message}")


class _Converter:
    """Walks a whitelisted expression AST and builds the sympy expression."""

    def __init__(self, where: _Where, known_vectors: set[str]) -> None:
        self.where, self.vectors, self.nodes = where, known_vectors, 0

    def convert(self, node: ast.AST, depth: int = 0) -> sp.Expr:
        self.nodes += 1
        if depth > MAX_DEPTH or self.nodes > MAX_NODES:
            raise self.where.error("expression too deeply nested or too long", node)
        if isinstance(node, ast.BinOp) and isinstance(node.op, _BINARY):
            left = self.convert(node.left, depth + 1)
            right = self.convert(node.right, depth + 1)
            out = self._binary(node, left, right)
            if _too_large(out):
                raise self.where.error(f"number too large (more than {MAX_BITS} bits)", node)
            return out
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            inner = self.convert(node.operand, depth + 1)
            return -inner if isinstance(node.op, ast.USub) else inner
        if isinstance(node, ast.Constant):
            return self._number(node)
        if isinstance(node, ast.Name):
            return self._name(node)
        if isinstance(node, ast.Call):
            return self._call(node, depth)
        raise self.where.error(f"'{type(node).__name__}' is not allowed in a rule", node)

    def _binary(self, node: ast.BinOp, left: sp.Expr, right: sp.Expr) -> sp.Expr:
        op = node.op
        if isinstance(op, ast.Add):
            return left + right
        if isinstance(op, ast.Sub):
            return left - right
        if isinstance(op, ast.Mult):
            return left * right
        if isinstance(op, ast.Div):
            if right == 0:
                raise self.where.error("division by zero", node)
            return left / right
        if right.is_Number and abs(float(right)) > MAX_EXPONENT:
            raise self.where.error(f"exponent {right} is too large (|p| <= {MAX_EXPONENT})", node)
        if right.has(grad) or any(str(s) in self.vectors for s in right.free_symbols):
            raise self.where.error("an exponent must be a scalar", node)
        if left.is_Number and right.is_Number and abs(float(right)) * _bits(left) > MAX_BITS:
            raise self.where.error("number too large", node)
        return left**right

    def _number(self, node: ast.Constant) -> sp.Expr:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.where.error(f"literal {value!r} is not a number", node)
        if not abs(value) < MAX_LITERAL:
            raise self.where.error(f"number {value!r} is out of range", node)
        return sp.Integer(value) if isinstance(value, int) else sp.Rational(repr(value))

    def _name(self, node: ast.Name) -> sp.Expr:
        name = node.id
        if name.startswith("_") or not IDENT.match(name) or name in RESERVED:
            raise self.where.error(f"name '{name}' is not allowed", node)
        return vector(name) if name in self.vectors else scalar(name)

    def _call(self, node: ast.Call, depth: int) -> sp.Expr:
        func = node.func.id if isinstance(node.func, ast.Name) else None
        if func is None:
            raise self.where.error("only plain function names can be called", node)
        if func in NON_SMOOTH:
            raise self.where.error(
                f"'{func}' is not smooth: backward error analysis needs a smooth update", node
            )
        if func not in ("grad", "norm") and func not in ELEMENTWISE:
            allowed = ", ".join(["grad", "norm", *sorted(ELEMENTWISE)])
            raise self.where.error(f"unknown function '{func}' (allowed: {allowed})", node)
        if node.keywords or len(node.args) != 1 or isinstance(node.args[0], ast.Starred):
            what = "the point" if func == "grad" else "a vector or scalar"
            raise self.where.error(f"{func} takes exactly one argument, {what}", node)
        inner = self.convert(node.args[0], depth + 1)
        if func == "grad":
            return grad(inner)
        if func == "norm" and not self._is_vector(inner):
            raise self.where.error(
                "norm of a constant or parameter: its argument is a vector", node
            )
        if func == "norm":
            return norm(inner)
        if not self._is_vector(inner):
            raise self.where.error(
                f"{func} of a constant or parameter: coefficients must be rational functions "
                "of the parameters (functions apply entry-wise to vectors)",
                node,
            )
        return ELEMENTWISE[func](inner)

    def _is_vector(self, expr: sp.Expr) -> bool:
        return expr.has(grad) or any(str(s) in self.vectors for s in expr.free_symbols)


def _split_line(raw: str, number: int) -> tuple[str, str, str, int] | None:
    """(prefix, target, rhs, rhs column) of one line, or None for blank/comment lines; the
    prefix is "first", "average" or ""; the column is that of the first character of the
    stripped right-hand side."""
    text = raw.split("#", 1)[0].rstrip()
    if not text.strip():
        return None
    where = _Where(number, 0)
    if len(raw) > MAX_LINE:
        raise where.error(f"line longer than {MAX_LINE} characters")
    for col, ch in enumerate(text):
        if not (ch.isascii() and (ch.isprintable() or ch == "\t")):
            raise _Where(number, col).error(
                f"character {ascii(ch)} is not allowed (rule text is ASCII outside comments)"
            )
    if text.count("=") != 1:
        raise where.error("expected one assignment 'name = expression'")
    lhs, rhs = text.split("=")
    words = lhs.split()
    prefix = words[0] if len(words) == 2 and words[0] in PREFIXES else ""
    target = words[-1] if words else ""
    if len(words) != (2 if prefix else 1) or not IDENT.match(target) or target in RESERVED:
        raise where.error(f"'{lhs.strip()}' is not a valid assignment target")
    if prefix == "average" and (not target.endswith(NEXT) or target == PARAMETER + NEXT):
        raise where.error(f"'average' declares a state: 'average X{NEXT} = ...', not '{target}'")
    return prefix, target, rhs.strip(), len(lhs) + 1 + len(rhs) - len(rhs.lstrip())


def parse_rule(text: str, name: str = "user") -> Rule:
    """Parse a rule's text into a :class:`Rule` (see the module docstring for the grammar)."""
    if not isinstance(text, str):
        raise NmechError("rule text must be a string")
    if len(text) > MAX_TEXT:
        raise NmechError(f"rule text longer than {MAX_TEXT} characters")
    text = text.removeprefix("\ufeff")
    lines = [
        (n, parts)
        for n, raw in enumerate(text.splitlines(), start=1)
        if (parts := _split_line(raw, n)) is not None
    ]
    if not lines:
        raise NmechError("rule text has no assignment")
    if len(lines) > MAX_LINES:
        raise NmechError(f"rule has more than {MAX_LINES} assignments")
    targets = [target for _, (_, target, _, _) in lines]
    for number, (_, target, _, _) in lines:
        base = target.removesuffix(NEXT)
        if base in HYPERPARAMETERS:
            raise _Where(number, 0).error(
                f"'{base}' is a hyper-parameter (or the step count), not a state: it cannot be "
                "assigned"
            )
    carried = {t[: -len(NEXT)] for t in targets if t.endswith(NEXT)}
    vectors = {PARAMETER, *targets, *carried, *(c + "_prev" for c in carried)}
    body: list[Assignment] = []
    first_step: list[Assignment] = []
    averages: list[str] = []
    assigned: set[str] = set()
    for number, (prefix, target, rhs, column) in lines:
        where = _Where(number, column)
        try:
            tree = ast.parse(rhs, mode="eval")
        except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
            col = getattr(exc, "offset", None) or 1
            raise _Where(number, column + col - 1).error("syntax error") from None
        try:
            expr = _Converter(where, vectors).convert(tree.body)
        except RecursionError:
            raise where.error("expression too deeply nested") from None
        used = {str(s) for s in expr.free_symbols} & {t for t in targets if t not in carried}
        if target in used:
            raise where.error(f"'{target}' is used in its own definition")
        missing = sorted(u for u in used if u not in assigned)
        if missing:
            raise where.error(f"'{missing[0]}' is used before it is assigned")
        if prefix == "average":
            averages.append(target.removesuffix(NEXT))
        if prefix == "first":
            first_step.append(Assignment(target, expr))
        else:
            if target in assigned:
                raise where.error(f"'{target}' is assigned twice")
            assigned.add(target)
            body.append(Assignment(target, expr))
    rule = Rule(
        name=name,
        assignments=tuple(body),
        first_step=tuple(first_step),
        source=text,
        averages=tuple(averages),
    )
    unread = [s for s in rule.unread_states() if s not in averages]
    if unread:
        raise NmechError(
            f"state '{unread[0]}' is never read by theta's update: declare it an average of the "
            f"iterates ('average {unread[0]}{NEXT} = ...') to derive its flow, or remove it"
        )
    return rule
