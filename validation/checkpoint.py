"""Checkpoints: everything needed to continue a run bit for bit (``nmech validate --resume``).

``checkpoint-<model>.pt`` (torch.save, loaded with ``weights_only=True``) holds the step, the
model's state (BatchNorm running statistics included), the optimizer's state (momentum
buffers), the batch stream's generator state and epoch position, and the torch (CPU and CUDA),
numpy and Python RNG states. It is written to a temporary file, fsynced and renamed, so a
crash leaves the previous checkpoint intact. The training loop writes one whenever the records
file commits (every ``flush_every`` steps), and on an interruption, so a checkpoint never runs
ahead of the records.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nmech.errors import NmechError

VERSION = 1


def checkpoint_path(out_dir: Path, model_name: str) -> Path:
    """Where the checkpoint of ``model_name`` lives in a run folder."""
    return out_dir / f"checkpoint-{model_name}.pt"


def _rng_states() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, mt, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "python": (version, list(mt), py_gauss),
    }


def _set_rng_states(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, mt, py_gauss = state["python"]
    random.setstate((version, tuple(mt), py_gauss))


def save_checkpoint(
    path: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
    batches: Any,
) -> None:  # fmt: skip
    """Atomically write the state after ``step`` steps."""
    state = {
        "version": VERSION, "step": step, "model": model.state_dict(),
        "optimizer": optimizer.state_dict(), "batches": batches.state_dict(),
        "rng": _rng_states(),
    }  # fmt: skip
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _load(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, ...
        raise NmechError(f"checkpoint {path} is unreadable: {exc}".splitlines()[0]) from exc
    if not isinstance(state, dict) or state.get("version") != VERSION:
        raise NmechError(f"checkpoint {path} is not a version-{VERSION} nmech checkpoint")
    return state


def load_checkpoint(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, batches: Any
) -> int:
    """Restore every state saved by :func:`save_checkpoint`; returns its step."""
    state = _load(path)
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise NmechError(
            f"checkpoint {path} does not fit this model: {exc}".splitlines()[0]
        ) from exc
    batches.load_state_dict(state["batches"])
    _set_rng_states(state["rng"])
    return int(state["step"])
