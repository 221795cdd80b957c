"""The numeric check of candidate blocks on a real batch: is the generator orthogonal to the
gradient?

For block A with generator ξ = Jθ + c (ξ = s_i θ_i on a quadratic block, 1 on a linear one),
gradient g of the batch loss and M the parameters of the layers the block's parts belong to:

    violation_A = |⟨g, ξ⟩_A| / (|ξ_A| · max(|g_A|, ḡ_A) + 1e-30),     ḡ_A = |g_M| √(|A| / |M|)

i.e. the cosine between g and ξ on the block, except that a block whose own gradient is far
below its layers' average (ḡ_A: the norm a block of |A| elements would have at the layers'
mean square gradient) is measured against that average; an attention key-bias entry, whose
gradient is identically zero, then reads |g_i| / ḡ_A rather than a meaningless 1. A block is
kept when violation_A ≤ ``tol`` for the quadratic family (default 1e-3: float32 round-off and
a normalisation's ε, which breaks scale invariance by about ε / Var) and ≤ ``tol`` ×
``LINEAR_TOL_FACTOR`` for the linear family (exact symmetries, float32 round-off only; the
tighter bound keeps an ordinary bias entry whose gradient happens to be small from passing).
|ξ_A| and |g_A| sum every part: an element in two parts of one block is counted twice.
"""

from __future__ import annotations

import torch

from nmech.validation.channels import Group, part_sums

LINEAR_TOL_FACTOR = 1e-2


def _sq_sums(group: Group, t: dict[str, torch.Tensor]) -> torch.Tensor:
    """|t_A|² per channel, every part counted positively (float64)."""
    return sum(part_sums(p, t[p.param].double() ** 2, group.channels) for p in group.parts)


def _layer_rms(group: Group, grads: dict[str, torch.Tensor], numel: dict[str, int]) -> torch.Tensor:
    """|g_M|² / |M| for the layers (parameter-name prefixes) of the group's parts."""
    layers = {p.param.rsplit(".", 1)[0] for p in group.parts}
    names = [n for n in grads if n.rsplit(".", 1)[0] in layers]
    total = sum(float(grads[n].double().square().sum()) for n in names)
    return torch.tensor(total / max(1, sum(numel[n] for n in names)), dtype=torch.float64)


def violations(
    groups: list[Group], params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor]
) -> list[torch.Tensor]:
    """Per group and channel, violation_A of the module docstring (float64, on the CPU)."""
    numel = {n: t.numel() for n, t in grads.items()}
    out = []
    for g in groups:
        if g.quadratic:
            xi = {p.param: params[p.param] * p.sign for p in g.parts}
        else:
            xi = {p.param: torch.ones_like(params[p.param]) for p in g.parts}
        dot = sum(
            part_sums(p, grads[p.param].double() * xi[p.param].double(), g.channels)
            for p in g.parts
        )
        sizes = _sq_sums(g, {p.param: torch.ones_like(params[p.param]) for p in g.parts})
        layer = (_layer_rms(g, grads, numel) * sizes).sqrt()
        own = _sq_sums(g, grads).sqrt()
        scale = _sq_sums(g, xi).sqrt() * torch.maximum(own, layer.to(own.device)) + 1e-30
        out.append((dot.abs() / scale).cpu())
    return out
