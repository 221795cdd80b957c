"""nmech demo never replaces a validation run or an unfinished flow run it did not make."""

from __future__ import annotations

import hashlib
import json

from nmech.cli import main


def test_demo_refuses_a_folder_holding_another_run(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    run_file = out / "run.json"
    run_file.write_text(json.dumps({"preset": {"name": "paper-vgg16-bn"}}))
    before = hashlib.sha256(run_file.read_bytes()).hexdigest()
    argv = ["demo", "--order", "1", "--skip-flow", "--out", str(out)]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # refused before any derivation ran
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "holds another validation run" in err[0]
    assert hashlib.sha256(run_file.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in out.iterdir()) == ["run.json"]


def test_demo_prints_the_derivations_in_latex(capsys):
    """The main job's derivations in LaTeX: GD's order-1 term −(η/2)∇²L∇L and heavy ball's
    modified loss (known formulas), Nesterov's flow, the scale symmetry's kernels with their
    legend; no flow check or validation run."""
    assert main(["demo", "--order", "1", "--skip-flow", "--skip-validation"]) == 0
    out = capsys.readouterr().out
    for name in ("gd", "heavy-ball", "nesterov"):
        assert f"% {name}, order 1" in out
    assert "-\\frac{1}{2}\\,\\nabla^2 L\\,\\nabla L" in out  # GD: -(eta/2) H grad L
    # heavy ball's modified loss L + eta (1 + beta) / (4 (1 - beta)^2) |grad L|^2
    assert "\\frac{\\beta + 1}{4 \\left(1 - \\beta\\right)^{2}}" in out
    assert "\\Gamma$, $\\omega$ the damping rate" in out  # the dynamics' kernels, defined


def _partial(folder, rule="gd", etas=(0.1, 0.05, 0.025), samples=500):
    folder.mkdir()
    doc = {"rule": rule, "etas": list(etas), "settings": {"samples": samples}}
    (folder / "flow.partial.json").write_text(json.dumps(doc))
    return folder / "flow.partial.json"


def test_demo_refuses_a_folder_holding_another_unfinished_flow_run(tmp_path, capsys):
    """An interrupted `nmech flow` of another rule (or η, or sample count), or an unreadable
    one, in --flow-out is kept: one line, exit 2, before any work; the demo's own interrupted
    flow run is the one it may replace."""
    from nmech.cli.demo import _refuse_other_flow

    for i, other in enumerate(
        [dict(rule="heavy-ball"), dict(etas=(0.2, 0.1)), dict(samples=1797), None]
    ):
        folder = tmp_path / f"flow{i}"
        partial = _partial(folder, **(other or {}))
        if other is None:
            partial.write_text("{not json")
        before = partial.read_bytes()
        argv = ["demo", "--skip-validation", "--flow-out", str(folder)]
        assert main(argv) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        err = captured.err.strip().splitlines()
        assert len(err) == 1 and "holds another, unfinished flow run" in err[0], err
        assert partial.read_bytes() == before
    _refuse_other_flow(_partial(tmp_path / "own").parent)  # the demo's own: no error
