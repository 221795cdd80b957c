"""Measured rotational equilibrium of scale-invariant channels against the derived prediction.

Per scale channel c of a records file (Q = |θ_c|², from the recorded signals):

    norm_n  = √Q_n
    angle_n = arccos( ⟨θ_n, θ_{n+1}⟩ / (|θ_n| |θ_{n+1}|) ),  ⟨θ_n, θ_{n+1}⟩ = (Q_n + Q_{n+1} − |Δ_n|²)/2

with |Δ_n|² = ``step_sq``. The prediction is :func:`nmech.derive.symmetry.equilibrium.equilibrium` of the
run's rule, evaluated at its hyper-parameters: AdamW |θ| = √(ηC/(2λ)) with C the channel's
number of elements (``size`` in the records), η_r = √(2ηλ(1−β₁)/(1+β₁)); torch SGD with
momentum |θ| = (η E|g̃|²/(2λ(1−β)))^{1/4} with E|g̃|² = mean over the tail of |g_n|² Q_n (the
gradient at unit norm: |g| scales as 1/|θ|), η_r = √(2ηλ/(1+β)). Measured values are averaged
over the tail, the last quarter of the steps (``TAIL``): the norm as a mean, the angle as a
root mean square (the formulas are for E|Δ|²).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from nmech.validation.optimizers import Settings
from nmech.validation.records import KindRecords

TAIL = 0.25


@dataclass
class EquilibriumCheck:
    """Per-channel measured and predicted equilibrium of one records file's scale channels."""

    norm: np.ndarray  # [N+1, channels] measured |θ|
    angle: np.ndarray  # [N, channels] measured angular update (radians)
    norm_predicted: np.ndarray  # [channels]
    angle_predicted: float
    tail: slice

    def summary(self) -> dict[str, Any]:
        """Medians over channels of the tail averages, and their ratio to the prediction."""
        norm = self.norm[self.tail].mean(axis=0)
        angle = np.sqrt(np.mean(self.angle[self.tail] ** 2, axis=0))
        ratio = norm / self.norm_predicted
        return {
            "channels": int(norm.size),
            "tail_steps": int(self.angle[self.tail].shape[0]),
            "angular_update_predicted": self.angle_predicted,
            "angular_update_measured_median": float(np.median(angle)),
            "norm_ratio_median": float(np.median(ratio)),
            "norm_ratio_p10": float(np.percentile(ratio, 10)),
            "norm_ratio_p90": float(np.percentile(ratio, 90)),
        }


def check(scale: KindRecords, settings: Settings, equilibrium: Any) -> EquilibriumCheck | None:
    """Measured vs predicted equilibrium (module docstring); None without the needed records
    (channel sizes for AdamW, step_sq)."""
    from nmech.numerics.equilibrium import equilibrium_at

    predicted = equilibrium_at(equilibrium, settings.values())
    if "step_sq" not in scale.signals or (scale.size is None and predicted.needs_size):
        return None
    q = np.maximum(scale.Q, np.finfo(np.float64).tiny)
    steps = q.shape[0] - 1
    tail = slice(steps - max(1, int(round(TAIL * steps))), None)
    inner = (q[:-1] + q[1:] - scale.signals["step_sq"]) / 2
    angle = np.arccos(np.clip(inner / np.sqrt(q[:-1] * q[1:]), -1.0, 1.0))
    g_unit = np.mean((scale.signals["grad_sq"] * q[:-1])[tail], axis=0)
    size = scale.size if scale.size is not None else np.zeros(q.shape[1])
    norm_eq = np.broadcast_to(predicted.norm(size, g_unit), (q.shape[1],))
    return EquilibriumCheck(np.sqrt(q), angle, norm_eq, predicted.angular_update, tail)
