"""The rule language: valid rules parse to the built-ins' expressions, bad input is refused with a
one-line NmechError naming the problem and its position, and nothing in the text is executed."""

from __future__ import annotations

import builtins
import contextlib
import subprocess
import sys
from unittest import mock

import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from nmech.derive import modified_equation, rules
from nmech.derive.rules import Rule
from nmech.derive.symbols import beta, eta, grad, lam, sign, vector
from nmech.errors import NmechError

TORCH_TEXT = "v_next = beta*v + grad(theta) + lam*theta\ntheta_next = theta - eta*v_next"

theta, v, v_next, y, theta_prev = sp.symbols("theta v v_next y theta_prev")


def refused(text: str) -> str:
    """The NmechError message for ``text`` (and that it is one line)."""
    with pytest.raises(NmechError) as info:
        rules.parse(text)
    message = str(info.value)
    assert message and "\n" not in message, repr(message)
    return message


# ------------------------------------------------------------------ valid rules
def test_error_column_counts_the_spaces_after_the_equals_sign():
    """Issue 16: the column of an error inside the right-hand side is the column in the line."""
    # 'grad' (where the attribute access starts) is the 29th / 26th character of the line
    assert refused("theta_next =    theta - eta*grad(theta).real").startswith(
        "rule line 1, column 29:"
    )
    assert refused("theta_next = theta - eta*grad(theta).real").startswith(
        "rule line 1, column 26:"
    )


def test_byte_order_mark_is_accepted():
    rule = rules.parse("\ufefftheta_next = theta - eta*grad(theta)\n")
    assert rule.assignments[0].target == "theta_next"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("theta_next = theta - eta**beta*grad(theta)", "not a rational function of eta"),
        ("theta_next = theta - eta*grad(theta)*(1 + 2**step)", "does not vanish"),
        ("theta_next = theta - eta*grad(theta)*theta**step", "exponent of a scalar only"),
        ("theta_next = theta - eta*grad(theta)*(1 - tau**step)", "does not vanish"),
        ("theta_next = theta - eta/(1 - eta)**-1*grad(theta)/eta**2", "singular at eta = 0"),
    ],
)
def test_rules_that_gave_silent_wrong_answers_are_refused(text, expected):
    """Issue 16: each of these gave dθ/dt = 0 or dropped a growing 2**step term, exit 0."""
    rule = rules.parse(text)
    with pytest.raises(NmechError, match=expected) as info:
        modified_equation(rule, 1)
    assert "\n" not in str(info.value)


def test_vanishing_bias_corrections_are_still_dropped():
    """b**step with |b| < 1 (a number, or a decay parameter) is the transient that vanishes."""
    text = "theta_next = theta - eta*grad(theta)/(1 - beta1**step) + eta*(1/2)**step*theta"
    me = modified_equation(rules.parse(text), 1)
    assert me.terms == modified_equation(rules.gd(), 1).terms


def test_torch_text_parses_to_torch_sgd_assignments():
    parsed = rules.parse(TORCH_TEXT)
    torch = rules.torch_sgd(momentum=True, weight_decay=True)
    assert [a.target for a in parsed.assignments] == ["v_next", "theta_next"]
    assert [a.target for a in parsed.assignments] == [a.target for a in torch.assignments]
    for mine, theirs in zip(parsed.assignments, torch.assignments, strict=True):
        assert sp.expand(mine.expr - theirs.expr) == 0, (mine, theirs)
    assert parsed.states == ("v",)
    assert parsed.parameters() == frozenset({beta, eta, lam})


def test_gd_text_with_comments_and_blank_lines():
    text = "# gradient descent\n\n   theta_next = theta - eta*grad(theta)   # the step\n\n"
    rule = rules.parse(text, name="mine")
    assert rule.name == "mine"
    assert len(rule.assignments) == 1
    assert rule.assignments[0].expr == theta - eta * grad(theta)
    assert rule.source == text


