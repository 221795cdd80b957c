"""One optimizer as the validation sees it: settings read from the live ``torch.optim`` object,
the derive :class:`~nmech.derive.rules.Rule` with its values, and the update direction u_n.

Every rule the symmetry dynamics handle is, per step, θ_{n+1} = a θ_n − η u_n
(:mod:`nmech.derive.symmetry.adaptive`). For a linear-step rule (torch SGD) the exact recursion
is driven by the step signals ⟨g, Jg⟩, ⟨Δ, JΔ⟩, ⟨Δ, Jg⟩ and no u_n is needed. For the others
(Adam, AdamW, RMSprop, Adagrad, the fallback) it is driven by ⟨Jθ_n, u_n⟩, ⟨u_n, Ju_n⟩,
⟨1_A, u_n⟩, and :class:`UpdateDirection` says how u_n is computed from what the recorder can
read after ``optimizer.step()``: θ_n, θ_{n+1}, g_n and the optimizer's per-parameter state.
By default u_n is the rule's own u (``adaptive_step(rule).u``, e.g. AdamW's
m⁺/(1 − β₁ⁿ)/(√v⁺/√(1 − β₂ⁿ) + ε)) with each ``X_next`` read from ``state[p][STATE_KEYS[X]]``,
so the recorder's kernel is generated from the derived rule (:mod:`nmech.validation.codegen`).

A subclass is one file: it names the torch class, the param-group entries that define the rule
(``keys``), the flags it refuses (``refused``), and maps settings to the rule, the engine's
values (the shared hyper-parameter names ``eta``, ``beta``, ``lam``, ...) and a torch
optimizer built from a preset. Register it with
:func:`nmech.validation.optimizers.register_optimizer`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sympy as sp
import torch

from nmech.errors import NmechError

#: param-group entries that change how torch computes a step, never what it computes.
NEUTRAL: frozenset[str] = frozenset(
    {"params", "foreach", "differentiable", "fused", "capturable", "initial_lr", "name"}
)


@dataclass(frozen=True)
class Settings:
    """The optimizer a run used: its registry name and the param-group entries that define its
    rule (torch's names and values, e.g. ``lr``, ``momentum``, ``betas``)."""

    optimizer: str
    hyper: tuple[tuple[str, Any], ...]

    @classmethod
    def of(cls, optimizer: str, values: Mapping[str, Any]) -> Settings:
        """Settings from a mapping (lists become tuples, so that settings are hashable)."""
        items = tuple(
            (k, tuple(v) if isinstance(v, list | tuple) else v) for k, v in sorted(values.items())
        )
        return cls(optimizer, items)

    def __getitem__(self, key: str) -> Any:
        return dict(self.hyper)[key]

    def get(self, key: str, default: Any = None) -> Any:
        """The entry ``key`` or ``default``."""
        return dict(self.hyper).get(key, default)

    @property
    def lr(self) -> float:
        """The learning rate η."""
        return float(self["lr"])

    @property
    def adapter(self) -> OptimizerAdapter:
        """The registered adapter of this optimizer."""
        from nmech.validation.optimizers import adapter_named

        return adapter_named(self.optimizer)

    def rule(self) -> Any:
        """The derive rule (:meth:`OptimizerAdapter.rule`)."""
        return self.adapter.rule(self)

    def values(self) -> dict[str, float]:
        """The engine's hyper-parameter values by shared name (:meth:`OptimizerAdapter.values`)."""
        return self.adapter.values(self)

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for JSON and HDF5 attributes: ``optimizer`` and the entries."""
        return {"optimizer": self.optimizer, **{k: _plain(v) for k, v in self.hyper}}


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


@dataclass(frozen=True)
class UpdateDirection:
    """u_n as a sympy expression ``expr`` in per-element array symbols and scalar symbols.

    ``arrays`` maps each array symbol's name to its source: ``theta`` (θ_n), ``theta_next``
    (θ_{n+1}), ``g`` (g_n, ``p.grad`` before the step) or ``state:<key>`` (the optimizer's
    ``state[p][key]`` after the step). Scalar symbols take ``values`` (shared names), and
    ``step`` is read from ``state[p]["step"]`` (1-based, after the step).
    """

    expr: sp.Expr
    arrays: dict[str, str]
    values: dict[str, float]


def scalar(value: Any) -> float:
    """A param-group number as a float (tensor learning rates included)."""
    return float(value.item()) if isinstance(value, torch.Tensor) else float(value)


class OptimizerAdapter:
    """Base adapter; see the module docstring. Subclasses set the class attributes and
    implement :meth:`rule`, :meth:`values` and :meth:`build`."""

    #: registry and CLI name, e.g. ``sgd``
    name: str = ""
    #: the torch class handled (``None``: the fallback, which handles any)
    torch_class: type[torch.optim.Optimizer] | None = None
    #: param-group entries that define the rule
    keys: tuple[str, ...] = ()
    #: param-group entries whose value changes the rule beyond this adapter, with the value it
    #: supports (a different value is refused, naming the flag)
    refused: dict[str, Any] = {}
    #: rule vector name ``X`` -> the state key holding ``X_next`` after the step
    state_keys: dict[str, str] = {}
    #: whether torch's step leaves ``p.grad`` as ``backward()`` left it under any settings
    #: (:meth:`gradient_kept`)
    keeps_gradient: bool = False
    #: preset fields set when this optimizer is chosen on the command line
    defaults: dict[str, Any] = {}
    #: preset fields (command-line options) this optimizer reads
    options: tuple[str, ...] = ("lr", "weight_decay")

    @property
    def title(self) -> str:
        """``torch.optim.<Class>``."""
        return f"torch.optim.{self.torch_class.__name__}" if self.torch_class else "fallback"

    def matches(self, optimizer: torch.optim.Optimizer) -> bool:
        """True when this adapter reads ``optimizer`` (its exact class)."""
        return type(optimizer) is self.torch_class

    def read(self, optimizer: torch.optim.Optimizer) -> Settings:
        """The settings of ``optimizer``'s param groups: every refused flag at its supported
        value, and every group with the same ``keys`` (one line naming what differs)."""
        for flag, supported in self.refused.items():
            for group in optimizer.param_groups:
                if flag in group and group[flag] != supported:
                    raise NmechError(
                        f"{self.title}({flag}={group[flag]!r}) is not supported: the derived "
                        f"rule assumes {flag}={supported!r}"
                    )
        seen = [self._entries(group) for group in optimizer.param_groups]
        for other in seen[1:]:
            differ = [k for k in self.keys if other.get(k) != seen[0].get(k)]
            if differ:
                raise NmechError(
                    f"all {self.title} parameter groups must share {', '.join(self.keys)}; "
                    f"{differ[0]} differs ({seen[0].get(differ[0])} vs {other.get(differ[0])})"
                )
        return Settings.of(self.name, seen[0])

    def _entries(self, group: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in self.keys:
            if key not in group:
                continue
            value = group[key]
            if isinstance(value, bool):
                out[key] = value
            elif isinstance(value, tuple | list):
                out[key] = tuple(scalar(v) for v in value)
            else:
                out[key] = scalar(value)
        return out

    def from_dict(self, values: Mapping[str, Any]) -> Settings:
        """Settings from :meth:`Settings.as_dict` (records and run files)."""
        return Settings.of(self.name, {k: v for k, v in values.items() if k != "optimizer"})

    def rule(self, settings: Settings) -> Any:
        """The derive ``Rule`` of these settings (bias corrections kept: ``step`` in it)."""
        raise NotImplementedError

    def values(self, settings: Settings) -> dict[str, float]:
        """The engine's values of the rule's hyper-parameters, by shared name."""
        raise NotImplementedError

    def gradient_kept(self, settings: Settings) -> bool:
        """Whether torch's step under ``settings`` leaves ``p.grad`` as ``backward()`` left it
        (``keeps_gradient``): the recorder then reads g_n after the step without keeping a
        copy, and checks that it was left alone."""
        return self.keeps_gradient

    def gradient_sign(self, settings: Settings) -> float:
        """−1 with ``maximize=True`` (torch then steps along +g), else +1."""
        return -1.0 if settings.get("maximize", False) else 1.0

    def update(self, settings: Settings) -> UpdateDirection | None:
        """u_n of the module docstring (None for a linear-step rule: SGD)."""
        from nmech.derive.rules import NEXT, PARAMETER
        from nmech.derive.symbols import grad, vector
        from nmech.derive.symmetry.adaptive import adaptive_step, is_adaptive

        rule = self.rule(settings)
        if not is_adaptive(rule):
            return None
        u = adaptive_step(rule).u
        arrays = {PARAMETER: PARAMETER, "g": "g"}
        subs: dict[Any, Any] = {grad(vector(PARAMETER)): self.gradient_sign(settings) * vector("g")}
        for s in u.free_symbols:
            name = str(s)
            if name.endswith(NEXT) and name[: -len(NEXT)] in self.state_keys:
                arrays[name] = f"state:{self.state_keys[name[: -len(NEXT)]]}"
            elif name in rule.vectors and name != PARAMETER:
                raise NmechError(f"{self.title}: the update direction needs {name}, not in state")
        u = u.xreplace(subs)
        used = {str(s) for s in u.free_symbols}
        return UpdateDirection(
            u, {k: v for k, v in arrays.items() if k in used}, self.values(settings)
        )

    def build(self, params: Iterable[torch.nn.Parameter], preset: Any) -> torch.optim.Optimizer:
        """A torch optimizer with ``preset``'s settings (the fields in ``options``)."""
        raise NotImplementedError
