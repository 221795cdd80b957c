"""Symbolic derivations: update rules, modified equations, symmetries and their dynamics.

>>> from nmech.derive import rules, modified_equation
>>> me = modified_equation(rules.gd(), order=1)
>>> me.modified_loss().latex()
'\\\\tilde L = L + \\\\eta\\\\left(\\\\frac{1}{4}\\\\,\\\\left\\\\|\\\\nabla L\\\\right\\\\|^2\\\\right)'
"""

from nmech.derive import rules
from nmech.derive.bea.modified_equation import ModifiedEquation, ModifiedLoss, modified_equation
from nmech.derive.bea.second_order import SecondOrderFlow, modified_flow

__all__ = [
    "rules",
    "modified_equation",
    "ModifiedEquation",
    "ModifiedLoss",
    "modified_flow",
    "SecondOrderFlow",
]
