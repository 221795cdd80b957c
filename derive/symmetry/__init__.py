"""Symmetries with a linear generator ξ = Jθ + c and the dynamics of their observables.

* :mod:`~nmech.derive.symmetry.generators` -- translation, scale, rescale and the general form:
  gradient/Hessian constraints, rewriting rules, the conserved quantity;
* :mod:`~nmech.derive.symmetry.recursion` -- the exact discrete recursion of the observable;
* :mod:`~nmech.derive.symmetry.continuous` -- its continuous ODE and closed-form kernels;
* :mod:`~nmech.derive.symmetry.adaptive` -- both forms under element-wise preconditioned rules;
* :mod:`~nmech.derive.symmetry.equilibrium` -- the rotational equilibrium of scale channels;
* :mod:`~nmech.derive.symmetry.dynamics` -- all of them bundled (:func:`symmetry_dynamics`).
"""

from nmech.derive.symmetry.dynamics import SymmetryDynamics
from nmech.derive.symmetry.dynamics import derive as symmetry_dynamics
from nmech.derive.symmetry.generators import BUILTINS, Symmetry, rescale, scale, translation

__all__ = [
    "Symmetry",
    "translation",
    "scale",
    "rescale",
    "BUILTINS",
    "symmetry_dynamics",
    "SymmetryDynamics",
]
