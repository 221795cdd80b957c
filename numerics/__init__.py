"""Numerics: derived objects in, numbers out (numpy/scipy, float64).

* :func:`predict` -- a symmetry observable's trajectory from measured signals (the exact
  recursion or the continuous form, run as recursive filters);
* :func:`equilibrium_at` -- the rotational equilibrium at given hyper-parameters;
* :func:`numeric_kernels` -- the continuous form's kernels K, G as numpy callables;
* :func:`field_function`, :func:`state_function` -- a modified equation's field and slow-manifold
  states on a sympy loss as numpy callables (torch losses: :mod:`nmech.numerics.torch_field`,
  the one module here that imports torch).

Hyper-parameters always come as one mapping keyed by the shared names (``eta``, ``beta``, ``lam``,
``tau``, ``beta1``, ``beta2``, ``alpha``, ``eps``), put in exactly
(:func:`nmech.derive.symbols.exact_values`).
"""

from nmech.numerics.equilibrium import NumericEquilibrium, equilibrium_at
from nmech.numerics.flows import field_function, state_function
from nmech.numerics.kernels import Kernels, numeric_kernels
from nmech.numerics.predict import predict

__all__ = [
    "predict",
    "equilibrium_at",
    "NumericEquilibrium",
    "numeric_kernels",
    "Kernels",
    "field_function",
    "state_function",
]
