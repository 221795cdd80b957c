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
