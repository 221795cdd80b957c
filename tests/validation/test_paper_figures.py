"""nmech figures --paper: the three figures are drawn, each component really has its
symmetry, and Figure 4's modified flows follow the iterates better than the plain flows."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from nmech.cli import main
from nmech.derive import symmetry
from nmech.errors import NmechError
from nmech.validation.paper_figures import (
    QUADRATIC,
    Component,
    components,
    figure4_paths,
    modified_loss_function,
    w1,
    w2,
)


def test_paper_figures_are_written(tmp_path, capsys):
    assert main(["figures", "--paper", "--out", str(tmp_path)]) == 0
    for stem in ("figure2_vector_fields", "figure3_level_sets", "figure4_modified_flows"):
        assert (tmp_path / f"{stem}.png").stat().st_size > 20_000
        assert (tmp_path / f"{stem}.pdf").exists()
    assert "figure4_modified_flows.png" in capsys.readouterr().out
    assert main(["figures", "--out", str(tmp_path)]) == 2


def test_components_have_their_symmetry_and_q_is_conserved():
    """The engine's identities hold for each plotted loss; Q is constant along ξ's orbit
    of the gradient flow (checked by integrating −∇L)."""
    from nmech.numerics.flows import gradient_function, integrate

    for comp in components():
        comp.check(np.array([[0.7, -1.2], [1.5, 0.4]]))
        grad = gradient_function(comp.loss, [w1, w2])
        path = integrate(lambda th, g=grad: -g(th), np.array([1.2, 0.5]), np.linspace(0, 2, 50))
        q = comp.conserved(path)
        assert np.ptp(q) < 1e-9 * (1 + abs(q[0])), comp.title
        assert np.linalg.norm(path[-1] - path[0]) > 0.05  # the flow really moved


def test_a_loss_without_the_symmetry_is_refused():
    wrong = Component("wrong", symmetry.scale(), (w1 - 1) ** 2 + w2**2, np.eye(2), [0, 0])
    with pytest.raises(NmechError, match="breaks the scale identity"):
        wrong.check(np.array([[0.5, 0.5]]))


def test_figure4_modified_flows_track_the_iterates():
    """GD (order 1) and heavy ball (order 2): the modified flow at the iterates' times is
    at least twice closer to them than the plain flow; L̃ = L + (η/4)‖∇L‖² exactly."""
    paths = figure4_paths(samples=10)
    for name in ("gd", "heavy_ball"):
        p = paths[name]
        modified = np.abs(p["iterates"] - p["modified_at_steps"]).max()
        plain = np.abs(p["iterates"] - p["plain_at_steps"]).max()
        assert modified < plain / 2, (name, modified, plain)
    theta = np.array([0.3, -0.7])
    g = np.array([float(sp.diff(QUADRATIC, x).subs({w1: 0.3, w2: -0.7})) for x in (w1, w2)])
    loss = float(QUADRATIC.subs({w1: 0.3, w2: -0.7}))
    assert abs(modified_loss_function(0.08)(theta) - (loss + 0.02 * g @ g)) < 1e-13
