"""One fused pass for the recorder's per-step quadratic signals on the CPU (numba).

For the flat vectors theta_n, g_n and theta_{n+1} (laid out as in
:class:`~nmech.validation.channels.ChannelSums`; g_n float64 or the parameters' own float type)
and every part p of a quadratic block, channel c:

    s_{p,c} = sum_{i in part p, channel c} [D_i^2, D_i g_i, g_i^2, theta_{n+1,i}^2],
    D = theta_{n+1} - theta_n,

the part sums :meth:`ChannelSums.sums` gives for the stacked products [D^2; D*g; g^2;
theta_{n+1}^2], in the same order. The torch route writes those four products to memory and
reads them back (eager ops cannot fuse), so on the CPU its cost is memory traffic; here every
element is read once and the products live in registers. Each parameter is viewed as
[O, I, R] (O = shape[0], I = shape[1] or 1, R = the rest): a part along dim 0 with fan f sums
rows o // f, one along dim 1 sums columns i // f (accumulated over the rows in an [I*R] scratch,
folded by R at the end), a whole-tensor part everything. The same pass gives AdamW's signals
[theta u, u^2, u] with its update direction u formed in registers from the moments (UPDATE).
Accumulation is float64 throughout; LLVM may reassociate the sums to vectorise them, which
changes round-off only (not NaN/inf propagation, so a diverging step still shows up
non-finite).
"""

from __future__ import annotations

import functools
import math

import numba
import numpy as np
import torch

from nmech.validation.channels import ChannelSums

#: Compiled once per input types and cached on disk. IEEE division (error_model="numpy": a zero
#: divisor gives inf/NaN, as in torch, not an exception) and reassociation only (no fast-math
#: no-NaN/no-inf assumptions), so that LLVM vectorises the loops and non-finite values propagate.
_kernel = functools.partial(
    numba.njit, cache=True, fastmath={"reassoc", "contract"}, error_model="numpy", boundscheck=False
)
ROWS, COLUMNS, WHOLE = 0, 1, 2
#: What a pass sums (its inputs x, y, z and scalars k):
#: STEP   x = theta_{n+1}, y = theta_n, z = g_n:  [d^2, d z, z^2, x^2], d = x - y;
#: UPDATE x = theta_n, y = exp_avg m, z = exp_avg_sq v, k = (1 - beta1^n, sqrt(1 - beta2^n), eps):
#:        [x u, u^2, u, 0], u = y / (k0 (sqrt(z) / k1 + k2)), AdamW's update direction.
STEP, UPDATE = 0, 1


@_kernel(inline="always")
def _products(mode, x, y, z, k):
    """The four summands of one entry (see STEP, UPDATE); inputs converted to float64."""
    x, y, z = np.float64(x), np.float64(y), np.float64(z)
    if mode == STEP:
        d = x - y
        return d * d, d * z, z * z, x * x
    u = y / (k[0] * (np.sqrt(z) / k[1] + k[2]))
    return x * u, u * u, u, 0.0


@_kernel(inline="always")
def _row(mode, x, y, z, k, acc, c0, c1, c2, c3, columns):
    """acc = the sums of the four summands over one row; with ``columns``, each entry's four
    summands are also added to the column scratch c0..c3."""
    s0 = s1 = s2 = s3 = 0.0
    for j in range(x.shape[0]):
        p0, p1, p2, p3 = _products(mode, x[j], y[j], z[j], k)
        s0 += p0
        s1 += p1
        s2 += p2
        s3 += p3
        if columns:
            c0[j] += p0
            c1[j] += p1
            c2[j] += p2
            c3[j] += p3
    acc[0], acc[1], acc[2], acc[3] = s0, s1, s2, s3


