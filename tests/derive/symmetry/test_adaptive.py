"""Adaptive rules: a and u read off the rule, the recursion's coefficients, the CLI and errors."""

import json

import pytest
import sympy as sp

from nmech.cli import main
from nmech.derive import rules, symmetry
from nmech.derive.symbols import eta, grad, lam, vector
from nmech.derive.symmetry import Symmetry, dynamics
from nmech.derive.symmetry.adaptive import adaptive_recursion, adaptive_step, is_adaptive
from nmech.errors import NmechError


def test_decay_factor_and_direction_are_read_off_the_rule():
    adamw = adaptive_step(rules.adamw(bias_correction=False))
    assert sp.simplify(adamw.a - (1 - eta * lam)) == 0
    m, v = vector("m_next"), vector("v_next")
    assert sp.simplify(adamw.u - m / (sp.sqrt(v) + sp.Symbol("eps", positive=True))) == 0
    assert adaptive_step(rules.adam(weight_decay=True)).a == 1  # coupled: decay inside u
    sgd = adaptive_step(rules.torch_sgd(weight_decay=True))
    assert sgd.a == 1 and sgd.u == vector("v_next")
    assert is_adaptive(rules.adamw()) and not is_adaptive(rules.torch_sgd())


def test_adagrad_and_amsgrad_directions():
    th, eps = vector("theta"), sp.Symbol("eps", positive=True)
    ada = adaptive_step(rules.adagrad(weight_decay=True))
    expected = (grad(th) + lam * th) / (sp.sqrt(vector("v_next")) + eps)
    assert ada.a == 1 and sp.simplify(ada.u - expected) == 0
    ams = adaptive_step(rules.adamw(amsgrad=True, bias_correction=False))
    assert sp.simplify(ams.u - vector("m_next") / (sp.sqrt(vector("vmax_next")) + eps)) == 0
    body = {a.target: a.expr for a in rules.adamw(amsgrad=True).assignments}
    assert body["vmax_next"] == sp.Max(vector("vmax"), vector("v_next"))


def test_recursion_coefficients_are_the_bilinear_expansion():
    a = 1 - eta * lam
    rec = adaptive_recursion(adaptive_step(rules.adamw()), symmetry.scale())
    assert rec.signals == ("theta_u", "u_sq")
    assert sp.simplify(rec.A[0, 0] - a**2) == 0
    assert sp.simplify(rec.B[0, 0] + 2 * a * eta) == 0 and rec.B[0, 1] == eta**2
    tr = adaptive_recursion(adaptive_step(rules.adamw()), symmetry.translation())
    assert tr.signals == ("c_u",) and sp.simplify(tr.A[0, 0] - a) == 0 and tr.B[0, 0] == -eta


def test_recursion_at_numbers_and_missing_values():
    dyn = dynamics.derive(rules.adamw(), symmetry.scale())
    rec = dyn.recursion_at({"eta": 0.1, "lam": 0.5})
    assert rec.A[0, 0] == sp.Rational(9025, 10000)
    with pytest.raises(NmechError, match="lam"):
        dyn.recursion_at({"eta": 0.1})


def test_both_parts_of_the_generator_need_a_equal_one():
    both = Symmetry("both", has_J=True, has_c=True)
    with pytest.raises(NmechError, match="a = 1"):
        adaptive_recursion(adaptive_step(rules.adamw()), both)
    rec = adaptive_recursion(adaptive_step(rules.adam()), both)
    assert rec.signals == ("theta_u", "u_sq", "c_u") and rec.A[0, 0] == 1


def test_cli_json_and_latex(capsys):
    argv = ["dynamics", "--rule", "adamw", "--weight-decay", "--symmetry", "scale"]
    assert main([*argv, "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert list(doc["exact"]["signals"]) == ["theta_u", "u_sq"]
    assert doc["update"]["a"] == "-eta*lam + 1"
    assert doc["continuous"]["rate"] == "2*lam"
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "\\langle J\\theta_n, u_n \\rangle" in out and "u_n = " in out
