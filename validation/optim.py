"""The update rule as read from a ``torch.optim.SGD`` or ``torch.optim.AdamW`` object, mapped to
the derivation engine.

torch's SGD, per parameter, with d = g + lam*theta (g the loss gradient, lam weight decay):

    b_0 = d_0,  b_n = beta*b_{n-1} + (1 - tau)*d_n   (momentum beta, dampening tau)
    u_n = d_n + beta*b_n if nesterov else b_n        (u = d when beta = 0)
    theta_{n+1} = theta_n - eta*u_n

so the engine's parameters are eta = lr, beta = momentum, lam = weight_decay, tau = dampening.

torch's AdamW (amsgrad and maximize off), per parameter, at its n-th step (1-based):

    theta <- (1 - lr*wd) theta                          (decoupled decay, applied first)
    m_n = beta1 m_{n-1} + (1 - beta1) g_n,   v_n = beta2 v_{n-1} + (1 - beta2) g_n^2
    theta_{n+1} = theta - lr * (m_n / (1 - beta1^n)) / (sqrt(v_n) / sqrt(1 - beta2^n) + eps)

i.e. theta_{n+1} = a theta_n - eta u_n with a = 1 - eta*lam: eta = lr, lam = weight_decay,
beta1, beta2 = betas, eps (``nmech.derive.rules.adamw``).
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


@dataclass(frozen=True)
class AdamWSettings:
    """The hyper-parameters of one torch AdamW (shared by every parameter group)."""

    lr: float
    beta1: float
    beta2: float
    eps: float
    weight_decay: float
    optimizer: str = "adamw"

    def engine_values(self) -> dict[str, float]:
        """Values for ``nmech.numerics.predict``: eta and lam (the recursion in terms of the
        recorded update u_n needs no more)."""
        return {"eta": self.lr, "lam": self.weight_decay}

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (for JSON and HDF5 attributes); ``optimizer`` names the class."""
        return asdict(self)

    def rule(self) -> Any:
        """The derivation engine's rule: ``nmech.derive.rules.adamw(...)``."""
        from nmech.derive import rules

        return rules.adamw(weight_decay=self.weight_decay != 0.0)


Settings = SGDSettings | AdamWSettings


def settings_from_dict(values: dict[str, Any]) -> Settings:
    """The settings a records file stored (``as_dict``); SGD when no ``optimizer`` is named."""
    if values.get("optimizer") == "adamw":
        return AdamWSettings(**values)
    return SGDSettings(**values)


def _scalar(v: Any) -> float:
    return float(v.item()) if isinstance(v, torch.Tensor) else float(v)


def read_optimizer(optimizer: torch.optim.Optimizer) -> Settings:
    """Settings of a torch SGD or AdamW (see :func:`read_sgd`, :func:`read_adamw`)."""
    if type(optimizer) is torch.optim.AdamW:
        return read_adamw(optimizer)
    if not isinstance(optimizer, torch.optim.SGD):
        raise NmechError(
            "only torch.optim.SGD and torch.optim.AdamW are supported, "
            f"got {type(optimizer).__name__}"
        )
    return read_sgd(optimizer)


def read_adamw(optimizer: torch.optim.Optimizer) -> AdamWSettings:
    """Settings of a ``torch.optim.AdamW`` from its ``param_groups`` (all groups must agree;
    amsgrad and maximize are refused, they change the rule)."""
    if type(optimizer) is not torch.optim.AdamW:
        raise NmechError(f"expected torch.optim.AdamW, got {type(optimizer).__name__}")
    for flag in ("amsgrad", "maximize"):
        if any(g.get(flag, False) for g in optimizer.param_groups):
            raise NmechError(f"AdamW({flag}=True) is not supported")
    seen = {
        (_scalar(g["lr"]), *(_scalar(b) for b in g["betas"]), _scalar(g["eps"]),
         _scalar(g["weight_decay"]))
        for g in optimizer.param_groups
    }  # fmt: skip
    if len(seen) != 1:
        raise NmechError("all AdamW parameter groups must share lr, betas, eps, weight_decay")
    return AdamWSettings(*seen.pop())


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
