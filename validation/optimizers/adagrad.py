"""``torch.optim.Adagrad`` (``lr_decay`` 0: a constant learning rate). With d = ±g + λθ,

    v⁺ = v + d²  (v_0 = initial_accumulator_value),   θ_{n+1} = θ_n − η d/(√v⁺ + ε)

(``nmech.derive.rules.adagrad``: eta = lr, eps, lam = weight_decay). u_n = d/(√v⁺ + ε) comes
from the state after the step (``sum`` = v⁺) and the recorded g_n, θ_n.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from nmech.validation.optimizers.adapter import OptimizerAdapter, Settings


class AdagradAdapter(OptimizerAdapter):
    """torch.optim.Adagrad (module docstring)."""

    name = "adagrad"
    torch_class = torch.optim.Adagrad
    keys = ("lr", "eps", "weight_decay", "maximize")
    refused = {"lr_decay": 0}
    state_keys = {"v": "sum"}
    keeps_gradient = True
    defaults = {"lr": 0.01, "weight_decay": 0.0, "eps": 1e-10}
    options = ("lr", "weight_decay", "eps")

    def rule(self, settings: Settings) -> Any:
        """``rules.adagrad(weight_decay)`` (lr_decay is refused)."""
        from nmech.derive import rules

        return rules.adagrad(weight_decay=float(settings.get("weight_decay", 0.0)) != 0.0)

    def values(self, settings: Settings) -> dict[str, float]:
        """eta = lr, eps, lam = weight_decay."""
        return {
            "eta": settings.lr,
            "eps": float(settings.get("eps", 1e-10)),
            "lam": float(settings.get("weight_decay", 0.0)),
        }

    def build(self, params: Iterable[torch.nn.Parameter], preset: Any) -> torch.optim.Optimizer:
        """``torch.optim.Adagrad`` with the preset's lr, eps and weight decay."""
        return torch.optim.Adagrad(
            params, lr=preset.lr, eps=preset.eps, weight_decay=preset.weight_decay
        )
