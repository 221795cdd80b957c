"""Symmetry blocks, vectorised per layer, and their fused per-channel float64 reductions.

A *group* is one layer's worth of blocks of one kind. Each of its ``parts`` is a parameter
tensor, the dimension that indexes channels, how many consecutive indices along it form one
channel (``fan``; a conv channel feeding a Linear through Flatten owns H*W columns), the index
at which the group's channel 0 starts (``offset``, a multiple of ``fan``: the value rows of a
fused q/k/v projection start at 2E) and the sign of that part in the generator J. For a block
A of channel c, with J = sum_parts sign*P:

    quadratic kinds (scale, rescale):  <a, J b>_c = sum_parts sign * sum_{i in part, c} a_i b_i
    linear kind (translation):         <1_A, a>_c = sum_{i in A_c} a_i

where part p's channel c is the indices offset_p + c*fan_p .. offset_p + (c+1)*fan_p - 1 along
its dim (every index, for a whole-tensor part). :func:`part_sums` sums one part over its
non-channel dims (float64, all channels of the layer at once). :class:`ChannelSums` does it for
every group of a list over the concatenated flat parameters (laid out by :func:`flat_order`): a
few dense reshape-sums give every part's channel sums, and one small sparse product with the
parts' signs gives the per-block sums.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

from nmech.errors import NmechError
from nmech.validation.kinds import is_quadratic


@dataclass(frozen=True)
class Part:
    """A parameter's share of a group: channels along ``dim`` (None: the whole tensor is one),
    ``fan`` indices each, the group's channel 0 at index ``offset`` (module docstring)."""

    param: str
    dim: int | None
    fan: int = 1
    sign: float = 1.0
    offset: int = 0

    def __post_init__(self) -> None:
        if self.fan < 1 or self.offset < 0 or self.offset % self.fan:
            raise NmechError(
                f"part of {self.param}: offset {self.offset} must be a non-negative multiple "
                f"of fan {self.fan}"
            )

    @property
    def first(self) -> int:
        """Index, in the part's per-channel sums, of the group's channel 0."""
        return 0 if self.dim is None else self.offset // self.fan


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
    def quadratic(self) -> bool:
        """True for a kind of the quadratic family (J != 0): scale, rescale."""
        return is_quadratic(self.kind)

    @property
    def kept(self) -> tuple[int, ...]:
        """Indices of the recorded channels."""
        return tuple(range(self.channels)) if self.keep is None else self.keep

    def block_names(self) -> list[str]:
        """``"<group name>[<channel>]"`` for every recorded channel."""
        return [f"{self.name}[{c}]" for c in self.kept]


def reduce_part(part: Part, t: torch.Tensor) -> torch.Tensor:
    """Sum of ``t`` (shaped like the part's parameter) over each channel along the part's dim,
    every channel of the tensor (not only the group's): a vector [shape[dim] // fan]."""
    if part.dim is None:
        return t.sum().reshape(1)
    dims = [d for d in range(t.dim()) if d != part.dim]
    per_index = t.sum(dim=dims) if dims else t
    if part.fan > 1:
        per_index = per_index.reshape(-1, part.fan).sum(dim=1)
    return per_index


def part_sums(part: Part, t: torch.Tensor, channels: int) -> torch.Tensor:
    """The group's ``channels`` per-channel sums of ``t`` over the part (offset applied; a
    whole-tensor part's single sum broadcast to every channel)."""
    sums = reduce_part(part, t)
    if part.dim is None:
        return sums.expand(channels)
    return sums[part.first : part.first + channels]


def flat_order(groups: list[Group], shapes: dict[str, torch.Size]) -> list[str]:
    """The parameters of ``groups`` in the order of a flat layout that suits :class:`ChannelSums`.

    A part along dim 0 owns rows of ``fan * numel / shape[0]`` consecutive elements of its
    parameter, a whole-tensor part one row of ``numel``. Parameters are sorted by the length of
    the rows of their first such part (column-only parameters last), then by shape and name, so
    that rows of equal length, and parameters of equal shape, lie back to back.
    """
    length: dict[str, float] = {}
    for group in groups:
        for part in group.parts:
            if part.dim in (None, 0):
                length.setdefault(part.param, _layout(shapes[part.param], part)[2])
    for group in groups:
        for part in group.parts:
            length.setdefault(part.param, math.inf)
    return sorted(length, key=lambda name: (length[name], tuple(shapes[name]), name))


