"""nmech: symbolic-numeric derivation engine for the learning dynamics of neural networks.

Three parts, data flowing one way:

* :mod:`nmech.derive`     -- sympy: update rules, backward error analysis, symmetries, dynamics.
* :mod:`nmech.numerics`   -- numpy/scipy: evaluate derived kernels and recursions on signals.
* :mod:`nmech.validation` -- torch: train real networks, record observables, compare.
"""

__version__ = "0.1.0"
