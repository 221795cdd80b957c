"""`nmech derive`: the documented JSON schema, LaTeX and text output, rule files, and bad input as
exit code 2 with one stderr line ``nmech: error: ...``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import sympy as sp

from nmech.cli import main
from nmech.derive import modified_equation, rules
from nmech.derive.algebra import trees as T
from nmech.derive.symbols import HYPERPARAMETERS

TORCH_TEXT = "v_next = beta*v + grad(theta) + lam*theta\ntheta_next = theta - eta*v_next\n"
TERM_KEYS = {
    "order",
    "coefficient",
    "coefficient_latex",
    "differential",
    "differential_latex",
    "tree",
}


def derive(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["derive", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def tree_from_json(value) -> T.Tree:
    if value == "grad":
        return T.GRAD
    if isinstance(value, str):
        return T.leaf(value)
    return T.node(tree_from_json(c) for c in value)


def terms_from_json(doc: dict) -> list[dict]:
    out: list[dict] = [{} for _ in range(doc["order"] + 1)]
    for term in doc["terms"]:
        coefficient = sp.sympify(term["coefficient"], locals=dict(HYPERPARAMETERS))
        out[term["order"]][tree_from_json(term["tree"])] = coefficient
    return out


def assert_same_terms(doc: dict, expected) -> None:
    got = terms_from_json(doc)
    assert len(got) == len(expected)
    for mine, theirs in zip(got, expected, strict=True):
        assert set(mine) == set(theirs)
        for t in mine:
            assert sp.simplify(mine[t] - theirs[t]) == 0, t


# ------------------------------------------------------------------ output
def test_json_schema_gd_order_2(capsys):
    code, out, err = derive(capsys, "gd", "--order", "2", "--format", "json")
    assert code == 0 and err == ""
    doc = json.loads(out)
    assert doc["schema"] == "nmech.modified_equation/1"
    assert doc["rule"] == "gd"
    assert doc["order"] == 2
    assert doc["variable"] == "eta"
    assert isinstance(doc["terms"], list) and len(doc["terms"]) == 4
    for term in doc["terms"]:
        assert TERM_KEYS <= set(term)
        assert isinstance(term["order"], int) and 0 <= term["order"] <= 2
    by_differential = {t["differential"]: t for t in doc["terms"]}
    assert by_differential["∇L"]["coefficient"] == "-1"
    assert by_differential["∇L"]["tree"] == "grad"
    assert by_differential["∇²L∇L"]["coefficient"] == "-1/2"
    assert by_differential["∇²L∇L"]["tree"] == ["grad"]
    assert by_differential["∇³L[∇L, ∇L]"]["coefficient"] == "-1/12"
    assert by_differential["∇³L[∇L, ∇L]"]["tree"] == ["grad", "grad"]
    assert by_differential["∇²L∇²L∇L"]["coefficient"] == "-1/3"
    assert by_differential["∇²L∇²L∇L"]["tree"] == [["grad"]]
    assert_same_terms(doc, modified_equation(rules.gd(), 2).terms)
    block = doc["modified_loss"]
    assert block["exists_through_order"] == 1
    assert block["obstruction_order"] == 2
    assert "\\left\\|\\nabla L\\right\\|^2" in block["latex"]


def test_json_heavy_ball_weight_decay(capsys):
    code, out, _ = derive(capsys, "heavy-ball", "--weight-decay", "--format", "json")
    assert code == 0
    doc = json.loads(out)
    assert doc["rule"] == "heavy-ball+wd" and doc["order"] == 1
    assert "theta" in [t["tree"] for t in doc["terms"]]
    assert_same_terms(doc, modified_equation(rules.heavy_ball(weight_decay=True), 1).terms)
    assert doc["modified_loss"]["obstruction_order"] is None


def test_latex_output(capsys):
    code, out, err = derive(capsys, "gd", "--order", "2", "--format", "latex")
    assert code == 0 and err == ""
    assert "\\nabla^2 L" in out
    assert "\\dot\\theta = -\\nabla L" in out
    assert "\\tilde L = L + \\eta" in out
    assert "no modified loss at order 2" in out


def test_default_format_is_latex(capsys):
    code, out, _ = derive(capsys, "nesterov")
    assert code == 0
    assert "\\dot\\theta" in out and "\\nabla^2 L" in out


def test_text_output(capsys):
    code, out, _ = derive(capsys, "heavy-ball", "--format", "text")
    assert code == 0
    assert out.startswith("heavy-ball: dθ/dt =")
    assert "a modified loss exists through order 1" in out


def test_rule_file_torch_text(capsys, tmp_path):
    path = tmp_path / "torch_sgd.rule"
    path.write_text("# torch.optim.SGD with weight decay\n" + TORCH_TEXT, encoding="utf-8")
    code, out, err = derive(capsys, "--rule-file", str(path), "--order", "1", "--format", "json")
    assert code == 0 and err == ""
    doc = json.loads(out)
    assert doc["rule"] == "torch_sgd"
    assert_same_terms(doc, modified_equation(rules.heavy_ball(weight_decay=True), 1).terms)
    code, out, _ = derive(capsys, "--rule-file", str(path))
    assert code == 0 and "\\nabla^2 L" in out


def test_torch_sgd_builtin(capsys):
    code, out, _ = derive(capsys, "torch-sgd", "--format", "json")
    assert code == 0
    assert_same_terms(json.loads(out), modified_equation(rules.heavy_ball(), 1).terms)


# ------------------------------------------------------------------ bad input
BAD_RULES = {
    "unknown_function": ("theta_next = theta - eta*foo(theta)", "unknown function 'foo'"),
    "abs": ("theta_next = theta - eta*abs(grad(theta))", "'abs' is not smooth"),
    "sign": ("theta_next = theta - eta*sign(grad(theta))", "'sign' is not smooth"),
    "max": ("theta_next = theta - eta*max(theta, grad(theta))", "'max' is not smooth"),
    "no_theta_next": ("v_next = beta*v + grad(theta)\n", "never assigns 'theta_next'"),
    "import": ("theta_next = __import__('os')", "'__import__'"),
    "attribute": ("theta_next = theta.real", "Attribute"),
    "lambda": ("theta_next = lambda: theta", "Lambda"),
    "subscript": ("theta_next = theta[0]", "Subscript"),
    "comprehension": ("theta_next = [t for t in theta]", "ListComp"),
    "string": ("theta_next = 'theta'", "not a number"),
    "no_slow_flow": ("theta_next = theta - grad(theta)", "does not vanish"),
    "empty": ("", "no assignment"),
}


@pytest.mark.parametrize("case", list(BAD_RULES))
def test_bad_rule_file_exits_2_with_one_line(capsys, tmp_path, case):
    text, expected = BAD_RULES[case]
    path = tmp_path / "bad.rule"
    path.write_text(text, encoding="utf-8")
    code, out, err = derive(capsys, "--rule-file", str(path))
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("nmech: error: ")
    assert expected in lines[0]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["gd", "--order", "1000"], "outside the supported range"),
        (["gd", "--order", "-1"], "outside the supported range"),
        ([], "exactly one of"),
        (["gd", "--rule-file", "x.rule"], "exactly one of"),
        (["--rule-file", "/nonexistent/dir/x.rule"], "does not exist"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(capsys, argv, expected):
    code, out, err = derive(capsys, *argv)
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("nmech: error: ") and expected in lines[0]


def test_non_utf8_rule_file(capsys, tmp_path):
    path = tmp_path / "latin1.rule"
    path.write_bytes("theta_next = theta - eta*grad(theta) # é\n".encode("latin-1"))
    code, _, err = derive(capsys, "--rule-file", str(path))
    assert code == 2 and err.startswith("nmech: error: ") and "UTF-8" in err
    assert len(err.splitlines()) == 1


def test_rule_file_is_a_directory(capsys, tmp_path):
    code, _, err = derive(capsys, "--rule-file", str(tmp_path))
    assert code == 2 and err.startswith("nmech: error: ") and len(err.splitlines()) == 1


def test_subprocess_exit_code_and_stderr(tmp_path):
    """The real command line: exit status 2 and exactly one stderr line, no traceback; the good
    file next to it works."""
    bad = tmp_path / "bad.rule"
    bad.write_text("theta_next = theta - eta*grad(theta).real\n", encoding="utf-8")
    good = tmp_path / "good.rule"
    good.write_text(TORCH_TEXT, encoding="utf-8")
    command = [sys.executable, "-m", "nmech.cli", "derive", "--rule-file"]
    result = subprocess.run([*command, str(bad)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("nmech: error: rule line 1, column ")
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
    result = subprocess.run(
        [*command, str(good), "--format", "json"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["schema"] == "nmech.modified_equation/1"


def test_argparse_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as info:
        main(["derive", "gd", "--order", "two"])
    assert info.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("nmech: error: ")
