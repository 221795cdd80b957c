"""Any other optimizer: the update direction measured from the step itself,

    u_n = −(θ_{n+1} − θ_n)/η,   θ_{n+1} = θ_n − η u_n   (a = 1, η = the param groups' lr)

and the update-direction recursion of :mod:`nmech.derive.symmetry.adaptive`. With u_n taken
from the step, the exact recursion Q_{n+1} = Q_n − 2η⟨Jθ_n, u_n⟩ + η²⟨u_n, Ju_n⟩ holds by
construction: for these optimizers it checks the recorder and the records, not the optimizer's
law, and the report says so. The continuous form, Q̇ = −2⟨Jθ, u⟩ + η⟨u, Ju⟩, is the
informative comparison.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sympy as sp
import torch

from nmech.errors import NmechError
from nmech.validation.optimizers.adapter import OptimizerAdapter, Settings, UpdateDirection, scalar


class FallbackAdapter(OptimizerAdapter):
    """Any ``torch.optim.Optimizer`` no other adapter reads (module docstring)."""

    name = "fallback"
    keys = ("lr",)
    #: True: the exact form is an identity of the records (module docstring)
    exact_by_construction = True

    @property
    def title(self) -> str:
        """What reports call this optimizer."""
        return "fallback (u_n from the step)"

    def matches(self, optimizer: torch.optim.Optimizer) -> bool:
        """Any torch optimizer."""
        return isinstance(optimizer, torch.optim.Optimizer)

    def read(self, optimizer: torch.optim.Optimizer) -> Settings:
        """The one learning rate every param group shares, and the class name."""
        rates = {scalar(g["lr"]) for g in optimizer.param_groups if "lr" in g}
        if len(rates) != 1 or any("lr" not in g for g in optimizer.param_groups):
            raise NmechError(
                f"{type(optimizer).__name__}: the fallback needs one learning rate 'lr' shared "
                "by every parameter group (u_n = -(theta_next - theta)/lr)"
            )
        cls = type(optimizer)
        return Settings.of(
            self.name, {"lr": rates.pop(), "class": f"{cls.__module__}.{cls.__name__}"}
        )

    def rule(self, settings: Settings) -> Any:
        """θ⁺ = θ − η u(θ) with u opaque: measured, not derived (a = 1)."""
        from nmech.derive.rules import PARAMETER, Assignment, Rule
        from nmech.derive.symbols import eta, vector

        theta = vector(PARAMETER)
        direction = sp.Function("u")(theta)  # opaque: measured, not derived
        return Rule("fallback", (Assignment("theta_next", theta - eta * direction),))

    def values(self, settings: Settings) -> dict[str, float]:
        """eta = lr."""
        return {"eta": settings.lr}

    def update(self, settings: Settings) -> UpdateDirection:
        """u_n = (θ_n − θ_{n+1}) / η, from the recorded θ_n and θ_{n+1}."""
        from nmech.derive.symbols import eta, vector

        u = (vector("theta") - vector("theta_next")) / eta
        arrays = {"theta": "theta", "theta_next": "theta_next"}
        return UpdateDirection(u, arrays, self.values(settings))

    def build(self, params: Iterable[torch.nn.Parameter], preset: Any) -> torch.optim.Optimizer:
        """Refused: the fallback reads optimizers built elsewhere."""
        raise NmechError("the fallback reads optimizers built elsewhere; it builds none")
