"""The update rule as read from a ``torch.optim.SGD`` object, mapped to the derivation engine.

torch's SGD, per parameter, with d = g + lam*theta (g the loss gradient, lam weight decay):

    b_0 = d_0,  b_n = beta*b_{n-1} + (1 - tau)*d_n   (momentum beta, dampening tau)
    u_n = d_n + beta*b_n if nesterov else b_n        (u = d when beta = 0)
    theta_{n+1} = theta_n - eta*u_n

so the engine's parameters are eta = lr, beta = momentum, lam = weight_decay, tau = dampening.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from nmech.errors import NmechError

_KEYS = ("lr", "momentum", "dampening", "nesterov", "weight_decay")


@dataclass(frozen=True)
class SGDSettings:
    """The hyper-parameters of one torch SGD (shared by every parameter group)."""

    lr: float
    momentum: float
    dampening: float
    nesterov: bool
    weight_decay: float

    def engine_values(self) -> dict[str, float]:
        """Values for ``nmech.numerics.predict``: eta, beta, lam, tau."""
        return {
            "eta": self.lr,
            "beta": self.momentum,
            "lam": self.weight_decay,
            "tau": self.dampening,
        }

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (for JSON and HDF5 attributes)."""
        return asdict(self)

    def rule(self) -> Any:
        """The derivation engine's rule: ``nmech.derive.rules.torch_sgd(...)``."""
        from nmech.derive import rules

        return rules.torch_sgd(
            momentum=self.momentum,
            dampening=self.dampening,
            nesterov=self.nesterov,
            weight_decay=self.weight_decay,
        )


def _scalar(v: Any) -> float:
    return float(v.item()) if isinstance(v, torch.Tensor) else float(v)


def read_sgd(optimizer: torch.optim.Optimizer) -> SGDSettings:
    """Settings of ``optimizer`` from its ``param_groups`` (all groups must agree)."""
    if not isinstance(optimizer, torch.optim.SGD):
        raise NmechError(f"only torch.optim.SGD is supported, got {type(optimizer).__name__}")
    seen = {
        tuple(_scalar(g[k]) if k != "nesterov" else bool(g[k]) for k in _KEYS)
        for g in optimizer.param_groups
    }
    if len(seen) != 1:
        raise NmechError("all SGD parameter groups must share lr, momentum, dampening, wd")
    if any(g.get("maximize", False) for g in optimizer.param_groups):
        raise NmechError("SGD(maximize=True) is not supported")
    lr, momentum, dampening, nesterov, wd = seen.pop()
    return SGDSettings(lr, momentum, dampening, bool(nesterov), wd)
