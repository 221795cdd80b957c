"""The training loop: a torch optimizer, constant learning rate, a loss (cross-entropy per image,
or per position of a token window), train mode.

Step n:  loss_n = loss(model(x_n), y_n);  g_n = grad loss_n;  recorder.before_step;
optimizer.step();  recorder.after_step.  The model stays in train mode throughout (BatchNorm
uses batch statistics, which is what makes it scale invariant; Dropout is active).

GPU path switches (each off by default; none changes the parameters' values or which tensors
the optimizer and recorder see):

* ``channels_last``: every input batch is made ``torch.channels_last`` (the model is converted
  by :func:`prepare_model`);
* ``autocast_dtype``: forward and loss run under ``torch.autocast(device, dtype)``; backward,
  the optimizer and the recorder stay in the parameters' dtype;
* ``forward``: the module called for the forward pass (e.g. ``torch.compile(model)``, see
  :func:`prepare_model`); ``model`` keeps being the one the optimizer and recorder hold.

Faults: the recorder raises :class:`~nmech.validation.stops.Diverged` at the flush after a
non-finite step; ``on_commit(step)`` runs whenever the records are durable up to ``step``
(the place to write a checkpoint); a :class:`~nmech.validation.stops.StopRequest` that is due
before a step raises :class:`~nmech.validation.stops.Interrupted` there, with the model,
optimizer and batch stream left exactly after the last completed step.
"""

from __future__ import annotations

import contextlib
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


def compile_error(exc: BaseException) -> bool:
    """True when ``exc`` comes from torch.compile's machinery (dynamo, inductor, a backend)."""
    mod = type(exc).__module__ or ""
    return mod.startswith(("torch._dynamo", "torch._inductor", "torch.fx")) or any(
        (type(e).__module__ or "").startswith(("torch._dynamo", "torch._inductor"))
        for e in (exc.__cause__, exc.__context__)
        if e is not None
    )


def prepare_model(
    model: nn.Module, channels_last: bool = False, compile: bool = False
) -> nn.Module:
    """Apply the memory-format and compile switches; returns the module to call forward on.

    ``channels_last`` converts ``model`` in place (same parameter objects, same values);
    ``compile`` returns ``torch.compile(model)``, whose parameters are ``model``'s own.
    """
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if not compile:
        return model
    try:
        return torch.compile(model)  # type: ignore[return-value]
    except Exception as exc:
        raise NmechError(f"--compile: torch.compile is unavailable here: {exc}") from None


def train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Any,
    steps: int,
    recorder: Recorder | None = None,
    scheduler: Any | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
    progress: bool = True,
    desc: str = "train",
    start: int = 0,
    on_commit: Callable[[int], None] | None = None,
    stop: StopRequest | None = None,
    forward: nn.Module | None = None,
    autocast_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> TrainResult:
    """Run steps ``start`` .. ``steps - 1``; the progress bar shows loss, accuracy and steps/s.

    ``forward`` (default ``model``), ``autocast_dtype`` and ``channels_last`` are the GPU path
    switches of the module docstring. A compiled ``forward`` that fails to compile raises
    :class:`NmechError`. The result counts the steps run by this call.
    """
    if steps < 1 or not 0 <= start <= steps:
        raise NmechError(f"steps must be positive and start in [0, steps], got {steps}, {start}")
    if scheduler is not None:
        warnings.warn(CONSTANT_LR_WARNING, UserWarning, stacklevel=2)
    model.train()
    call = model if forward is None else forward
    memory = torch.channels_last if channels_last else torch.contiguous_format

    def autocast() -> contextlib.AbstractContextManager[Any]:
        if autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(batches.device.type, dtype=autocast_dtype)

    bar = tqdm(total=steps, initial=start, desc=desc, disable=not progress, unit="step",
               dynamic_ncols=True)  # fmt: skip
    began = last_shown = time.perf_counter()
    loss = acc = torch.zeros(())
    for step in range(start, steps):
        if stop is not None and stop.due(step):
            bar.close()
            raise Interrupted(step, stop.signum)
        x, y = batches.next()
        if channels_last:
            x = x.contiguous(memory_format=memory)
        optimizer.zero_grad(set_to_none=False)
        try:
            with autocast():
                logits = call(x)
                loss = loss_fn(logits, y)
            loss.backward()
        except Exception as exc:
            if call is model or not compile_error(exc):
                raise
            bar.close()
            first = (str(exc).strip().splitlines() or [""])[0]
            raise NmechError(f"--compile: torch.compile failed on this machine "
                             f"({type(exc).__name__}: {first})") from None  # fmt: skip
        acc = (logits.detach().argmax(dim=-1) == y).double().mean()
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
