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
    assert "\\dot\\theta &= -\\nabla L \\\\\n&\\quad + \\eta\\left(" in out  # display math
    assert "\\tilde L &= L" in out
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


@pytest.mark.parametrize("name", ["normalized-gd", "sam", "clip-gd"])
def test_norm_builtins(capsys, name):
    code, out, _ = derive(capsys, name, "--format", "json")
    assert code == 0
    doc = json.loads(out)
    leading = [row for row in doc["terms"] if row["order"] == 0]
    if name == "sam":
        assert [row["tree"] for row in leading] == ["grad"]
    else:
        assert [row["tree"] for row in leading] == [
            {"scaled": [{"norm": ["grad"], "power": -1}], "tree": "grad"}
        ]
    assert "curl test" in doc["modified_loss"]["verdict"]


# ------------------------------------------------------------------ bad input
BAD_RULES = {
    "unknown_function": ("theta_next = theta - eta*foo(theta)", "unknown function 'foo'"),
    "abs": ("theta_next = theta - eta*abs(grad(theta))", "'abs' is not smooth"),
    "sign_of_vanishing": (
        "m_next = beta*m\ntheta_next = theta - eta*(sign(m_next) + grad(theta))",
        "vanishes at eta = 0",
    ),
    "norm_of_vanishing": (
        "theta_next = theta - eta*grad(theta)/norm(grad(theta + eta*theta) - grad(theta))",
        "vanishes at eta = 0",
    ),
    "norm_alone": ("theta_next = theta - eta*norm(grad(theta))", "can only multiply a vector"),
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
    "unread_state": (
        "theta_next = theta - eta*grad(theta)\nphi_next = gamma*phi + (1 - gamma)*theta_next",
        "state 'phi' is never read by theta's update",
    ),
    "average_of_theta": ("average theta_next = theta - eta*grad(theta)", "'average' declares"),
    "average_temporary": (
        "theta_next = theta - eta*grad(theta)\naverage y = theta_next",
        "'average' declares a state",
    ),
    "not_an_average": (
        "theta_next = theta - eta*grad(theta)\naverage w_next = gamma*w + grad(theta)",
        "does not tend to theta",
    ),
    "uniform_average": (
        "theta_next = theta - eta*grad(theta)\n"
        "average w_next = (1 - 1/(step + 1))*w + theta_next/(step + 1)",
        "no autonomous modified equation",
    ),
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
        (["heavy-ball", "--lookahead", "2"], "no X_prev"),
        (["gd", "--lookahead", "0"], "k must be an integer in 1..16"),
        (["minibatch", "--batches", "2", "--ema"], "apply to a rule"),
        (["schedule-free", "--weight-decay"], "schedule-free takes no --weight-decay"),
        (["schedule-free", "--ema"], "declares 2 average(s)"),
        (["gd", "--inverse", "--order", "0"], "outside the supported range 1..4"),
        (["gd", "--inverse", "--order", "5"], "outside the supported range 1..4"),
        (["gd", "--inverse", "--target", "flow"], "unknown target 'flow'"),
        (["gd", "--inverse", "--target", "regularised:"], "unknown target"),
        (["gd", "--inverse", "--target", "regularised:2**99"], "not a decimal or a fraction"),
        (["gd", "--inverse", "--target", "regularised:1/0"], "not a decimal or a fraction"),
        (["gd", "--target", "gradient-flow"], "belong to --inverse"),
        (["gd", "--format", "rule"], "belong to --inverse"),
        (["gd", "--inverse", "--format", "rule", "--standalone"], "--standalone is for LaTeX"),
        (["adam", "--inverse"], "needs a leading flow -s∇L"),
        (["gd", "--weight-decay", "--inverse"], "needs a leading flow -s∇L"),
        (["minibatch", "--inverse", "--batches", "2"], "--inverse needs a rule"),
        (["schedule-free", "--inverse"], "--inverse corrects a rule's own flow"),
        (["gd", "--lookahead", "2", "--inverse"], "--inverse corrects a rule's own flow"),
        (["clip-gd", "--weight-decay"], "not offered for clip-gd"),
        (["normalized-gd", "--inverse"], "needs a leading flow -s∇L"),
        (["sam", "--inverse"], "evaluates 2 gradients"),
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


# ------------------------------------------------------------------ issue 16 / no silent flags
def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("nmech: error: "), err
    return lines[0]


def test_rule_file_kinds_are_named(capsys, tmp_path):
    """A directory, a FIFO and a device are not reported as missing files."""
    import os

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for path, expected in (
        (tmp_path, "is a directory"),
        (fifo, "is not a regular file"),
        ("/dev/zero", "is not a regular file"),
        (tmp_path / "missing.rule", "does not exist"),
    ):
        code, out, err = derive(capsys, "--rule-file", str(path))
        assert code == 2 and out == "" and expected in one_error_line(err)


def test_rule_file_with_a_byte_order_mark(capsys, tmp_path):
    path = tmp_path / "bom.rule"
    path.write_bytes(b"\xef\xbb\xbftheta_next = theta - eta*grad(theta)\n")
    code, out, _ = derive(capsys, "--rule-file", str(path), "--format", "text")
    assert code == 0 and "dθ/dt = (-∇L)" in out


def test_file_name_cannot_inject_latex_lines(capsys, tmp_path):
    path = tmp_path / "evil\n\\input{x}.rule"
    path.write_text("theta_next = theta - eta*grad(theta)\n", encoding="utf-8")
    code, out, _ = derive(capsys, "--rule-file", str(path))
    assert code == 0
    assert not any(line.startswith("\\input") for line in out.splitlines())
    assert out.splitlines()[0] == "% evil__input_x_"  # the name, made safe, on its one line


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--weight-decay"], "--weight-decay applies to the built-in rules"),
        (["--dampening"], "--dampening applies to the built-in rules"),
        (["--torch-nesterov"], "--torch-nesterov applies to the built-in rules"),
    ],
)
def test_builtin_flags_with_a_rule_file_are_refused(capsys, tmp_path, argv, expected):
    path = tmp_path / "gd.rule"
    path.write_text("theta_next = theta - eta*grad(theta)\n", encoding="utf-8")
    code, out, err = derive(capsys, "--rule-file", str(path), *argv)
    assert code == 2 and out == "" and expected in one_error_line(err)


