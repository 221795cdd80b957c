"""Mini-batch SGD by enumeration: the exact mean and covariance of the end point of n steps over
every equally likely batch sequence (numpy float64), the ground truth for
:mod:`nmech.derive.stochastic.minibatch` and :mod:`nmech.derive.stochastic.sde`.

A step with batch j is θ ← θ − η∇L̂_j(θ); random reshuffling visits the m batches in each of
the m! orders (n = m), sampling with replacement draws each of the m^n sequences.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import permutations, product

import numpy as np

from nmech.errors import NmechError

GradFn = Callable[[np.ndarray], np.ndarray]


def sequences(m: int, sampling: str, steps: int) -> list[tuple[int, ...]]:
    """Every equally likely batch sequence: the m! orders, or the m^steps draws."""
    if sampling == "reshuffling":
        if steps != m:
            raise NmechError("random reshuffling takes one step per mini-batch (steps = batches)")
        return list(permutations(range(m)))
    if sampling == "replacement":
        return list(product(range(m), repeat=steps))
    raise NmechError(f"sampling must be 'reshuffling' or 'replacement', got {sampling!r}")


def end_point_moments(
    gradients: Sequence[GradFn], theta0: np.ndarray, eta: float, sampling: str, steps: int
) -> tuple[np.ndarray, np.ndarray]:
    """(E[θ_n − θ_0], Cov[θ_n]) over the equally likely batch sequences."""
    ends = []
    for seq in sequences(len(gradients), sampling, steps):
        theta = np.array(theta0, dtype=np.float64)
        for j in seq:
            theta = theta - eta * np.asarray(gradients[j](theta), dtype=np.float64)
        ends.append(theta - theta0)
    moves = np.array(ends)
    mean = moves.mean(axis=0)
    centred = moves - mean
    return mean, centred.T @ centred / len(moves)
