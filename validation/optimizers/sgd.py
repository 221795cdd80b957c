"""``torch.optim.SGD``, every flag: with d = ±g + λθ (− under ``maximize``),

    b_0 = d_0,  b_n = β b_{n−1} + (1 − τ) d_n     (momentum β, dampening τ)
    u_n = d_n + β b_n if nesterov else b_n         (u = d when β = 0)
    θ_{n+1} = θ_n − η u_n

i.e. ``nmech.derive.rules.torch_sgd``: eta = lr, beta = momentum, lam = weight_decay,
tau = dampening. A linear step: the exact recursions are driven by ⟨g, Jg⟩, ⟨Δ, JΔ⟩, ⟨Δ, Jg⟩
(under ``maximize`` the loss is −L, whose gradient −g the recorder then uses). ``foreach`` and
``fused`` only change how torch computes the step.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from nmech.errors import NmechError
from nmech.validation.optimizers.adapter import OptimizerAdapter, Settings


class SGDAdapter(OptimizerAdapter):
    """torch.optim.SGD (module docstring)."""

    name = "sgd"
    torch_class = torch.optim.SGD
    keys = ("lr", "momentum", "dampening", "nesterov", "weight_decay", "maximize")
    options = ("lr", "momentum", "weight_decay", "nesterov", "dampening")

    def rule(self, settings: Settings) -> Any:
        """``rules.torch_sgd(momentum, dampening, nesterov, weight_decay)`` with the read values."""
        from nmech.derive import rules

        return rules.torch_sgd(
            momentum=settings.get("momentum", 0.0),
            dampening=settings.get("dampening", 0.0),
            nesterov=bool(settings.get("nesterov", False)),
            weight_decay=settings.get("weight_decay", 0.0),
        )

    def gradient_kept(self, settings: Settings) -> bool:
        """Without Nesterov: torch's foreach path adds the momentum buffer into ``p.grad`` in
        place under Nesterov (no weight decay, no ``maximize``), and nowhere else."""
        return not settings.get("nesterov", False)

    def values(self, settings: Settings) -> dict[str, float]:
        """eta = lr, beta = momentum, lam = weight_decay, tau = dampening."""
        return {
            "eta": settings.lr,
            "beta": float(settings.get("momentum", 0.0)),
            "lam": float(settings.get("weight_decay", 0.0)),
            "tau": float(settings.get("dampening", 0.0)),
        }

    def build(self, params: Iterable[torch.nn.Parameter], preset: Any) -> torch.optim.Optimizer:
        """``torch.optim.SGD`` with the preset's lr, momentum, dampening, weight decay, nesterov."""
        if preset.nesterov and (preset.momentum <= 0 or preset.dampening != 0):
            raise NmechError("--nesterov needs momentum > 0 and zero dampening (torch SGD's rule)")
        return torch.optim.SGD(
            params, lr=preset.lr, momentum=preset.momentum, dampening=preset.dampening,
            weight_decay=preset.weight_decay, nesterov=preset.nesterov,
        )  # fmt: skip