def test_sde_needs_replacement(capsys):
    code, out, err = derive(capsys, "minibatch", "--batches", "2", "--format", "sde")
    assert code == 2 and out == "" and "add --replacement" in one_error_line(err)
    code, out, _ = derive(
        capsys, "minibatch", "--batches", "2", "--replacement", "--format", "sde-json"
    )
    assert code == 0 and "nmech.minibatch_sde/1" in out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--max-seconds", "nan"], "--max-seconds must be a finite number in"),
        (["--max-seconds", "inf"], "--max-seconds must be a finite number in"),
        (["--max-seconds", "-1"], "--max-seconds must be a finite number in"),
        (["--max-memory", "0"], "--max-memory must be a finite number of MiB"),
        (["--max-memory", "nan"], "--max-memory must be a finite number of MiB"),
    ],
)
def test_guard_values(capsys, argv, expected):
    code, out, err = derive(capsys, "gd", *argv)
    assert code == 2 and out == "" and expected in one_error_line(err)


def test_long_derivation_is_refused_early(capsys):
    """Nesterov at order 12 would take far longer than 20 s: refused from the levels' growth
    well before the limit, with one line that says why."""
    import time

    start = time.monotonic()
    code, out, err = derive(capsys, "nesterov", "--order", "12", "--max-seconds", "20")
    line = one_error_line(err)
    assert code == 2 and out == "" and "refused" in line and "--max-seconds 20" in line
    assert time.monotonic() - start < 20


def test_memory_guard_stops_with_one_line(capsys):
    code, out, err = derive(capsys, "gd", "--order", "12", "--max-memory", "1")
    assert code == 2 and out == "" and "--max-memory 1" in one_error_line(err)


