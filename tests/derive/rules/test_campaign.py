"""The hostile-input campaign of issue 16, grown into the suite.

* A hypothesis grammar of rule texts (momentum buffers, look-ahead points, bias corrections,
  entry-wise quotients, powers of η, signs of gradients and of buffers (signSGD, signum, Lion:
  the loss's gradient keeps its sign at the point), global norms (normalised steps, SAM's
  normalised ascent point, powers of norms; the gradient does not vanish at the point), and
  corruptions: look-alike characters, attribute access,
  self-reference, huge numbers, functions of constants, growing b**step). The invariant, for
  every text: ``nmech derive --rule-file`` gives exactly one of a correct result -- its η⁰ and
  η¹ terms equal those of the independent coordinate route (:mod:`nmech.reference.naive`) on a
  small loss -- or one line ``nmech: error: …`` and exit 2, within a time cap.
* A table over every ``nmech derive`` / ``nmech dynamics`` option with nan, inf, huge,
  negative and wrong-type values: exit 2 and one line, never a traceback.
"""

from __future__ import annotations

import time

import pytest
import sympy as sp
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from nmech.cli import main
from nmech.derive import modified_equation, rules
from nmech.derive.algebra.concrete import ConcreteEvaluator
from nmech.derive.symbols import HYPERPARAMETERS
from nmech.reference.naive import naive_modified_field

x = sp.Symbol("x", real=True)
LOSS = x**3 / 6 + x**2 / 2 + 2 * x
POINT = {x: sp.Rational(3, 10)}
VALUES = {"beta": "1/3", "lam": "1/10", "tau": "1/5", "beta1": "1/2", "beta2": "3/5"}
VALUES |= {"eps": "1/10", "alpha": "1/2"}
TIME_CAP_S = 60.0

scalars = st.sampled_from(["beta", "lam", "(1 - beta)", "2", "0.5", "beta1", "tau"])
points = st.sampled_from(
    [
        "theta",
        "y",
        "theta + beta*(theta - theta_prev)",
        "theta + beta*eta*grad(theta)/norm(grad(theta))",
    ]
)
gradients = points.map(lambda p: f"grad({p})")
corruptions = st.sampled_from(
    [
        "ｅｔａ",  # full-width look-alike
        "grad(theta).real",
        "__import__('os')",
        "(10**14)**64*(10**14)**64*(10**14)**64*(10**14)**64*(10**14)**64",
        "exp(exp(exp(100)))",
        "sin(exp(exp(40)))",
        "2**step",
        "theta**step",
        "eta**beta",
        "grad(theta_next)",
        "1/(beta - beta)",
        "sqrt(eta)",
        "sign(beta)",
        "sign(theta - theta)",
        "sign(theta - theta_prev)",
        "sign(grad(theta), theta)",
        "norm(theta - theta)",
        "norm(beta)",
        "norm(grad(theta))",
        "norm(grad(theta), theta)",
        "norm(grad(theta))**beta",
    ]
)


@st.composite
def rule_texts(draw) -> str:
    lines = []
    uses_y = draw(st.booleans())
    if uses_y:
        lines.append(f"y = theta + {draw(scalars)}*(theta - theta_prev)")
    g = draw(gradients.filter(lambda p: uses_y or "y" not in p))
    direction = f"{g} + {draw(scalars)}*theta" if draw(st.booleans()) else g
    kinds = ["plain", "momentum", "adaptive", "bias", "sign", "signum", "normalised", "norm"]
    kind = draw(st.sampled_from(kinds))
    if kind == "momentum":
        lines.append(f"v_next = {draw(scalars)}*v + {direction}")
        step = "v_next"
    elif kind == "adaptive":
        lines.append(f"s_next = beta2*s + (1 - beta2)*{g}*{g}")
        step = f"({direction})/(sqrt(s_next) + eps)"
    elif kind == "bias":
        lines.append(f"m_next = beta1*m + (1 - beta1)*({direction})")
        step = "m_next/(1 - beta1**step)"
    elif kind == "sign":
        step = f"sign({direction})"
    elif kind == "signum":
        lines.append(f"m_next = beta*m + (1 - beta)*({direction})")
        step = f"sign({draw(st.sampled_from(['m_next', f'beta1*m + (1 - beta1)*{g}']))})"
    elif kind == "normalised":
        step = f"({direction})/norm({draw(st.sampled_from([g, direction]))})"
    elif kind == "norm":
        step = f"({direction})*norm({g})**{draw(st.sampled_from(['2', '(-3)', '1']))}"
    else:
        step = direction
    rate = draw(st.sampled_from(["eta", "eta", "eta*(1 + eta)", "eta/(1 + beta*eta)"]))
    update = f"theta_next = theta - {rate}*({step})"
    if draw(st.integers(0, 3)) == 0:  # a corruption somewhere in the update
        update += f" + eta*{draw(corruptions)}*theta"
    lines.append(update)
    return "\n".join(lines) + "\n"


