"""The training loop: a torch optimizer, constant learning rate, cross-entropy, train mode.

Step n:  loss_n = CE(model(x_n), y_n);  g_n = grad loss_n;  recorder.before_step;
optimizer.step();  recorder.after_step.  The model stays in train mode throughout (BatchNorm
uses batch statistics, which is what makes it scale invariant; Dropout is active).

Faults: the recorder raises :class:`~nmech.validation.stops.Diverged` at the flush after a
non-finite step; ``on_commit(step)`` runs whenever the records are durable up to ``step``
(the place to write a checkpoint); a :class:`~nmech.validation.stops.StopRequest` that is due
before a step raises :class:`~nmech.validation.stops.Interrupted` there, with the model,
optimizer and batch stream left exactly after the last completed step.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from nmech.errors import NmechError
from nmech.validation.data import DeviceBatches
from nmech.validation.recorder import Recorder
from nmech.validation.stops import Interrupted, StopRequest

CONSTANT_LR_WARNING = (
    "a learning-rate scheduler was passed: the predicted dynamics assume a constant learning "
    "rate, so predictions after the first lr change are not comparable"
)


@dataclass(frozen=True)
class TrainResult:
    """Summary of a run: steps, wall time, throughput, last mini-batch loss and accuracy."""

    steps: int
    seconds: float
    final_loss: float
    final_accuracy: float

    @property
    def steps_per_s(self) -> float:
        """Steps per second of wall time."""
        return self.steps / self.seconds if self.seconds > 0 else float("nan")


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise NmechError("--device cuda requested but torch sees no CUDA device")
    if name not in ("cpu", "cuda"):
        raise NmechError(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device(name)


def train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: DeviceBatches,
    steps: int,
    recorder: Recorder | None = None,
    scheduler: Any | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
    progress: bool = True,
    desc: str = "train",
    start: int = 0,
    on_commit: Callable[[int], None] | None = None,
    stop: StopRequest | None = None,
) -> TrainResult:
    """Run steps ``start`` .. ``steps - 1``; the progress bar shows loss, accuracy and steps/s.

    The result counts the steps run by this call.
    """
    if steps < 1 or not 0 <= start <= steps:
        raise NmechError(f"steps must be positive and start in [0, steps], got {steps}, {start}")
    if scheduler is not None:
        warnings.warn(CONSTANT_LR_WARNING, UserWarning, stacklevel=2)
    model.train()
    bar = tqdm(total=steps, initial=start, desc=desc, disable=not progress, unit="step",
               dynamic_ncols=True)  # fmt: skip
    began = last_shown = time.perf_counter()
    loss = acc = torch.zeros(())
    for step in range(start, steps):
        if stop is not None and stop.due(step):
            bar.close()
            raise Interrupted(step, stop.signum)
        x, y = batches.next()
        optimizer.zero_grad(set_to_none=False)
        logits = model(x)
        loss = loss_fn(logits, y)
        loss.backward()
        acc = (logits.detach().argmax(dim=1) == y).double().mean()
        if recorder is not None:
            recorder.before_step(loss.detach(), acc)
        optimizer.step()
        if recorder is not None:
            recorder.after_step()
            if on_commit is not None and recorder.committed == step + 1:
                on_commit(step + 1)
        if scheduler is not None:
            scheduler.step()
        bar.update(1)
        now = time.perf_counter()
        if progress and now - last_shown > 0.5:  # host sync at most twice a second
            last_shown = now
            rate = (bar.n - start) / (now - began)
            bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{acc.item():.3f}", it_s=f"{rate:.1f}")
    if batches.device.type == "cuda":
        torch.cuda.synchronize(batches.device)
    seconds = time.perf_counter() - began
    bar.close()
    return TrainResult(steps - start, seconds, float(loss.item()), float(acc.item()))
