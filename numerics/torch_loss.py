"""Losses of real networks as functions of one flat parameter vector, for the torch hand-off.

:func:`module_loss` turns an ``nn.Module``, a (full) batch and a criterion into
θ ↦ criterion(model_θ(x), y) with ``torch.func.functional_call``, θ the module's parameters
flattened in ``named_parameters`` order. The module is deep-copied, and in the copy every
BatchNorm and LayerNorm layer is replaced by the same normalisation written in elementary ops
(:class:`ElementaryNorm`): torch's fused kernels give wrong derivatives of order three and up
under nested forward-mode AD (measured here: 0.1-0.2 % off finite differences for
``batch_norm`` and ``layer_norm`` at float64; pytorch/pytorch#196699), and the hand-off
nests jvps. A BatchNorm in training mode normalises with the batch's statistics (biased
variance, as torch) and keeps no running statistics, so the loss is a pure function of θ; in
eval mode it uses the running statistics it was given.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call

from nmech.errors import NmechError

Loss = Callable[[torch.Tensor], torch.Tensor]


class ElementaryNorm(nn.Module):
    """(x − μ)/√(σ² + ε)·w + b over ``dims`` (batch norm: all but the channel dimension;
    layer norm: the trailing normalised dimensions), in elementary differentiable ops.
    ``running`` = (mean, var) replaces the batch statistics (a BatchNorm in eval mode)."""

    def __init__(self, source: nn.Module) -> None:
        super().__init__()
        self.weight, self.bias, self.eps = source.weight, source.bias, source.eps
        self.layer = isinstance(source, nn.LayerNorm)
        self.trailing = len(source.normalized_shape) if self.layer else 0
        use_running = not self.layer and not source.training and source.running_mean is not None
        self.running = (source.running_mean, source.running_var) if use_running else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The normalised, scaled and shifted x."""
        if self.layer:
            dims = tuple(range(x.ndim - self.trailing, x.ndim))
            shape = x.shape[x.ndim - self.trailing :]
        else:
            dims = (0, *range(2, x.ndim))
            shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
        if self.running is not None:
            mean, var = (s.view(shape) for s in self.running)
        else:
            mean = x.mean(dims, keepdim=True)
            var = ((x - mean) ** 2).mean(dims, keepdim=True)
        out = (x - mean) / torch.sqrt(var + self.eps)
        if self.weight is not None:
            out = out * self.weight.view(shape)
        if self.bias is not None:
            out = out + self.bias.view(shape)
        return out


def _replace_norms(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm)):
            setattr(module, name, ElementaryNorm(child))
        else:
            _replace_norms(child)


class ModuleLoss:
    """θ ↦ criterion(model_θ(x), y) for a flat parameter vector θ (see the module docstring)."""

    def __init__(
        self,
        model: nn.Module,
        batch: tuple[torch.Tensor, torch.Tensor],
        criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> None:
        self.model = copy.deepcopy(model)
        _replace_norms(self.model)
        named = list(self.model.named_parameters())
        if not named:
            raise NmechError("the model has no parameters")
        self.names = [n for n, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        self.numel = sum(self.sizes)
        self.dtype = named[0][1].dtype
        self.buffers = dict(self.model.named_buffers())
        self.x, self.y = batch
        self.criterion = criterion

    def theta(self) -> torch.Tensor:
        """The module's current parameters as one flat vector (a copy)."""
        return torch.cat([p.detach().reshape(-1) for p in self.model.parameters()])

    def parameters(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """θ split into the module's named parameter tensors (views)."""
        parts = torch.split(theta, self.sizes)
        return {n: p.view(s) for n, p, s in zip(self.names, parts, self.shapes)}

    def __call__(self, theta: torch.Tensor) -> torch.Tensor:
        out = functional_call(self.model, {**self.parameters(theta), **self.buffers}, (self.x,))
        return self.criterion(out, self.y)


def module_loss(
    model: nn.Module,
    batch: tuple[torch.Tensor, torch.Tensor],
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> ModuleLoss:
    """The loss θ ↦ criterion(model_θ(x), y) of a module on one (full) batch ``(x, y)``."""
    return ModuleLoss(model, batch, criterion)


def check_theta(theta: object, loss: Loss | None = None, finite: bool = True) -> torch.Tensor:
    """θ must be a 1-D floating tensor (of the loss's size where the loss knows it), finite."""
    if not isinstance(theta, torch.Tensor):
        raise NmechError(f"theta must be a torch tensor, got {type(theta).__name__}")
    if theta.ndim != 1:
        raise NmechError(f"theta must be a 1-D tensor, got shape {tuple(theta.shape)}")
    if not theta.is_floating_point():
        raise NmechError(f"theta must be a floating-point tensor, got {theta.dtype}")
    expected = getattr(loss, "numel", None)
    if expected is not None and theta.numel() != expected:
        raise NmechError(f"theta has {theta.numel()} entries, the model has {expected} parameters")
    want = getattr(loss, "dtype", None)
    if want is not None and theta.dtype != want:
        raise NmechError(f"theta is {theta.dtype}, the model's parameters are {want}")
    if finite and not bool(torch.isfinite(theta).all()):
        raise NmechError("theta has a non-finite entry (NaN or inf)")
    return theta


def check_loss_value(value: object) -> torch.Tensor:
    """The loss must return a finite scalar tensor."""
    if not isinstance(value, torch.Tensor):
        raise NmechError(f"the loss must return a torch tensor, got {type(value).__name__}")
    if value.ndim != 0:
        raise NmechError(f"the loss must return a scalar, got shape {tuple(value.shape)}")
    if not math.isfinite(float(value)):
        raise NmechError(f"the loss is not finite at theta ({float(value)})")
    return value