def test_temporaries_and_implicit_previous_state():
    text = "y = theta + beta*(theta - theta_prev)\ntheta_next = y - eta*grad(y)"
    rule = rules.parse(text)
    assert rule.states == ("theta_prev",)
    assert rule.assignments[0].expr == theta + beta * (theta - theta_prev)
    assert rule.assignments[1].expr == y - eta * grad(y)
    # same flow as the built-in Nesterov rule
    mine, builtin = modified_equation(rule, 1), modified_equation(rules.nesterov(), 1)
    assert mine.terms == builtin.terms


def test_first_step_override():
    text = (
        "v_next = beta*v + grad(theta)\nfirst v_next = grad(theta)\ntheta_next = theta - eta*v_next"
    )
    rule = rules.parse(text)
    assert [a.target for a in rule.first_step] == ["v_next"]
    assert rule.first_step[0].expr == grad(theta)
    assert [a.expr for a in rule.step(first=True)][0] == grad(theta)
    assert [a.expr for a in rule.step(first=False)][0] == beta * v + grad(theta)


def test_numbers_are_exact_rationals():
    rule = rules.parse("theta_next = theta - 0.1*eta*grad(theta) + 2**-3*eta*theta")
    expr = rule.assignments[0].expr
    assert expr == theta - sp.Rational(1, 10) * eta * grad(theta) + sp.Rational(1, 8) * eta * theta


def test_sign_is_the_engines_regional_sign():
    """sign(x) parses to the sign whose derivative is 0 (a region of fixed signs), not
    sympy's (2δ(x))."""
    rule = rules.parse("c = beta1*m + (1 - beta1)*grad(theta)\ntheta_next = theta - eta*sign(c)")
    (s,) = rule.assignments[1].expr.atoms(sp.sign)
    assert isinstance(s, sign) and s.args == (vector("c"),)
    assert sp.diff(s.args[0] * s, vector("c")) == s


def test_user_named_constant_is_a_parameter():
    rule = rules.parse("theta_next = theta - c*eta*grad(theta)")
    assert {str(s) for s in rule.parameters()} == {"c", "eta"}


