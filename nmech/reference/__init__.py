"""Independent reference implementations that exist only to check the engine (and to be the
baselines of ``nmech bench``): they share no code with :mod:`nmech.derive`'s algebra.

* :mod:`~nmech.reference.naive` -- the modified equation by the coordinate route (Jacobians of
  a concrete loss), order by order;
* :mod:`~nmech.reference.minibatch` -- mini-batch SGD by enumerating every batch sequence.
"""
