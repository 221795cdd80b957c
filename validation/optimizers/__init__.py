"""The registry of optimizers: one adapter per ``torch.optim`` class (one file each), read by
the recorder, the comparison, the presets and the command line.

Built in: ``sgd`` (:mod:`.sgd`), ``adam`` and ``adamw`` (:mod:`.adam`), ``rmsprop``
(:mod:`.rmsprop`), ``adagrad`` (:mod:`.adagrad`), and the ``fallback`` (:mod:`.fallback`) that
reads any other optimizer from its steps. :func:`read_optimizer` picks the adapter of a live
optimizer; :func:`register_optimizer` adds one (``docs/extending.md``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from nmech.errors import NmechError
from nmech.validation.optimizers.adagrad import AdagradAdapter
from nmech.validation.optimizers.adam import AdamAdapter, AdamWAdapter
from nmech.validation.optimizers.adapter import OptimizerAdapter, Settings, UpdateDirection
from nmech.validation.optimizers.fallback import FallbackAdapter
from nmech.validation.optimizers.rmsprop import RMSpropAdapter
from nmech.validation.optimizers.sgd import SGDAdapter
from nmech.validation.registry import Registry

OPTIMIZERS: Registry[OptimizerAdapter] = Registry("optimizer")
FALLBACK = FallbackAdapter()

#: Add an entry to the registry (its name must be new); returns it.
register_optimizer = OPTIMIZERS.register


for _adapter in (SGDAdapter(), AdamAdapter(), AdamWAdapter(), RMSpropAdapter(), AdagradAdapter()):
    register_optimizer(_adapter)


def adapter_named(name: str) -> OptimizerAdapter:
    """The adapter registered as ``name`` (``fallback`` included)."""
    if name == FALLBACK.name:
        return FALLBACK
    return OPTIMIZERS.entry(name)


def adapter_for(optimizer: torch.optim.Optimizer) -> OptimizerAdapter:
    """The adapter that reads ``optimizer``: its class's, else the fallback."""
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise NmechError(f"expected a torch.optim.Optimizer, got {type(optimizer).__name__}")
    for adapter in OPTIMIZERS.values():
        if adapter.matches(optimizer):
            return adapter
    return FALLBACK


def read_optimizer(optimizer: torch.optim.Optimizer) -> Settings:
    """The settings of a live optimizer, read by its adapter."""
    return adapter_for(optimizer).read(optimizer)


def settings_from_dict(values: Mapping[str, Any]) -> Settings:
    """Settings stored by :meth:`Settings.as_dict` (or by records format 2: SGD when no
    ``optimizer`` is named)."""
    return adapter_named(str(values.get("optimizer", "sgd"))).from_dict(values)


__all__ = [
    "OPTIMIZERS",
    "FALLBACK",
    "OptimizerAdapter",
    "Settings",
    "UpdateDirection",
    "register_optimizer",
    "adapter_named",
    "adapter_for",
    "read_optimizer",
    "settings_from_dict",
]
