"""Symmetry blocks, vectorised per layer, and their fused per-channel float64 reductions.

A *group* is one layer's worth of blocks of one kind. Each of its ``parts`` is a parameter
tensor, the dimension that indexes channels, how many consecutive indices along it form one
channel (``fan``; a conv channel feeding a Linear through Flatten owns H*W columns) and the
sign of that part in the generator J. For a block A of channel c, with J = sum_parts sign*P:

    quadratic kinds (scale, rescale):  <a, J b>_c = sum_parts sign * sum_{i in part, c} a_i b_i
    linear kind (translation):         <1_A, a>_c = sum_{i in A_c} a_i

:func:`reduce_part` sums one part over its non-channel dims (float64, all channels of the layer
at once). :func:`channel_matrix` fuses every group of a list into one sparse matrix M over the
concatenated flat parameters, M[r, i] = sign of element i in the block of row r, so that one
sparse product M @ v gives the per-block sums of v for all blocks together.
"""

from __future__ import annotations

import math
import warnings
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


def channel_matrix(
    groups: list[Group],
    offsets: dict[str, int],
    shapes: dict[str, torch.Size],
    numel: int,
    device: torch.device,
    unsigned: bool = False,
) -> torch.Tensor:
    """Sparse CSR float64 matrix M [recorded channels of ``groups``, ``numel``] of the blocks.

    Parameters are flattened and concatenated, ``offsets[name]`` being where parameter ``name``
    starts. Row r is the r-th recorded channel (groups in order, ``kept`` channels in order);
    M[r, i] = s_i, the sign of the part that owns element i in that block (1 with ``unsigned``),
    and 0 outside the block. Hence for a flat float64 vector v, (M @ v)_A = sum_{i in A} s_i v_i:
    with v = a*b elementwise this is <a, J b>_A; with v = a and s = 1 it is <1_A, a>_A.
    """
    rows: list[torch.Tensor] = []
    cols: list[torch.Tensor] = []
    vals: list[torch.Tensor] = []
    base = 0
    for group in groups:
        row_of = torch.full((group.channels,), -1, dtype=torch.int64)
        row_of[list(group.kept)] = torch.arange(base, base + len(group.kept))
        for part in group.parts:
            shape = shapes[part.param]
            n = math.prod(shape)
            if part.dim is None:
                channel = torch.zeros(n, dtype=torch.int64)
            else:
                along = torch.arange(shape[part.dim]) // part.fan
                view = [-1 if d == part.dim else 1 for d in range(len(shape))]
                channel = along.view(view).expand(shape).reshape(-1)
            row = row_of[channel]
            inside = row >= 0
            rows.append(row[inside])
            cols.append(torch.arange(n)[inside] + offsets[part.param])
            vals.append(torch.full((int(inside.sum()),), 1.0 if unsigned else part.sign))
        base += len(group.kept)
    row = torch.cat(rows) if rows else torch.zeros(0, dtype=torch.int64)
    col = torch.cat(cols) if cols else torch.zeros(0, dtype=torch.int64)
    val = torch.cat(vals) if vals else torch.zeros(0)
    row, order = torch.sort(row, stable=True)
    crow = torch.zeros(base + 1, dtype=torch.int64)
    crow[1:] = torch.bincount(row, minlength=base).cumsum(0)
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            crow, col[order], val[order].double(), (base, numel), device=device
        )
