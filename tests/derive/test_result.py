"""Every derivation result follows one protocol: latex, text, to_json (with a schema), a LaTeX
rendering for Jupyter and a readable repr; modified_loss() always returns a ModifiedLoss."""

import json

import pytest

from nmech.derive import modified_equation, modified_flow, rules, symmetry
from nmech.derive.bea.modified_loss import ModifiedLoss
from nmech.derive.result import Derivation
from nmech.derive.stochastic.minibatch import minibatch_equation
from nmech.derive.stochastic.sde import minibatch_sde

RESULTS = {
    "modified_equation": lambda: modified_equation(rules.gd(), 2),
    "modified_loss": lambda: modified_equation(rules.heavy_ball(), 1).modified_loss(),
    "no_modified_loss": lambda: modified_equation(rules.adam(), 0).modified_loss(),
    "second_order_flow": lambda: modified_flow(rules.nesterov(weight_decay=True)),
    "minibatch": lambda: minibatch_equation(2, order=1),
    "minibatch_sde": lambda: minibatch_sde(2),
    "symmetry_dynamics": lambda: symmetry.symmetry_dynamics(
        rules.torch_sgd(weight_decay=True), symmetry.scale()
    ),
    "adaptive_dynamics": lambda: symmetry.symmetry_dynamics(rules.adamw(), symmetry.scale()),
}


@pytest.mark.parametrize("name", sorted(RESULTS))
def test_every_result_presents_itself_four_ways(name):
    result = RESULTS[name]()
    assert isinstance(result, Derivation)
    doc = result.to_json()
    assert doc["schema"].startswith("nmech.") and doc["schema"].endswith("/1")
    assert json.loads(result.to_json_text()) == json.loads(json.dumps(doc))
    text, latex, shown = result.text(), result.latex(), repr(result)
    assert text and latex
    assert shown == f"{type(result).__name__}: {text}"
    for rendered in (text, shown):  # no tree tuples or sympy internals leak into the text
        assert "('n'" not in rendered and "('v'" not in rendered and "Symbol(" not in rendered
    rich = result._repr_latex_()
    assert rich.startswith("$") and rich.endswith("$")
    assert "%" not in rich  # context lines are for files, not for the notebook
    equations = [line for line in latex.splitlines() if line and not line.startswith("%")]
    for line in equations:
        assert line in rich


def test_modified_loss_has_one_return_type():
    """Full-batch, mini-batch and preconditioned flows all answer with a ModifiedLoss."""
    gd = modified_equation(rules.gd(), 2).modified_loss()
    batch = minibatch_equation(3, order=1).modified_loss()
    adam = modified_equation(rules.adam(), 0).modified_loss()
    assert all(isinstance(x, ModifiedLoss) for x in (gd, batch, adam))
    assert gd.obstruction == 2 and gd.exists_through == 1
    assert gd.verdict() == "no modified loss at order 2 (the eta^2 term is not a gradient)"
    assert batch.obstruction is None and "\\sum_{k}" in batch.latex()
    assert batch.verdict() == "a modified loss exists through order 1"
    assert adam.terms == () and "preconditioned entry-wise" in adam.verdict()
    assert gd.text() == "L̃ = L + η·(1/4·‖∇L‖²)"


def test_json_of_a_modified_equation_carries_its_modified_loss():
    doc = modified_equation(rules.gd(), 1).to_json()
    assert doc["modified_loss"]["schema"] == "nmech.modified_loss/1"
    assert doc["modified_loss"]["exists_through_order"] == 1
    ((term,),) = [[t for t in doc["modified_loss"]["terms"] if t["order"] == 1]]
    assert term["coefficient"] == "1/4" and term["scalar"] == "‖∇L‖²"
