"""Symmetry blocks, vectorised per layer, and their fused per-channel float64 reductions.

A *group* is one layer's worth of blocks of one kind. Each of its ``parts`` is a parameter
tensor, the dimension that indexes channels, how many consecutive indices along it form one
channel (``fan``; a conv channel feeding a Linear through Flatten owns H*W columns) and the
sign of that part in the generator J. For a block A of channel c, with J = sum_parts sign*P:

    quadratic kinds (scale, rescale):  <a, J b>_c = sum_parts sign * sum_{i in part, c} a_i b_i
    linear kind (translation):         <1_A, a>_c = sum_{i in A_c} a_i

Every reduction is one multiply and one ``sum`` over the non-channel dims per part, in float64,
giving a vector over all channels of the layer at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

KINDS: tuple[str, ...] = ("scale", "rescale", "translation")
QUADRATIC: frozenset[str] = frozenset({"scale", "rescale"})


@dataclass(frozen=True)
class Part:
    """A parameter's share of a group: channels along ``dim`` (None: the whole tensor is one)."""

    param: str
    dim: int | None
    fan: int = 1
    sign: float = 1.0


@dataclass(frozen=True)
class Group:
    """The blocks of one kind in one layer: channel c of every part forms block c.

    ``keep`` lists the channels that passed the numerical symmetry check (None: all of them);
    only those are recorded.
    """

    kind: str
    name: str
    parts: tuple[Part, ...]
    channels: int
    keep: tuple[int, ...] | None = None

    @property
    def kept(self) -> tuple[int, ...]:
        """Indices of the recorded channels."""
        return tuple(range(self.channels)) if self.keep is None else self.keep

    def block_names(self) -> list[str]:
        """``"<group name>[<channel>]"`` for every recorded channel."""
        return [f"{self.name}[{c}]" for c in self.kept]


def reduce_part(part: Part, t: torch.Tensor) -> torch.Tensor:
    """Sum of ``t`` (shaped like the part's parameter) over each channel: a vector [channels]."""
    if part.dim is None:
        return t.sum().reshape(1)
    dims = [d for d in range(t.dim()) if d != part.dim]
    per_index = t.sum(dim=dims) if dims else t
    if part.fan > 1:
        per_index = per_index.reshape(-1, part.fan).sum(dim=1)
    return per_index


def signed_sum(
    group: Group, products: dict[str, torch.Tensor], unsigned: bool = False
) -> torch.Tensor:
    """sum_parts sign * (per-channel sum of ``products[part.param]``): a vector [channels].

    With products = a*b elementwise (float64) this is <a, J b> per channel of a quadratic group;
    with products = a (and signs +1) it is <1_A, a> of a translation group. ``unsigned`` drops
    the signs (|theta_A1|^2 + |theta_A2|^2 instead of the difference).
    """
    total: torch.Tensor | None = None
    for part in group.parts:
        sign = 1.0 if unsigned else part.sign
        term = reduce_part(part, products[part.param])
        total = term * sign if total is None else total + sign * term
    if total is None:
        raise ValueError(f"group {group.name} has no parts")
    return total
