"""The recorder's passes over the flat parameter layout: generated summands, summed per part.

A *pass* turns per-element summands f_1..f_M of the recorded signals (sympy, see
:mod:`nmech.validation.signals`) into the part sums

    s_{p,c,m} = Σ_{i ∈ part p, channel c} f_m(x_i)

over flat arrays laid out as in :class:`~nmech.validation.channels.ChannelSums` (the same
[width, M] result as ``ChannelSums.sums`` of the stacked products). Two routes compute it:

* :class:`CompiledPass` (CPU): one numba kernel generated from the summands
  (:mod:`nmech.validation.codegen`) reads every input once and keeps the products in float64
  registers; inputs may stay in the parameters' own float type (converted exactly), and may be
  given per parameter (e.g. an optimizer's state tensors, read where they are). Eager
  torch ops cannot fuse, and on the CPU their cost is the memory traffic of writing the
  products and reading them back.
* :class:`TorchPass` (GPU, or ``fused=False``): the same summands lambdified to torch ops on
  float64 tensors, stacked, and reduced by :meth:`ChannelSums.sums`.

:class:`CsrMatrix` computes the block sums M s into a given array (compiled, CPU).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numba
import numpy as np
import sympy as sp
import torch

from nmech.validation.addresses import AddressTable, flat_table
from nmech.validation.channels import ChannelSums
from nmech.validation.codegen import COLUMNS, ROWS, WHOLE, Kernel, generate, split_scalars


@numba.njit(cache=True, fastmath={"reassoc", "contract"}, boundscheck=False)
def _combine(crow, col, val, s, out):  # pragma: no cover - compiled
    """out[r, m] = sum_q val[q] s[col[q], m] over row r's entries of a CSR matrix."""
    for r in range(out.shape[0]):
        for m in range(out.shape[1]):
            t = 0.0
            for q in range(crow[r], crow[r + 1]):
                t += val[q] * s[col[q], m]
            out[r, m] = t


class CsrMatrix:
    """A CPU sparse CSR matrix whose products are computed into a given array: torch's sparse
    product allocates its result and scratch afresh on every call, which after a training step
    costs several times the product itself (first-touched memory on these VMs)."""

    def __init__(self, matrix: torch.Tensor) -> None:
        self.crow = matrix.crow_indices().numpy()
        self.col = matrix.col_indices().numpy()
        self.val = matrix.values().numpy()

    def into(self, s: np.ndarray, out: np.ndarray) -> None:
        """``out[:] = M @ s`` (``out`` may be a strided view)."""
        _combine(self.crow, self.col, self.val, s, out)


def kernel_layout(
    channel_sums: ChannelSums, offsets: Mapping[str, int], shapes: Mapping[str, torch.Size]
) -> tuple[np.ndarray, np.ndarray, int, list[str]]:
    """(params, parts, widest row, parameter names) for :mod:`nmech.validation.codegen`'s
    kernels: one row (rows, row length, first part, end part) per parameter viewed as
    [shape[0], rest] (in flat order, the names'), one row (kind, fan, base, div, mod) per part
    of it (ROWS for dim 0, COLUMNS for dim d ≥ 1, WHOLE for a whole-tensor part; base = index
    of its channel 0 in the part sums)."""
    by_param: dict[str, list[tuple[int, int, int, int, int]]] = {}
    for (name, dim, fan), base in channel_sums.first.items():
        shape = shapes[name]
        if dim is None:
            spec = (WHOLE, 1, base, 1, 1)
        elif dim == 0:
            spec = (ROWS, fan, base, 1, 1)
        else:
            spec = (COLUMNS, fan, base, math.prod(shape[dim + 1 :]), shape[dim])
        by_param.setdefault(name, []).append(spec)
    params, parts = [], []
    widest = 1
    names = sorted(by_param, key=offsets.__getitem__)
    for name in names:
        shape = shapes[name]
        rows = shape[0] if len(shape) else 1
        n = math.prod(shape) // max(rows, 1)
        widest = max(widest, n)
        specs = sorted(by_param[name])
        params.append((rows, n, len(parts), len(parts) + len(specs)))
        parts += specs
    return (
        np.array(params, dtype=np.int64).reshape(-1, 4),
        np.array(parts, dtype=np.int64).reshape(-1, 5),
        widest,
        names,
    )


