"""Symbolic derivations: update rules, modified equations, symmetries and their dynamics.

>>> from nmech.derive import rules, modified_equation
>>> me = modified_equation(rules.gd(), order=1)
>>> me.modified_loss().latex()
'\\\\tilde L = L + \\\\eta\\\\left(\\\\frac{1}{4}\\\\,\\\\left\\\\|\\\\nabla L\\\\right\\\\|^2\\\\right)'
"""

from . import rules
from .modified_equation import ModifiedEquation, ModifiedLoss, modified_equation

__all__ = ["rules", "modified_equation", "ModifiedEquation", "ModifiedLoss"]
