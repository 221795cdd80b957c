"""The dimension-free algebra: elementary differentials of the loss (trees), their linear
combinations and calculus (:mod:`~nmech.derive.algebra.trees`), and their notation
(:mod:`~nmech.derive.algebra.notation`)."""