def shares(sizes: Sequence[int], workers: int) -> tuple[np.ndarray, np.ndarray]:
    """(order, starts): the parameters ``order[starts[w] : starts[w + 1]]`` (ascending) for
    worker w, shared by size (each in turn, largest first, to the least loaded worker)."""
    workers = max(1, min(workers, len(sizes)))
    load = [0] * workers
    share: list[list[int]] = [[] for _ in range(workers)]
    for p in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        w = load.index(min(load))
        share[w].append(p)
        load[w] += sizes[p]
    order = np.array([p for ps in share for p in sorted(ps)], dtype=np.int64)
    return order, np.cumsum([0] + [len(ps) for ps in share]).astype(np.int64)


class CompiledPass:
    """The part sums of ``summands`` over ``arrays`` by one generated kernel (CPU; module
    docstring). :meth:`sums` returns a [width, M] float64 CPU tensor reused by the next call."""

    def __init__(
        self,
        summands: Sequence[sp.Expr],
        arrays: Sequence[sp.Symbol],
        channel_sums: ChannelSums,
        offsets: Mapping[str, int],
        shapes: Mapping[str, torch.Size],
    ) -> None:
        self.kernel: Kernel = generate(summands, arrays)
        self.params, self.parts, widest, names = kernel_layout(channel_sums, offsets, shapes)
        flat = sorted(offsets, key=offsets.__getitem__)
        self.members = [flat.index(n) for n in names]
        self.spans = [(offsets[n], shapes[n].numel()) for n in names]
        self.order, self.starts = shares([n for _, n in self.spans], numba.get_num_threads())
        self.out = torch.zeros(channel_sums.width, self.kernel.outputs, dtype=torch.float64)
        self._out = self.out.numpy()
        workers = len(self.starts) - 1
        self.scratch = np.zeros((workers, 2, self.kernel.outputs, widest))
        self.scalars = self.kernel.scalars

    def addresses(self, source: torch.Tensor | AddressTable) -> tuple[Any, Any]:
        """Where the kernel reads ``source``: a flat CPU tensor laid out by the offsets, or the
        :class:`~nmech.validation.addresses.AddressTable` of all the recorded parameters'
        tensors in flat order (e.g. an optimizer's ``exp_avg`` per parameter, or their
        gradients), read in place."""
        if isinstance(source, torch.Tensor):
            return flat_table(source, self.spans)
        return source.addresses[self.members], source.like

    def sums(
        self, arrays: Mapping[str, torch.Tensor | AddressTable], k: np.ndarray
    ) -> torch.Tensor:
        """Part sums for ``arrays`` (by symbol name, as :meth:`addresses` takes them) and
        scalar values ``k``."""
        inputs = [self.addresses(arrays[name]) for name in self.kernel.inputs]
        self.kernel.run(inputs, k, self.params, self.parts, self.order, self.starts, self._out,
                        self.scratch)  # fmt: skip
        return self.out


class TorchPass:
    """The same part sums with torch ops on float64 tensors (any device; module docstring)."""

    def __init__(
        self, summands: Sequence[sp.Expr], arrays: Sequence[sp.Symbol], channel_sums: ChannelSums
    ) -> None:
        exprs, self.scalars, ks = split_scalars(summands, arrays)
        self.inputs = tuple(str(a) for a in arrays)
        modules = [{"sqrt": torch.sqrt, "Abs": torch.abs, "Max": torch.maximum}]
        self.function = sp.lambdify([*arrays, *ks], exprs, modules=modules)
        self.channel_sums = channel_sums
        self.outputs = len(exprs)
        self.stacked: torch.Tensor | None = None

    def sums(self, arrays: Mapping[str, torch.Tensor], k: Any) -> torch.Tensor:
        """Part sums [width, M] of float64 flat tensors ``arrays`` for scalar values ``k``."""
        values = self.function(*(arrays[n] for n in self.inputs), *k)
        first = arrays[self.inputs[0]]
        if self.stacked is None:
            self.stacked = torch.empty(self.outputs, first.numel(), dtype=torch.float64,
                                       device=first.device)  # fmt: skip
        for row, v in zip(self.stacked, values, strict=True):
            row.copy_(v)
        return self.channel_sums.sums(self.stacked)
