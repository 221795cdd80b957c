"""nmech dynamics: LaTeX and JSON of a symmetry's dynamics; bad input is one line, exit 2."""

import json

import pytest

from nmech.cli import main


def test_json_has_continuous_and_exact_parts(capsys):
    assert (
        main(
            [
                "dynamics",
                "--rule",
                "heavy-ball",
                "--symmetry",
                "scale",
                "--weight-decay",
                "--format",
                "json",
            ]
        )
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "nmech.symmetry_dynamics/1"
    assert doc["exact"]["signals"] == {"step_sq": "\\langle \\Delta_n, J \\Delta_n \\rangle"}
    assert doc["continuous"]["ode_order"] == 2
    assert doc["continuous"]["omega2"] == "4*lam/(eta*(beta + 1))"


def test_latex_for_translation_under_gd(capsys):
    assert main(["dynamics", "--rule", "gd", "--symmetry", "translation", "--weight-decay"]) == 0
    out = capsys.readouterr().out
    assert "\\dot Q" in out and "signals: none" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["dynamics", "--rule", "gd", "--symmetry", "mirror"],
        ["dynamics", "--symmetry", "scale"],
        ["dynamics", "--rule", "gd", "--rule-file", "x", "--symmetry", "scale"],
    ],
)
def test_bad_input(argv, capsys):
    with pytest.raises(SystemExit) as info:
        code = main(argv)
        raise SystemExit(code)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nmech: error:")


@pytest.mark.parametrize(
    "argv",
    [
        ["--rule", "torch-sgd", "--weight-decay"],
        ["--rule", "heavy-ball", "--weight-decay"],
        ["--rule", "gd"],
        ["--rule", "adamw", "--weight-decay"],
    ],
)
def test_paper_that_would_change_nothing_is_refused(argv, capsys):
    """Issue 14: --paper drops the eta*lam^2 term of a one-step rule with weight decay; for any
    other rule it is a one-line error instead of a silent no-op."""
    code = main(["dynamics", *argv, "--symmetry", "scale", "--paper"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--paper" in err[0]


def test_paper_changes_gd_with_weight_decay(capsys):
    args = ["dynamics", "--rule", "gd", "--weight-decay", "--symmetry", "scale"]
    assert main([*args, "--format", "json"]) == 0
    full = json.loads(capsys.readouterr().out)["continuous"]["rate"]
    assert main([*args, "--paper", "--format", "json"]) == 0
    paper = json.loads(capsys.readouterr().out)["continuous"]["rate"]
    assert full != paper and "eta" in full and "eta" not in paper
