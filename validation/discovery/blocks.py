"""Symmetry groups from a label propagation: every unbroken set of joined variables is a block.

A block's parts are its writers' parameter slices (sign +1) and its readers' columns (sign −1),
so J = P_writers − P_readers; its kind is ``scale`` when nothing reads it (every use of it is
absorbed by a normalisation) and ``rescale`` otherwise. Blocks of one layer repeat one pattern
channel by channel (row c of a Linear and column c of the next; channel c of a BatchNorm and
column c of the next conv): blocks whose parts have the same parameters, dims, signs and sizes
are gathered into one :class:`~nmech.validation.channels.Group`, channel k owning the indices
``offset + k*fan .. offset + (k+1)*fan − 1`` of every part. A block that fits no such pattern
becomes a group of its own. Group names list the writers, then ``->`` and the readers.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch

from nmech.validation.channels import Group, Part
from nmech.validation.discovery.propagate import Propagation, Slice

#: Names longer than this many layers are shortened to first+...+last.
NAME_LAYERS = 4

PartKey = tuple[str, int | None, float]  # param, dim, sign


@dataclass
class _Block:
    writers: list[str]
    readers: list[str]
    parts: dict[PartKey, list[int]]


def _module(param: str) -> str:
    return param.rsplit(".", 1)[0] if "." in param else param


def _blocks(prop: Propagation) -> list[_Block]:
    members: dict[int, list[int]] = defaultdict(list)
    for v in range(len(prop.parent)):
        if not prop.is_broken(v):
            members[prop.find(v)].append(v)
    reads: dict[int, list[Slice]] = defaultdict(list)
    for v, s in prop.reads:
        if not prop.is_broken(v):
            reads[prop.find(v)].append(s)
    rank = {name: i for i, name in enumerate(prop.order)}

    def position(key: PartKey) -> tuple:  # writers first, in graph order, then readers
        where = rank.get(key[0], rank.get(_module(key[0]), len(rank)))
        return (-key[2], where, key[0], str(key[1]))

    out = []
    for root, vars_ in members.items():
        parts: dict[PartKey, set[int]] = defaultdict(set)
        writers, readers = [], []
        for v in vars_:
            for s in prop.writes[v]:
                parts[(s.param, s.dim, 1.0)].add(s.index)
            writers.append(prop.origin[v][0])
        for s in reads[root]:
            parts[(s.param, s.dim, -1.0)].add(s.index)
            readers.append(_module(s.param))
        out.append(
            _Block(
                sorted(set(writers), key=lambda n: rank.get(n, len(rank))),
                sorted(set(readers), key=lambda n: (rank.get(n, len(rank)), n)),
                {k: sorted(parts[k]) for k in sorted(parts, key=position)},
            )
        )
    first = {name: i for i, name in enumerate(prop.order)}
    return sorted(
        out, key=lambda b: (first.get(b.writers[0], 0), min(min(v) for v in b.parts.values()))
    )


def _name(writers: list[str], readers: list[str]) -> str:
    def join(names: list[str]) -> str:
        if len(names) > NAME_LAYERS:
            return f"{names[0]}+...+{names[-1]} ({len(names)} layers)"
        return "+".join(names)

    return join(writers) + (f"->{join(readers)}" if readers else "")


def _pattern(blocks: list[_Block], shapes: dict[str, torch.Size]) -> list[Part] | None:
    """Parts of one group whose channel k is blocks[k'] (sorted), or None if they do not fit."""
    parts = []
    first_key = next(iter(blocks[0].parts))
    fan0 = len(blocks[0].parts[first_key])
    starts0 = [b.parts[first_key][0] for b in blocks]
    offset0 = min(starts0)
    if offset0 % fan0 or any((s - offset0) % fan0 for s in starts0):
        return None
    channel = [(s - offset0) // fan0 for s in starts0]
    for key in blocks[0].parts:
        param, dim, sign = key
        fan = len(blocks[0].parts[key])
        size = shapes[param][dim] if dim is not None else 1
        if dim is None or (fan == size and len(blocks) == 1):  # every index: the whole tensor
            parts.append(Part(param, None, 1, sign))
            continue
        offsets = set()
        for b, c in zip(blocks, channel, strict=True):
            idx = b.parts[key]
            if idx[-1] - idx[0] + 1 != fan:  # not one run of consecutive indices
                return None
            offsets.add(idx[0] - c * fan)
        if len(offsets) != 1 or size % fan:
            return None
        offset = offsets.pop()
        if offset < 0 or offset % fan:
            return None
        parts.append(Part(param, dim, fan, sign, offset))
    return parts


def _single(block: _Block, shapes: dict[str, torch.Size]) -> list[Part]:
    """Parts of a one-channel group: one part per run of indices (fan 1 where runs misalign)."""
    parts = _pattern([block], shapes)
    if parts is not None:
        return parts
    return [
        Part(param, dim, 1, sign, i) for (param, dim, sign), idx in block.parts.items() for i in idx
    ]


def symmetry_groups(prop: Propagation, shapes: dict[str, torch.Size]) -> list[Group]:
    """The scale and rescale groups of a propagation (module docstring), in graph order."""
    clusters: dict[tuple, list[_Block]] = defaultdict(list)
    for b in _blocks(prop):
        key = tuple((k, len(v)) for k, v in b.parts.items())
        clusters[(tuple(b.writers), tuple(b.readers), key)].append(b)
    groups: list[Group] = []
    names: set[str] = set()
    for (writers, readers, _), blocks in clusters.items():
        kind = "rescale" if readers else "scale"
        name = _name(list(writers), list(readers))
        base, n = name, 2
        while name in names:
            name, n = f"{base}#{n}", n + 1
        names.add(name)
        parts = _pattern(blocks, shapes)
        if parts is None:
            for i, b in enumerate(blocks):
                groups.append(Group(kind, f"{name}#{i}", tuple(_single(b, shapes)), 1))
            continue
        first_key = next(iter(blocks[0].parts))
        fan0 = len(blocks[0].parts[first_key])
        offset0 = min(b.parts[first_key][0] for b in blocks)
        kept = tuple(sorted((b.parts[first_key][0] - offset0) // fan0 for b in blocks))
        channels = kept[-1] + 1
        keep = None if len(kept) == channels else kept
        groups.append(Group(kind, name, tuple(parts), channels, keep))
    return groups
