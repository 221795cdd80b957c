"""Numerics: derived objects in, numbers out (numpy/scipy, float64).

* :func:`predict` -- a symmetry observable's trajectory from measured signals (the exact
  recursion or the continuous form, run as recursive filters);
* :func:`equilibrium_at` -- the rotational equilibrium at given hyper-parameters;
* :func:`numeric_kernels` -- the continuous form's kernels K, G as numpy callables.

Hyper-parameters always come as one mapping keyed by the shared names (``eta``, ``beta``, ``lam``,
``tau``, ``beta1``, ``beta2``, ``alpha``, ``eps``), put in exactly
(:func:`nmech.derive.symbols.exact_values`).
"""

from nmech.numerics.equilibrium import NumericEquilibrium, equilibrium_at
from nmech.numerics.kernels import Kernels, numeric_kernels
from nmech.numerics.predict import predict

__all__ = ["predict", "equilibrium_at", "NumericEquilibrium", "numeric_kernels", "Kernels"]