class ChannelSums:
    """Per-block signed sums of flat float64 vectors, as dense reductions plus one small product.

    Parameters are flattened and concatenated, ``offsets[name]`` being where parameter ``name``
    starts. For v, a vector over that layout (or k of them stacked as [k, numel]):

        s_{p,c}      = sum_{i in part p, channel c} v_i                  (part sums)
        (M s)_A      = sum_{parts p} sign_p s_{p,c(A)}                   (block sums)

    so that with v = a*b elementwise (M s)_A = <a, J b>_A, and with v = a and all signs 1 it is
    <1_A, a>_A. A part along dim d views its parameter as [pre, inner] (pre = the sizes before
    d, inner = the rest); channel c is then, in every one of the ``pre`` rows, the ``chunk`` =
    fan * (sizes after d) consecutive entries from c * chunk. So s_p = the sum over pre (a sum
    across contiguous rows, which vectorises; none for dim 0) followed by a sum over each chunk
    (a whole-tensor part: pre = 1, chunk = numel). Parts lying back to back in v with pre = 1
    and one chunk length, or with one (pre, inner, chunk), share these two reductions (see
    :func:`flat_order`). M is a sparse CSR [recorded channels, part channels] matrix holding
    sign_p (or 1, for ``unsigned``) at (row of block A, index of s_{p,c(A)}); row r is the r-th
    recorded channel of ``groups`` (groups in order, ``kept`` channels in order).
    """

    def __init__(
        self,
        groups: list[Group],
        offsets: dict[str, int],
        shapes: dict[str, torch.Size],
        device: torch.device,
    ) -> None:
        parts = {(p.param, p.dim, p.fan): p for g in groups for p in g.parts}
        specs = []  # candidates for sharing a reduction next to each other, in memory order
        for key, part in parts.items():
            pre, inner, chunk = _layout(shapes[key[0]], part)
            specs.append(((pre, chunk, 0 if pre == 1 else inner, offsets[key[0]]), inner, key))
        self.runs: list[list[int]] = []  # [start, blocks, pre, inner, chunk]
        first: dict[tuple[str, int | None, int], int] = {}  # index of s_{p,0} in s
        width = 0
        for (pre, chunk, _, start), inner, key in sorted(specs):
            last = self.runs[-1] if self.runs else None
            if (
                last is not None
                and last[0] + last[1] * last[2] * last[3] == start
                and (last[2], last[4]) == (pre, chunk)
                and (pre == 1 or last[3] == inner)
            ):
                if pre == 1:
                    last[3] += inner
                else:
                    last[1] += 1
            else:
                self.runs.append([start, 1, pre, inner, chunk])
            first[key] = width
            width += inner // chunk
        self.width = width
        self.first = first  # (param, dim, fan) -> index of s_{p,0}: part p's channels follow it
        self.signed = _combine(groups, first, width, device, (False,))
        self.unsigned = _combine(groups, first, width, device, (True,))
        self.stacked = _combine(groups, first, width, device, (False, True))

    def sums(self, v: torch.Tensor) -> torch.Tensor:
        """The part sums s of v ([numel] or [k, numel]) as a [width, k] tensor."""
        v = v.reshape(-1, v.shape[-1])
        k = v.shape[0]
        out = []
        for start, blocks, pre, inner, chunk in self.runs:
            t = v[:, start : start + blocks * pre * inner]
            if pre > 1:
                t = t.view(k, blocks, pre, inner).sum(2)
            t = t.reshape(k, -1, chunk)
            out.append(t.sum(2) if chunk > 1 else t.reshape(k, -1))
        return torch.cat(out, 1).T.contiguous()

    def blocks(self, s: torch.Tensor, unsigned: bool = False) -> torch.Tensor:
        """The block sums M s ([recorded channels, k]) of part sums s ([width, k])."""
        return (self.unsigned if unsigned else self.signed) @ s

    def both(self, s: torch.Tensor) -> torch.Tensor:
        """[M s, |M| s] ([recorded channels, 2k]) from one product with M and |M| stacked."""
        out = self.stacked @ s  # [2 * recorded, k]
        return out.view(2, -1, s.shape[1]).transpose(0, 1).reshape(out.shape[0] // 2, -1)


def _layout(shape: torch.Size, part: Part) -> tuple[int, int, int]:
    """(pre, inner, chunk) of a part: its parameter viewed as [pre, inner] around the channel
    dim, channel c owning entries c*chunk .. (c+1)*chunk - 1 of every one of the pre rows."""
    numel = math.prod(shape)
    if part.dim is None:
        return 1, numel, numel
    return (
        math.prod(shape[: part.dim]),
        math.prod(shape[part.dim :]),
        part.fan * math.prod(shape[part.dim + 1 :]),
    )


def _combine(
    groups: list[Group],
    first: dict[tuple[str, int | None, int], int],
    width: int,
    device: torch.device,
    unsigned: tuple[bool, ...],
) -> torch.Tensor:
    """Sparse CSR M [recorded channels, width]: M[r, first[part] + offset/fan + c] = sign of the
    part (or 1) for the block of row r, channel c of its group (one column for a whole-tensor
    part); parts in group order within a row. One such matrix per
    entry of ``unsigned`` (signs, or all 1 when True), stacked along the rows."""
    crow = [0]
    cols: list[int] = []
    vals: list[float] = []
    for all_ones in unsigned:
        for group in groups:
            for c in group.kept:
                for p in group.parts:
                    cols.append(
                        first[(p.param, p.dim, p.fan)] + (0 if p.dim is None else p.first + c)
                    )
                    vals.append(1.0 if all_ones else p.sign)
                crow.append(len(cols))
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.tensor(crow, dtype=torch.int64),
            torch.tensor(cols, dtype=torch.int64),
            torch.tensor(vals, dtype=torch.float64),
            (len(crow) - 1, width),
            device=device,
        )
