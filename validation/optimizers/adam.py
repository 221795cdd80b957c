"""``torch.optim.Adam`` and ``torch.optim.AdamW``, every flag. Per parameter at step n:

    d = ±g (+ λθ for Adam's coupled decay),   m⁺ = β₁m + (1 − β₁)d,   v⁺ = β₂v + (1 − β₂)d²
    v̄⁺ = max(v̄, v⁺) with ``amsgrad`` (else v̄⁺ = v⁺)
    θ_{n+1} = a θ_n − η u_n,  u_n = (m⁺/(1 − β₁ⁿ)) / (√v̄⁺/√(1 − β₂ⁿ) + ε)

with a = 1 − ηλ for decoupled decay (AdamW, or Adam(decoupled_weight_decay=True)) and a = 1
otherwise: ``nmech.derive.rules.adamw`` / ``adam``, eta = lr, beta1, beta2 = betas, eps,
lam = weight_decay. u_n is formed from the state after the step (``exp_avg`` = m⁺,
``exp_avg_sq`` = v⁺, ``max_exp_avg_sq`` = v̄⁺, ``step`` = n) rather than from
(aθ_n − θ_{n+1})/η, so the exact recursion is a real check of torch's step.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from nmech.validation.optimizers.adapter import OptimizerAdapter, Settings


class AdamAdapter(OptimizerAdapter):
    """torch.optim.Adam (module docstring)."""

    name = "adam"
    torch_class = torch.optim.Adam
    keys = ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize", "decoupled_weight_decay")
    state_keys = {"m": "exp_avg", "v": "exp_avg_sq", "vmax": "max_exp_avg_sq"}
    keeps_gradient = True
    defaults = {"lr": 0.01, "weight_decay": 0.0}
    options = ("lr", "weight_decay", "betas", "eps")

    def rule(self, settings: Settings) -> Any:
        """``rules.adamw`` (decoupled decay) or ``rules.adam`` (coupled), with ``amsgrad``."""
        from nmech.derive import rules

        decay = float(settings.get("weight_decay", 0.0)) != 0.0
        amsgrad = bool(settings.get("amsgrad", False))
        if settings.get("decoupled_weight_decay", self.name == "adamw"):
            return rules.adamw(weight_decay=decay, amsgrad=amsgrad)
        return rules.adam(weight_decay=decay, amsgrad=amsgrad)

    def values(self, settings: Settings) -> dict[str, float]:
        """eta = lr, beta1, beta2 = betas, eps, lam = weight_decay."""
        beta1, beta2 = settings.get("betas", (0.9, 0.999))
        return {
            "eta": settings.lr, "beta1": float(beta1), "beta2": float(beta2),
            "eps": float(settings.get("eps", 1e-8)), "lam": float(settings.get("weight_decay", 0.0)),
        }  # fmt: skip

    def from_dict(self, values: Any) -> Settings:
        """Settings from a records file (format 2 stored betas as beta1, beta2)."""
        values = dict(values)
        if "beta1" in values:  # records format 2 stored AdamW's betas as beta1, beta2
            values["betas"] = (values.pop("beta1"), values.pop("beta2"))
        return super().from_dict(values)

    def build(self, params: Iterable[torch.nn.Parameter], preset: Any) -> torch.optim.Optimizer:
        """The torch class with the preset's lr, betas, eps and weight decay."""
        assert self.torch_class is not None
        return self.torch_class(
            params, lr=preset.lr, betas=tuple(preset.betas), eps=preset.eps,
            weight_decay=preset.weight_decay,
        )  # fmt: skip


class AdamWAdapter(AdamAdapter):
    """torch.optim.AdamW (module docstring). Defaults lr 0.01 and weight decay 0.5: ηλ = 5e-3,
    so scale-invariant channels approach their rotational equilibrium (time constant
    1/(2ηλ) = 100 steps) within a few hundred steps."""

    name = "adamw"
    torch_class = torch.optim.AdamW
    defaults = {"lr": 0.01, "weight_decay": 0.5}