# ------------------------------------------------------------------ refused input
BAD = [
    ("theta_next = theta - eta*foo(theta)", "unknown function 'foo'"),
    ("theta_next = theta - eta*abs(grad(theta))", "'abs' is not smooth"),
    ("theta_next = theta - eta*sign(beta)", "sign of a constant or parameter"),
    ("theta_next = theta - eta*sign(grad(theta), theta)", "sign takes exactly one argument"),
    ("theta_next = theta - eta*max(theta, grad(theta))", "'max' is not smooth"),
    ("theta_next = theta - eta*relu(grad(theta))", "'relu' is not smooth"),
    ("theta_next = theta - eta*exp(theta, theta)", "exp takes exactly one argument"),
    ("theta_next = theta - eta*sqrt()", "sqrt takes exactly one argument"),
    ("v_next = beta*v + grad(theta)", "never assigns 'theta_next'"),
    ("theta_next = __import__('os')", "'__import__'"),
    ("theta_next = eval('theta')", "'eval'"),
    ("theta_next = theta.real", "Attribute"),
    ("theta_next = theta.__class__", "Attribute"),
    ("theta_next = lambda: theta", "Lambda"),
    ("theta_next = (lambda: theta)()", "plain function names"),
    ("theta_next = theta[0]", "Subscript"),
    ("theta_next = [t for t in theta]", "ListComp"),
    ("theta_next = theta + sum(t for t in theta)", "'sum'"),
    ("theta_next = 'theta'", "not a number"),
    ("theta_next = b'theta'", "not a number"),
    ("theta_next = f'{theta}'", "JoinedStr"),
    ("theta_next = theta if eta else theta", "IfExp"),
    ("theta_next = (theta, theta)", "Tuple"),
    ("theta_next = theta; import os", "syntax error"),
    ("theta_next = theta - eta*grad(theta, theta)", "exactly one argument"),
    ("theta_next = theta - eta*grad()", "exactly one argument"),
    ("theta_next = theta ** theta", "exponent must be a scalar"),
    ("theta_next = theta - eta*grad(theta)**100", "too large"),
    ("theta_next = theta - eta*grad(theta)/0", "division by zero"),
    ("theta_next = theta + 1e999*eta*theta", "out of range"),
    ("theta_next = _hidden", "not allowed"),
    ("theta_next = grad", "not allowed"),
    ("θ_next = theta", "is not allowed (rule text is ASCII"),
    ("theta_next = θ", "not allowed"),
    ("theta_next == theta", "one assignment"),
    ("theta_next = theta\ntheta_next = theta", "assigned twice"),
    ("theta_next = y - eta*grad(y)\ny = theta", "'y' is used before it is assigned"),
    ("first theta_next = theta", "never assigns 'theta_next'"),
    ("", "no assignment"),
    ("# nothing but a comment\n\n", "no assignment"),
    ("theta_next = theta\x00", "'\\x00' is not allowed"),
    # issue 16: look-alikes (NFKC would read them as eta / grad), self-reference, huge numbers,
    # functions of constants (exp(exp(exp(100))) overflowed, sin(exp(exp(40))) never ended),
    # hyper-parameters as states
    ("theta_next = theta - ｅｔａ*grad(theta)", "'\\uff45' is not allowed"),
    ("theta_next = theta - eta*𝐠𝐫𝐚𝐝(theta)", "is not allowed"),
    ("y = theta - eta*grad(y)\ntheta_next = y", "'y' is used in its own definition"),
    ("theta_next = theta_next - eta*grad(theta)", "used in its own definition"),
    ("theta_next = theta - eta*grad(theta)*" + "*".join(["(10**14)**64"] * 5), "too large"),
    ("theta_next = theta - eta*grad(theta)*exp(exp(exp(100)))", "exp of a constant"),
    ("theta_next = theta - eta*grad(theta)*sin(exp(exp(40)))", "of a constant"),
    ("theta_next = theta - sqrt(eta)*grad(theta)", "sqrt of a constant or parameter"),
    ("eta_next = eta/2\ntheta_next = theta - eta*grad(theta)", "'eta' is a hyper-parameter"),
    ("step_next = step\ntheta_next = theta - eta*grad(theta)", "not a state"),
    ("theta_next = " + "-" * 500 + "theta", "nested"),
    ("theta_next = " + "(" * 300 + "theta" + ")" * 300, "rule line 1"),
    ("theta_next = theta + eta*(" + "+".join(["theta"] * 600) + ")", "longer than"),
]


@pytest.mark.parametrize(("text", "expected"), BAD, ids=[b[0][:40] for b in BAD])
def test_bad_rule_text_is_refused_with_one_line(text, expected):
    message = refused(text)
    assert expected in message


def test_error_names_line_and_column():
    """1-based columns of the line ('foo' is its 26th character; the space after '=' counts)."""
    assert refused("theta_next = theta - eta*foo(theta)").startswith("rule line 1, column 26:")
    text = "# comment\nv_next = beta*v + grad(theta)\ntheta_next = theta - eta*abs(v_next)"
    assert refused(text).startswith("rule line 3, column 26:")
    assert refused("theta_next = theta.real").startswith("rule line 1, column 14:")


def test_non_string_rule_is_refused():
    with pytest.raises(NmechError):
        rules.parse(None)  # type: ignore[arg-type]
    with pytest.raises(NmechError):
        rules.parse(b"theta_next = theta")  # type: ignore[arg-type]


def test_oversized_text_is_refused():
    line = "theta_next = theta - eta*grad(theta)\n"
    assert "longer than" in refused("# x\n" * 6000 + line)
    many = "".join(f"t{i} = theta\n" for i in range(250)) + line
    assert "more than" in refused(many)


def test_power_tower_of_literals_does_not_hang():
    text = "theta_next = theta - eta*(((((999999**64)**64)**64)**64)**64)*grad(theta)"
    code = (
        "import sys\nfrom nmech.derive import rules\nfrom nmech.errors import NmechError\n"
        f"try:\n    rules.parse({text!r})\nexcept NmechError:\n    pass\n"
    )
    try:
        subprocess.run([sys.executable, "-c", code], timeout=4, check=True)
    except subprocess.TimeoutExpired:
        pytest.fail("parsing a power tower did not finish within 4 s")