def _field(me, order_values: dict) -> list[complex]:
    evaluator = ConcreteEvaluator(LOSS, [x])
    return [
        complex(sp.N(evaluator.vec(f)[0].xreplace({**POINT, **order_values}), 30)) for f in me.terms
    ]


def _check_against_coordinate_route(text: str) -> None:
    rule = rules.parse(text).after_transient()
    values = {
        HYPERPARAMETERS.get(k, sp.Symbol(k, real=True)): sp.Rational(v) for k, v in VALUES.items()
    }
    fixed = rule.with_values({s: v for s, v in values.items() if s in rule.parameters()})
    naive = naive_modified_field(fixed, 1, LOSS, [x], simplify=False)
    mine = _field(modified_equation(rule, 1), values)
    for k in (0, 1):
        theirs = complex(sp.N(naive[k][0].xreplace(POINT), 30))
        assert abs(mine[k] - theirs) <= 1e-12 * max(1.0, abs(theirs)), (text, k, mine, theirs)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(text=rule_texts())
@example(text="theta_next = theta - eta*(sign(grad(theta) + lam*theta))\n")  # signSGD-like
@example(  # Lion-like: the sign of a mix of the buffer and the gradient
    text="m_next = beta*m + (1 - beta)*(grad(theta))\n"
    "theta_next = theta - eta*(sign(beta1*m + (1 - beta1)*grad(theta)))\n"
)
@example(
    text="m_next = beta*m + (1 - beta)*(grad(theta))\ntheta_next = theta - eta*sign(m_next - grad(theta))\n"
)
@example(text="theta_next = theta - eta*grad(theta)/norm(grad(theta))\n")  # normalised GD
@example(  # SAM with its normalised ascent, rho = beta*eta
    text="theta_next = theta - eta*grad(theta + beta*eta*grad(theta)/norm(grad(theta)))\n"
)
@example(text="v_next = beta*v + grad(theta)\ntheta_next = theta - eta*v_next/norm(v_next)\n")
def test_rule_text_gives_a_correct_result_or_one_line(text, tmp_path_factory, capsys):
    path = tmp_path_factory.mktemp("campaign") / "rule.txt"
    path.write_text(text, encoding="utf-8")
    start = time.monotonic()
    code = main(["derive", "--rule-file", str(path), "--format", "json", "--max-seconds", "40"])
    out, err = capsys.readouterr()
    assert time.monotonic() - start < TIME_CAP_S, text
    if code == 0:
        assert err == "" and out.startswith("{"), text
        _check_against_coordinate_route(text)
    else:
        lines = err.splitlines()
        assert code == 2 and out == "", (text, code, err)
        assert len(lines) == 1 and lines[0].startswith("nmech: error: "), (text, err)


BAD_VALUES = ["nan", "inf", "-inf", "1e308", "-5", "abc", "", "0x10", "1e400"]


@pytest.mark.parametrize("value", BAD_VALUES)
@pytest.mark.parametrize(
    "argv",
    [
        ["derive", "gd", "--order"],
        ["derive", "gd", "--max-seconds"],
        ["derive", "gd", "--max-memory"],
        ["derive", "minibatch", "--batches"],
        ["derive", "--rule-file"],
        ["derive", "gd", "--format"],
        ["derive"],
        ["dynamics", "--symmetry", "scale", "--rule"],
        ["dynamics", "--rule", "gd", "--symmetry"],
        ["dynamics", "--rule", "gd", "--symmetry", "scale", "--format"],
        ["dynamics", "--symmetry", "scale", "--rule-file"],
    ],
    ids=lambda a: " ".join(a),
)
def test_every_option_with_bad_values_is_one_line(argv, value, capsys):
    """nan, inf, huge, negative, non-numeric and empty values of every option (and as a rule
    name): exit 2 with one line, never a traceback. A value that happens to be valid for the
    option (none of these is) would exit 0."""
    try:
        code = main([*argv, value])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert code == 2, (argv, value, code, out[:200])
    assert len(lines) == 1 and lines[0].startswith("nmech: error: "), (argv, value, err)
