"""Reading tensors where torch keeps them from a compiled kernel, by data address.

A numba kernel takes arrays as arguments, and a list of arrays only as a typed list, whose
construction costs ~8 µs per array (every element is unboxed): for the ~60 parameters of a
ResNet, more than copying their values. A table of data addresses costs ~0.3 µs per tensor
and lets a kernel view each tensor in place::

    x = numba.carray(address(table[p]), numel, like.dtype)

(``like``: an empty array of the tensors' dtype, so that the kernel is compiled per dtype).
:class:`AddressTable` is built only for tensors such a view reads right (:func:`readable`:
contiguous CPU tensors of one dtype, shaped like their parameters) and holds them while it
lives; :func:`flat_table` gives the same for the pieces of one flat tensor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

#: The dtypes a kernel reads (its sums are float64; float32 values convert exactly).
READABLE = {torch.float32: np.float32, torch.float64: np.float64}


@intrinsic
def address(typingctx: Any, src: Any) -> Any:  # pragma: no cover - compiled
    """The integer ``src`` as a ``void*`` (for ``numba.carray``)."""
    sig = types.voidptr(src)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return sig, codegen


def readable(tensors: Sequence[torch.Tensor], shapes: Sequence[torch.Size]) -> bool:
    """Whether a kernel can read ``tensors`` in place as the parameters of ``shapes``:
    contiguous CPU tensors of one readable dtype, shaped like them."""
    if not tensors or tensors[0].dtype not in READABLE:
        return False
    dtype = tensors[0].dtype
    return all(
        t.dtype == dtype and t.is_cpu and t.is_contiguous() and t.shape == shape
        for t, shape in zip(tensors, shapes, strict=True)
    )


@dataclass(frozen=True)
class AddressTable:
    """Where a kernel reads per-parameter tensors: their data ``addresses`` (int64, in the
    parameters' order) and ``like``, an empty array of their dtype. ``tensors`` keeps them
    alive as long as the table."""

    addresses: np.ndarray
    like: np.ndarray
    tensors: tuple[torch.Tensor, ...]

    @classmethod
    def of(
        cls, tensors: Sequence[torch.Tensor], shapes: Sequence[torch.Size]
    ) -> AddressTable | None:
        """The table of ``tensors`` read as the parameters of ``shapes``, or None unless
        :func:`readable`."""
        if not readable(tensors, shapes):
            return None
        table = np.fromiter((t.data_ptr() for t in tensors), np.int64, len(tensors))
        return cls(table, np.empty(0, READABLE[tensors[0].dtype]), tuple(tensors))


def flat_table(
    flat: torch.Tensor, spans: Sequence[tuple[int, int]]
) -> tuple[np.ndarray, np.ndarray]:
    """(addresses, empty array of the dtype) of the pieces ``flat[o : o + n]`` of a flat
    tensor, for (o, n) in ``spans``; ValueError unless it is a contiguous CPU float32/float64
    tensor long enough."""
    if not (flat.dtype in READABLE and flat.is_cpu and flat.is_contiguous()):
        raise ValueError("a kernel reads a contiguous CPU float32/float64 flat tensor")
    if spans and max(o + n for o, n in spans) > flat.numel():
        raise ValueError("flat tensor shorter than its parameters' layout")
    start = np.array([o for o, _ in spans], dtype=np.int64)
    return flat.data_ptr() + start * flat.element_size(), np.empty(0, READABLE[flat.dtype])
