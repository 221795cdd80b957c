"""Symbolic derivations: update rules, modified equations and losses, mini-batch flows and SDEs,
symmetries and the dynamics of their observables.

>>> from nmech.derive import rules, modified_equation
>>> me = modified_equation(rules.gd(), order=1)
>>> me.modified_loss().text()
'L̃ = L + η·(1/4·‖∇L‖²)'

Subpackages, by subject: :mod:`~nmech.derive.algebra` (trees, series, notation),
:mod:`~nmech.derive.rules` (rules, built-ins, the rule language), :mod:`~nmech.derive.bea`
(backward error analysis), :mod:`~nmech.derive.stochastic` (mini-batch SGD) and
:mod:`~nmech.derive.symmetry` (symmetries and their dynamics). Every result follows the protocol
of :mod:`~nmech.derive.result`.
"""

from nmech.derive import rules, symmetry
from nmech.derive.bea.averaged import AveragedEquation, averaged_equation
from nmech.derive.bea.modified_equation import ModifiedEquation, modified_equation
from nmech.derive.bea.modified_loss import ModifiedLoss
from nmech.derive.bea.modifying import (
    ModifyingRule,
    TargetFlow,
    gradient_flow_target,
    modifying_rule,
    series_target,
)
from nmech.derive.bea.second_order import SecondOrderFlow, modified_flow
from nmech.derive.result import Derivation
from nmech.derive.stochastic.minibatch import (
    MinibatchEquation,
    general_minibatch_equation,
    minibatch_equation,
)
from nmech.derive.stochastic.sde import MinibatchSDE, minibatch_sde
from nmech.derive.symmetry import SymmetryDynamics, symmetry_dynamics

__all__ = [
    "rules",
    "symmetry",
    "Derivation",
    "modified_equation",
    "ModifiedEquation",
    "averaged_equation",
    "AveragedEquation",
    "ModifiedLoss",
    "modifying_rule",
    "ModifyingRule",
    "TargetFlow",
    "gradient_flow_target",
    "series_target",
    "modified_flow",
    "SecondOrderFlow",
    "minibatch_equation",
    "general_minibatch_equation",
    "MinibatchEquation",
    "minibatch_sde",
    "MinibatchSDE",
    "symmetry_dynamics",
    "SymmetryDynamics",
]