def _nmech(*argv: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "nmech.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def test_sigterm_stops_a_derivation_with_one_line():
    import signal
    import time

    proc = _nmech("derive", "gd", "--order", "12", "--max-seconds", "0")
    time.sleep(4)  # importing or deriving: the handler is installed first thing
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.strip() == "nmech: terminated (SIGTERM)" and out == ""


def test_output_into_a_closed_pipe_prints_no_traceback():
    """`nmech derive ... | head -1`: the reader goes away; no BrokenPipeError traceback."""
    proc = _nmech("derive", "gd", "--order", "6", "--format", "json")
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    proc.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert proc.returncode in (0, 141)


def test_average_in_a_rule_file_gives_its_flow(capsys, tmp_path):
    """A declared average is what is derived (not θ's flow, silently): the same result as
    --ema on the built-in, and as the library's averaged_equation."""
    path = tmp_path / "ema.rule"
    path.write_text(
        "theta_next = theta - eta*grad(theta)\n"
        "average avg_next = gamma*avg + (1 - gamma)*theta_next\n",
        encoding="utf-8",
    )
    code, from_file, _ = derive(
        capsys, "--rule-file", str(path), "--order", "2", "--format", "json"
    )
    assert code == 0
    code, builtin, _ = derive(capsys, "gd", "--ema", "--order", "2", "--format", "json")
    assert code == 0
    file_doc, builtin_doc = json.loads(from_file), json.loads(builtin)
    assert file_doc["schema"] == "nmech.averaged_equation/1" and file_doc["average"] == "avg"
    assert file_doc["terms"] == builtin_doc["terms"]
    assert any("gamma" in t["coefficient"] for t in file_doc["terms"])  # the η² term


def test_lookahead_and_schedule_free_text(capsys):
    code, out, _ = derive(capsys, "gd", "--lookahead", "3", "--format", "text")
    assert code == 0
    assert "lookahead(gd, k=3), one outer step taking time eta" in out
    assert "L̃ = L + η·((3*rho - 2)/4·‖∇L‖²)" in out
    code, out, _ = derive(capsys, "schedule-free", "--format", "text")
    assert code == 0 and "dθ̄/dt = (-∇L)" in out and "the average x" in out


# ------------------------------------------------------------------ --inverse
@pytest.mark.parametrize(
    ("rule", "target"), [("gd", "gradient-flow"), ("heavy-ball", "regularised:0.25")]
)
def test_inverse_rule_feeds_back_into_rule_file(capsys, tmp_path, rule, target):
    """The corrected rule (--format rule) read back with --rule-file has the target as its
    modified equation through the order asked for, and leaves it at the next order."""
    code, text, _ = derive(
        capsys, rule, "--inverse", "--target", target, "--order", "2", "--format", "rule"
    )
    assert code == 0
    path = tmp_path / "corrected.rule"
    path.write_text(text, encoding="utf-8")
    code, out, _ = derive(capsys, "--rule-file", str(path), "--order", "3", "--format", "json")
    assert code == 0
    got = terms_from_json(json.loads(out))
    s = 1 if rule == "gd" else 1 / (1 - HYPERPARAMETERS["beta"])
    c = 0 if target == "gradient-flow" else sp.Rational(1, 4)
    expected = [{T.GRAD: -s}, {T.node([T.GRAD]): -2 * c * s} if c else {}, {}]
    for mine, theirs in zip(got[:3], expected, strict=True):
        assert set(mine) == set(theirs)
        assert all(sp.simplify(mine[t] - theirs[t]) == 0 for t in mine)
    assert got[3], "the realisation leaves a defect at order 3"


def test_inverse_json_and_text(capsys):
    code, out, _ = derive(capsys, "gd", "--inverse", "--order", "1", "--format", "json")
    doc = json.loads(out)
    assert code == 0 and doc["schema"] == "nmech.modifying_rule/1" and doc["rate"] == "1"
    assert [(r["order"], r["coefficient"]) for r in doc["gradient"]] == [(0, "1"), (1, "-1/2")]
    assert set(doc["gradient"][1]) == TERM_KEYS
    code, out, _ = derive(capsys, "gd", "--inverse", "--format", "text")
    assert "G = (∇L) + η·(-1/2·∇²L∇L) + O(η^2)" in out
