"""``torch.optim.RMSprop`` (``centered`` off). With d = ±g + λθ,

    v⁺ = αv + (1 − α)d²,   u_n = d/(√v⁺ + ε)   or, with momentum β,  u_n = b⁺ = βb + d/(√v⁺ + ε)
    θ_{n+1} = θ_n − η u_n

(``nmech.derive.rules.rmsprop``: eta = lr, alpha, eps, lam = weight_decay, beta = momentum).
u_n comes from the state after the step (``square_avg`` = v⁺, ``momentum_buffer`` = b⁺) and
the recorded g_n, θ_n.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from nmech.validation.optimizers.adapter import OptimizerAdapter, Settings


class RMSpropAdapter(OptimizerAdapter):
    """torch.optim.RMSprop (module docstring)."""

    name = "rmsprop"
    torch_class = torch.optim.RMSprop
    keys = ("lr", "alpha", "eps", "weight_decay", "momentum", "maximize")
    refused = {"centered": False}
    state_keys = {"v": "square_avg", "b": "momentum_buffer"}
    keeps_gradient = True
    defaults = {"lr": 0.001, "weight_decay": 0.0, "momentum": 0.0}
    options = ("lr", "weight_decay", "momentum", "alpha", "eps")

    def rule(self, settings: Settings) -> Any:
        """``rules.rmsprop(weight_decay, momentum)`` (centered is refused)."""
        from nmech.derive import rules

        return rules.rmsprop(
            weight_decay=float(settings.get("weight_decay", 0.0)) != 0.0,
            momentum=float(settings.get("momentum", 0.0)) != 0.0,
        )

    def values(self, settings: Settings) -> dict[str, float]:
        """eta = lr, alpha, eps, lam = weight_decay, beta = momentum."""
        return {
            "eta": settings.lr, "alpha": float(settings.get("alpha", 0.99)),
            "eps": float(settings.get("eps", 1e-8)), "lam": float(settings.get("weight_decay", 0.0)),
            "beta": float(settings.get("momentum", 0.0)),
        }  # fmt: skip

    def build(self, params: Iterable[torch.nn.Parameter], preset: Any) -> torch.optim.Optimizer:
        """``torch.optim.RMSprop`` with the preset's lr, alpha, eps, weight decay, momentum."""
        return torch.optim.RMSprop(
            params, lr=preset.lr, alpha=preset.alpha, eps=preset.eps,
            weight_decay=preset.weight_decay, momentum=preset.momentum,
        )  # fmt: skip