@_kernel()
def _part_sums(mode, x, y, z, k, params, parts, s, columns):
    """s[part channel] = sums of the four summands; params[p] = (offset, O, I, R, first part,
    end part), parts[q] = (kind, fan, base)."""
    s[:] = 0.0
    acc = np.empty(4)
    for p in range(params.shape[0]):
        a, rows, cols, rest, q0, q1 = params[p]
        n = cols * rest
        by_column = False
        for q in range(q0, q1):
            by_column = by_column or parts[q, 0] == COLUMNS
        if by_column:
            columns[:, :n] = 0.0
        for o in range(rows):
            b = a + o * n
            _row(
                mode, x[b : b + n], y[b : b + n], z[b : b + n], k, acc,
                columns[0, :n], columns[1, :n], columns[2, :n], columns[3, :n], by_column,
            )  # fmt: skip
            for q in range(q0, q1):
                kind, fan, base = parts[q]
                if kind != COLUMNS:
                    c = base + o // fan if kind == ROWS else base
                    for m in range(4):
                        s[c, m] += acc[m]
        for q in range(q0, q1):
            kind, fan, base = parts[q]
            if kind == COLUMNS:
                for i in range(cols):
                    c = base + i // fan
                    for m in range(4):
                        t = 0.0
                        for r in range(i * rest, (i + 1) * rest):
                            t += columns[m, r]
                        s[c, m] += t


@_kernel()
def _combine(crow, col, val, s, out):
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


class FusedPartSums:
    """ChannelSums.sums of four per-entry summands in one compiled pass (module docstring):
    :meth:`step` for the step signals, :meth:`update` for AdamW's; a [width, 4] float64 CPU
    tensor (reused by the next call). Built from a :class:`ChannelSums` and the flat layout
    (``offsets``, ``shapes``)."""

    def __init__(
        self, channel_sums: ChannelSums, offsets: dict[str, int], shapes: dict[str, torch.Size]
    ) -> None:
        by_param: dict[str, list[tuple[int, int, int]]] = {}
        for (name, dim, fan), base in channel_sums.first.items():
            kind = WHOLE if dim is None else (ROWS if dim == 0 else COLUMNS)
            by_param.setdefault(name, []).append((kind, fan, base))
        params, parts = [], []
        for name in sorted(by_param, key=offsets.__getitem__):
            shape = shapes[name]
            rows = shape[0] if len(shape) >= 1 else 1
            cols = shape[1] if len(shape) >= 2 else 1
            rest = math.prod(shape[2:])
            params.append(
                (offsets[name], rows, cols, rest, len(parts), len(parts) + len(by_param[name]))
            )
            parts += sorted(by_param[name])
        self.params = np.array(params, dtype=np.int64).reshape(-1, 6)
        self.parts = np.array(parts, dtype=np.int64).reshape(-1, 3)
        self.out = torch.zeros(channel_sums.width, 4, dtype=torch.float64)
        self._out = self.out.numpy()
        widest = max((c * r for _, _, c, r, _, _ in params), default=1)
        self.columns = np.zeros((4, widest))
        self._none = np.zeros(3)

    def _run(self, mode: int, x: np.ndarray, y: np.ndarray, z: np.ndarray, k: np.ndarray):
        _part_sums(mode, x, y, z, k, self.params, self.parts, self._out, self.columns)
        return self.out

    def step(self, theta: np.ndarray, grad: np.ndarray, theta_next: np.ndarray) -> torch.Tensor:
        """Part sums of [D^2, D*g, g^2, theta_next^2] for flat [numel] arrays (theta and
        theta_next float64; grad float64 or the parameters' own float type, converted exactly
        in registers)."""
        return self._run(STEP, theta_next, theta, grad, self._none)

    def update(
        self,
        theta: np.ndarray,
        exp_avg: np.ndarray,
        exp_avg_sq: np.ndarray,
        bias_corrections: tuple[float, float],
        eps: float,
    ) -> torch.Tensor:
        """Part sums of [theta u, u^2, u, 0], u = (m / (1 - beta1^n)) / (sqrt(v) /
        sqrt(1 - beta2^n) + eps) (torch.optim.AdamW's direction, in float64) for flat [numel]
        theta (float64), m and v (float64 or the parameters' own type)."""
        k = np.array([bias_corrections[0], bias_corrections[1], eps], dtype=np.float64)
        return self._run(UPDATE, theta, exp_avg, exp_avg_sq, k)