# ------------------------------------------------------------------ properties
ALPHABET = [
    "theta", "v", "y", "theta_next", "v_next", "theta_prev", "first", "=", "grad", "(", ")",
    "+", "-", "*", "/", "**", "eta", "beta", "lam", "tau", "0", "1", "2", "0.5", "1e3", "#",
    "\n", " ", ",", ".", "[", "]", "'", ":", "lambda", "__import__", "abs", "real", "for",
    "in", "if", "else", "@", "%", ";", "\\", "{", "}", "θ", "\t", "\x00",
]  # fmt: skip

grammarish = st.lists(st.sampled_from(ALPHABET), max_size=40).map("".join)
unicode_text = st.text(max_size=200)

atoms = st.sampled_from(["theta", "v", "theta_prev", "eta", "beta", "lam", "1", "2", "0.5"])
expressions = st.recursive(
    atoms,
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["+", "-", "*", "/"]), inner).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
        inner.map(lambda e: f"grad({e})"),
        inner.map(lambda e: f"-{e}"),
    ),
    max_leaves=8,
)
rule_texts = st.tuples(expressions, expressions, st.booleans()).map(
    lambda t: (f"v_next = {t[0]}\n" if t[2] else "") + f"theta_next = theta + eta*{t[1]}"
)


def _sentinel(*args, **kwargs):
    raise AssertionError("rule text reached an evaluator")


@contextlib.contextmanager
def no_evaluation():
    """While parsing: any eval/exec, any string reaching sympy's parser or an import of a system
    module fails the test."""
    import sympy.parsing.sympy_parser as sympy_parser

    real_import = builtins.__import__

    def guarded_import(name, *args, **kwargs):
        if name.split(".")[0] in {"os", "subprocess", "shutil", "socket", "posix", "ctypes"}:
            raise AssertionError(f"rule text imported {name}")
        return real_import(name, *args, **kwargs)

    with (
        mock.patch.object(builtins, "eval", _sentinel),
        mock.patch.object(builtins, "exec", _sentinel),
        mock.patch.object(sympy_parser, "parse_expr", _sentinel),
        mock.patch.object(builtins, "__import__", guarded_import),
    ):
        yield


def test_guards_catch_evaluation():
    with no_evaluation(), pytest.raises(AssertionError, match="evaluator"):
        eval("1")
    with no_evaluation(), pytest.raises(AssertionError, match="evaluator"):
        sp.sympify("x + 1")
    with no_evaluation(), pytest.raises(AssertionError, match="imported"):
        __import__("os")


def _parse_or_refuse(text: str) -> Rule | None:
    try:
        with no_evaluation():
            rule = rules.parse(text)
    except NmechError as exc:
        assert str(exc) and "\n" not in str(exc)
        return None
    assert isinstance(rule, Rule)
    assert "theta_next" in [a.target for a in rule.assignments]
    return rule


FUZZ = settings(max_examples=150, deadline=1000)


@FUZZ
@given(text=grammarish)
def test_grammarish_text_parses_or_is_refused(text):
    _parse_or_refuse(text)


@FUZZ
@given(text=unicode_text)
def test_random_unicode_parses_or_is_refused(text):
    _parse_or_refuse(text)


@FUZZ
@given(prefix=grammarish, text=st.sampled_from([b[0] for b in BAD[:22]]))
def test_dangerous_fragments_are_refused_in_any_context(prefix, text):
    assert _parse_or_refuse(prefix + "\n" + text) is None


@settings(max_examples=40, deadline=5000)
@given(text=rule_texts)
def test_generated_rules_derive_or_are_refused(text):
    """Past the parser, the engine too answers a well-formed rule or a one-line NmechError."""
    rule = _parse_or_refuse(text)
    if rule is None:
        return
    try:
        me = modified_equation(rule, 1)
    except NmechError as exc:
        assert "\n" not in str(exc)
        return
    assert len(me.terms) == 2
