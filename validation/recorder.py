"""Per-step measurement of every symmetry block, as hooks for any training loop.

Usage (any loop, any model; the optimizer must be ``torch.optim.SGD`` or ``torch.optim.AdamW``)::

    from nmech.validation.discovery import discover
    from nmech.validation.recorder import Recorder

    found = discover(model, (x0, y0))                 # symmetry blocks, checked on a batch
    rec = Recorder(model, found.groups, "run/records.h5", opt)
    for x, y in batches:
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        rec.before_step(loss.detach())                # theta_n, g_n = p.grad (no weight decay)
        opt.step()
        rec.after_step()                              # theta_{n+1}
    rec.close()                                       # Q_N, final flush

Per step n and block A (J the block's generator, all in float64 on the model's device):

    Q_n         = <theta_n, J theta_n>  (scale, rescale)   or  <1_A, theta_n>  (translation)
    grad_sq_n   = <g_n, J g_n>
    step_sq_n   = <D_n, J D_n>          D_n = theta_{n+1}.double() - theta_n.double()
    step_grad_n = <D_n, J g_n>

With s_i = +1 on every element for scale blocks and s_i = +1 / -1 on the incoming / outgoing
side of a rescale block, the quadratic reductions are

    Q_n = sum_{i in A} s_i theta_i^2        Q_abs_n = sum_{i in A} theta_i^2
    grad_sq_n = sum_{i in A} s_i g_i^2      step_sq_n = sum_{i in A} s_i D_i^2
    step_grad_n = sum_{i in A} s_i D_i g_i

and for translation blocks Q_n = sum_{i in A} theta_i, Q_abs_n = sum_{i in A} |theta_i|.

Under ``torch.optim.AdamW`` (theta_{n+1} = a theta_n - eta u_n, a = 1 - eta*lam) the recorder
also writes, per step,

    theta_u_n = sum_{i in A} s_i theta_i u_i      u_sq_n = sum_{i in A} s_i u_i^2
    c_u_n     = sum_{i in A} u_i                  (translation blocks)

with u_n = (m / (1 - beta1^n)) / (sqrt(v) / sqrt(1 - beta2^n) + eps) computed in float64 from
the optimizer's state after the step (exp_avg m, exp_avg_sq v, step n), torch's own formula.
u_n is taken from the state rather than from (a theta_n - theta_{n+1}) / eta so that the
recursion is a real check: from the parameter difference it would hold by construction,
whereas from the state it holds only if torch's step is exactly a theta - eta u. The step
count is read from the state: a CPU tensor there (torch's default) is read on the host with no
device sync; a device tensor (``capturable``/``fused``) enters the bias corrections as a device
tensor, again without a sync.

g_n is ``p.grad`` as left by ``backward()``: the mini-batch loss gradient without weight decay
(torch's SGD adds the decay internally). It is copied in ``before_step`` because SGD's foreach
path with Nesterov and no weight decay updates ``p.grad`` in place.

Cost per step: the recorded parameters (and gradients) are copied into flat float64 vectors by
one ``_foreach_copy_`` each, into two [4, numel] buffers: A = [theta_n; g_n; .; .] and B, whose
row 0 receives theta_{n+1}. ``before_step`` only copies g_n (and takes Q_n from the previous
``after_step``); ``after_step`` copies theta_{n+1} into B[0] and forms the part sums of
[D^2; D*g; g^2; theta_{n+1}^2] (D = B[0] - A[0]), then the block sums by one small sparse product
with the parts' signs (see :class:`~nmech.validation.channels.ChannelSums`; Q_abs reuses the
part sums of theta^2). The hooks are bound by memory traffic. On the CPU (``fused=True``, the
default) g_n is copied in the parameters' own float type (exact) into a flat buffer of its own,
and one compiled pass (:mod:`nmech.validation.fused`) reads theta_n, g_n and theta_{n+1} once,
keeping the four products in registers; under AdamW a second pass of the same kind forms u_n
from the moments (copied in their own type) in registers; the sparse products are compiled too
and write straight into the row buffers. Elsewhere (GPU) A is filled in place with the four
products, which are reduced together by one reshape-sum per run of back-to-back channel rows or
columns. A and B
then swap roles: theta_{n+1} and its part sums serve as the next step's theta_n unless a
parameter was written in between (its version counter moved; theta_n and Q_n are then read
afresh).
Rows go to preallocated device buffers (no ``.item()`` or host copy per step) and are appended
to the HDF5 records file every ``flush_every`` steps.

Faults: each flush scans its rows on the host for NaN/inf (loss, every signal, Q); the first
bad step n ends the file at steps 0..n-1 (plus Q_n when finite), stamps it ``diverged`` and
raises :class:`~nmech.validation.stops.Diverged` naming the step and the block whose gradient
went non-finite. ``start_step=s`` continues a checkpointed run: the file keeps its first s
steps and new rows follow them.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nmech.errors import NmechError
from nmech.validation.channels import KINDS, QUADRATIC, ChannelSums, Group, flat_order
from nmech.validation.fused import CsrMatrix, FusedPartSums
from nmech.validation.optim import AdamWSettings, read_optimizer
from nmech.validation.records import (
    ADAPTIVE_SIGNALS,
    LINEAR_SIGNALS,
    RecordsWriter,
    is_state_dataset,
)
from nmech.validation.stops import HINT, Diverged, describe, first_nonfinite

TRACE_PARAMS = 8
STATE = ("Q", "Q_abs")
#: records.SIGNALS in the order of the rows ``after_step`` reduces: [D^2; D*g; g^2].
STEP_SIGNALS = ("step_sq", "step_grad", "grad_sq")


class _KindLayout:
    """The groups of one kind and the number of channels they record."""

    def __init__(self, groups: list[Group]) -> None:
        self.groups = groups
        self.width = sum(len(g.kept) for g in groups)


class _Blocks:
    """The blocks of some kinds: part sums of flat vectors, their signed per-block sums, and the
    rows of the kinds' signals that those sums fill.

    ``rows`` is one [K, blocks, signals] buffer for all these kinds; ``views()`` names its
    [K, blocks of a kind] slices ``"<kind>/<signal>"``. ``write(v, signal, row)`` computes
    M @ v, i.e. sum_{i in A} s_i v_i for every block A of those kinds at once (s_i = 1 when
    ``unsigned``), into ``rows[row, :, signal]``; ``reduce`` and ``put`` split it so that k
    stacked vectors share one pass and one copy into consecutive signal columns.
    """

    def __init__(
        self,
        layouts: dict[str, _KindLayout],
        kinds: list[str],
        signals: tuple[str, ...],
        rows: int,
        offsets: dict[str, int],
        shapes: dict[str, torch.Size],
        device: torch.device,
    ) -> None:
        groups = [g for k in kinds for g in layouts[k].groups]
        self.sums = ChannelSums(groups, offsets, shapes, device)
        params = dict.fromkeys(p.param for g in groups for p in g.parts)
        self.regions = [slice(offsets[n], offsets[n] + shapes[n].numel()) for n in params]
        self.slices: dict[str, slice] = {}
        start = 0
        for k in kinds:
            self.slices[k] = slice(start, start + layouts[k].width)
            start += layouts[k].width
        self.column = {signal: j for j, signal in enumerate(signals)}
        self.rows = torch.zeros(rows, start, len(signals), dtype=torch.float64, device=device)
        self.fused: FusedPartSums | None = None

    def fuse(self, offsets: dict[str, int], shapes: dict[str, torch.Size]) -> None:
        """Take :meth:`step_sums` and the block sums through the compiled CPU kernels of
        :mod:`nmech.validation.fused` from now on (CPU tensors only)."""
        self.fused = FusedPartSums(self.sums, offsets, shapes)
        self.csr = {False: CsrMatrix(self.sums.signed), True: CsrMatrix(self.sums.unsigned)}
        self.rows_np = self.rows.numpy()

    def step_sums(
        self, block: torch.Tensor, theta_next: torch.Tensor, grad: torch.Tensor
    ) -> torch.Tensor:
        """Part sums [width, 4] of [D^2; D*g; g^2; theta_next^2], D = theta_next - theta, for
        ``block`` = [theta; g; scratch; scratch] (flat float64) and g_n = ``grad``. Fused: one
        compiled pass reads theta, ``grad`` (its own flat buffer) and theta_next once.
        Otherwise ``grad`` is ``block[1]``: the products are written into ``block`` (theta and
        g overwritten) and reduced together by dense reshape-sums."""
        theta = block[0]
        if self.fused is not None:
            return self.fused.step(theta.numpy(), grad.numpy(), theta_next.numpy())
        torch.square(grad, out=block[2])
        delta = torch.sub(theta_next, theta, out=theta)
        grad.mul_(delta)
        delta.square_()
        torch.square(theta_next, out=block[3])
        return self.reduce(block)

    def views(self) -> dict[str, torch.Tensor]:
        """``"<kind>/<signal>"`` -> the [K, blocks of the kind] slice of ``rows``."""
        return {
            f"{kind}/{signal}": self.rows[:, cols, j]
            for kind, cols in self.slices.items()
            for signal, j in self.column.items()
        }

    def reduce(self, v: torch.Tensor) -> torch.Tensor:
        """Part sums of v ([numel] or k stacked [k, numel]) as [width, k]."""
        return self.sums.sums(v)

    def put(
        self, s: torch.Tensor, signals: tuple[str, ...], row: int, unsigned: bool = False
    ) -> None:
        """``rows[row, :, signals[j]] = (M s)[:, j]``; ``signals`` are consecutive columns."""
        j = self.column[signals[0]]
        if self.fused is not None:
            self.csr[unsigned].into(s.numpy(), self.rows_np[row, :, j : j + len(signals)])
        else:
            self.rows[row, :, j : j + len(signals)] = self.sums.blocks(s, unsigned)

    def put_both(self, s: torch.Tensor, signals: tuple[str, str], row: int) -> None:
        """``rows[row, :, signals] = [M s, |M| s]`` (s: [width, 1]; consecutive columns); one
        torch product with M and |M| stacked, or two compiled ones."""
        if self.fused is not None:
            self.put(s, signals[:1], row)
            self.put(s, signals[1:], row, unsigned=True)
            return
        j = self.column[signals[0]]
        self.rows[row, :, j : j + 2] = self.sums.both(s)

    def write(self, v: torch.Tensor, signal: str, row: int, unsigned: bool = False) -> None:
        """``rows[row, :, signal] = M @ v``."""
        self.put(self.reduce(v), (signal,), row, unsigned)


def _flat_views(flat: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    """Views of consecutive pieces of ``flat`` shaped like ``params``."""
    pieces = torch.split(flat, [p.numel() for p in params])
    return [v.view(p.shape) for v, p in zip(pieces, params, strict=True)]


class Recorder:
    """Measure Q and its signals for ``groups`` of ``model`` trained by ``optimizer``.

    ``fused`` (CPU models): compute the step's part and block sums with the compiled kernels of
    :mod:`nmech.validation.fused` (default); False takes the torch ops a GPU model takes."""

    def __init__(
        self,
        model: nn.Module,
        groups: list[Group],
        path: str | Path,
        optimizer: torch.optim.Optimizer,
        flush_every: int = 100,
        run_info: dict[str, Any] | None = None,
        model_name: str | None = None,
        start_step: int = 0,
        fused: bool = True,
    ) -> None:
        if flush_every < 1:
            raise NmechError(f"flush_every must be positive, got {flush_every}")
        self.settings = read_optimizer(optimizer)
        self.adaptive = isinstance(self.settings, AdamWSettings)
        self.optimizer = optimizer
        named = dict(model.named_parameters())
        names = sorted({p.param for g in groups for p in g.parts})
        missing = [n for n in names if n not in named]
        if missing:
            raise NmechError(f"blocks name parameters the model lacks: {', '.join(missing)}")
        in_opt = {id(p) for grp in optimizer.param_groups for p in grp["params"]}
        absent = [n for n in names if id(named[n]) not in in_opt]
        if absent:
            raise NmechError(f"parameters not handed to the optimizer: {', '.join(absent)}")
        shapes = {n: named[n].shape for n in names}
        names = flat_order(groups, shapes)
        self.params = {n: named[n] for n in names}
        self.quad_names = sorted({p.param for g in groups if g.kind in QUADRATIC for p in g.parts})
        device = next(iter(self.params.values())).device if names else torch.device("cpu")
        self.device = device
        self.layouts = {
            k: _KindLayout([g for g in groups if g.kind == k])
            for k in KINDS
            if any(g.kind == k for g in groups)
        }
        self.K = flush_every
        self.fused = fused and device.type == "cpu"
        self._init_flat(names, device)
        self.bufs: dict[str, torch.Tensor] = {}
        for blocks in (self.quad, self.lin):
            if blocks is not None:
                self.bufs.update(blocks.views())
        self.bufs["train/loss"] = torch.full(
            (self.K,), float("nan"), dtype=torch.float64, device=device
        )
        self.bufs["train/accuracy"] = torch.full(
            (self.K,), float("nan"), dtype=torch.float64, device=device
        )
        self.trace_param, self.trace_index = self._pick_trace(groups)
        self.trace_flat = self.trace_index + self.offsets.get(self.trace_param or "", 0)
        if self.trace_param is not None:
            self.bufs["trace/values"] = torch.zeros(
                self.K, len(self.trace_index), dtype=torch.float64, device=device
            )
        self.lr0 = self.settings.lr
        self.lr_changed = False
        self.row = 0
        self.steps = start_step
        self.in_step = False
        self.loss_given = False
        attrs = {
            "model": model_name or type(model).__name__,
            "optimizer": json.dumps(self.settings.as_dict()),
            "run": json.dumps(run_info or {}),
        }
        self.writer = RecordsWriter(path, attrs, chunk_rows=self.K)
        self._describe()
        self.writer.start(self.writer.path if start_step else None, start_step)
        self.lr_changed = self.writer.lr_changed

    def _init_flat(self, names: list[str], device: torch.device) -> None:
        """The flat float64 buffers A, B (see the module docstring) and the blocks' reductions;
        parameters laid out in ``names`` order."""
        plist = [self.params[n] for n in names]
        self.plist = plist
        self.offsets: dict[str, int] = {}
        numel = 0
        for n, p in zip(names, plist, strict=True):
            self.offsets[n] = numel
            numel += p.numel()
        shapes = {n: p.shape for n, p in self.params.items()}
        self.pair = torch.zeros(2, 4, numel, dtype=torch.float64, device=device)
        quad = [names.index(n) for n in self.quad_names]
        # g_n (and AdamW's moments) only feed the compiled passes when fused: they are kept in
        # the parameters' own float type there (an exact copy), float64 otherwise
        grad_dtype = functools.reduce(torch.promote_types, (p.dtype for p in plist), torch.float32)
        if self.fused:
            self.flat_grad = torch.zeros(numel, dtype=grad_dtype)
            rows = [self.flat_grad, self.flat_grad]
        else:
            rows = [buf[1] for buf in self.pair]
        self._views = [
            (_flat_views(buf[0], plist), [_flat_views(g, plist)[i] for i in quad])
            for buf, g in zip(self.pair, rows, strict=True)
        ]
        self.versions: list[int] | None = None  # parameter versions when theta was copied
        self.q_sums: torch.Tensor | None = None  # part sums of theta^2 when theta was copied
        self._bind(0)

        def blocks(kinds: list[str], signals: tuple[str, ...]) -> _Blocks | None:
            if not kinds:
                return None
            return _Blocks(self.layouts, kinds, signals, self.K, self.offsets, shapes, device)

        adaptive = self.adaptive
        self.quad = blocks(
            [k for k in self.layouts if k in QUADRATIC],
            STATE + STEP_SIGNALS + (ADAPTIVE_SIGNALS if adaptive else ()),
        )
        self.lin = blocks(
            [k for k in self.layouts if k not in QUADRATIC],
            STATE + (LINEAR_SIGNALS if adaptive else ()),
        )
        for b in (self.quad, self.lin):
            if b is not None and self.fused:
                b.fuse(self.offsets, shapes)
        if self.adaptive:  # AdamW's moments (own type when fused, else float64) and u_n
            dtype = grad_dtype if self.fused else torch.float64
            self.moments = torch.zeros(2, numel, dtype=dtype, device=device)
            self.moment_views = _flat_views(self.moments[0], plist) + _flat_views(
                self.moments[1], plist
            )
            if not self.fused:
                self.u = torch.zeros(numel, dtype=torch.float64, device=device)

    def _bind(self, cur: int) -> None:
        """A = ``pair[cur]`` (``block``) holds theta_n (``theta``), g_n (``grad``; its own flat
        buffer when fused) and two scratch rows; row 0 of the other one is theta_{n+1}
        (``theta_next``)."""
        self.cur = cur
        self.block = self.pair[cur]
        self.theta = self.block[0]
        self.grad = self.flat_grad if self.fused else self.block[1]
        self.theta_next = self.pair[1 - cur][0]
        self.theta_views, self.grad_views = self._views[cur]
        self.next_views = self._views[1 - cur][0]

    def _load_theta(self) -> None:
        """Copy the current parameters into the flat theta_n (float64)."""
        torch._foreach_copy_(self.theta_views, self.plist)
        self.versions = [p._version for p in self.plist]
        self.q_sums = None

    def _bias_corrections(self, states: list[dict]) -> tuple[Any, Any]:
        """(1 - beta1^n, sqrt(1 - beta2^n)) at the optimizer's step count n (floats, or device
        tensors when the state keeps n on the device)."""
        b1, b2 = self.settings.beta1, self.settings.beta2
        steps = [st["step"] for st in states]
        if isinstance(steps[0], torch.Tensor) and steps[0].device.type != "cpu":
            n = steps[0].to(torch.float64)
            return 1 - b1**n, (1 - b2**n).sqrt()
        counts = {float(n) for n in steps}
        if len(counts) != 1:
            raise NmechError(f"recorded parameters are at different AdamW steps {sorted(counts)}")
        n = counts.pop()
        return 1 - b1**n, math.sqrt(1 - b2**n)

    def _record_update(self, row: int) -> None:
        """u_n from AdamW's state (module docstring) and its signals at theta_n."""
        states = [self.optimizer.state[p] for p in self.plist]
        sources = [st["exp_avg"] for st in states] + [st["exp_avg_sq"] for st in states]
        torch._foreach_copy_(self.moment_views, sources)
        bc1, bc2_sqrt = self._bias_corrections(states)
        if self.fused:  # one compiled pass per reduction family, u_n formed in registers
            m, v, theta = self.moments[0].numpy(), self.moments[1].numpy(), self.theta.numpy()
            for blocks, cols, signals in (
                (self.quad, 0, ADAPTIVE_SIGNALS),
                (self.lin, 2, LINEAR_SIGNALS),
            ):
                if blocks is not None:
                    sums = blocks.fused.update(theta, m, v, (bc1, bc2_sqrt), self.settings.eps)
                    blocks.put(sums[:, cols : cols + len(signals)], signals, row)
            return
        u = self.u
        torch.sqrt(self.moments[1], out=u)
        u.div_(bc2_sqrt).add_(self.settings.eps).mul_(bc1)
        torch.div(self.moments[0], u, out=u)
        if self.quad is not None:
            self.quad.write(self.theta * u, "theta_u", row)
            self.quad.write(u.square(), "u_sq", row)
        if self.lin is not None:
            self.lin.write(u, "c_u", row)

    def _pick_trace(self, groups: list[Group]) -> tuple[str | None, torch.Tensor]:
        """A few weights of the first recorded channel of the first quadratic group."""
        quad = [g for g in groups if g.kind in QUADRATIC]
        if not quad:
            return None, torch.empty(0, dtype=torch.int64)
        g = quad[0]
        part = g.parts[0]
        p = self.params[part.param]
        row = p.detach().select(0, g.kept[0]) if part.dim == 0 else p.detach()
        n = min(TRACE_PARAMS, row.numel())
        base = g.kept[0] * row.numel() if part.dim == 0 else 0
        self._trace_block = f"{g.name}[{g.kept[0]}]"
        return part.param, torch.arange(base, base + n, device=self.device)

    def _block_size(self, group: Group) -> int:
        """Elements in one block of ``group`` (every channel of a group has the same size)."""
        total = 0
        for part in group.parts:
            shape = self.params[part.param].shape
            n = math.prod(shape)
            total += n if part.dim is None else n // shape[part.dim] * part.fan
        return total

    def _describe(self) -> None:
        for name, buf in self.bufs.items():
            self.writer.create(name, buf.shape[1] if buf.ndim == 2 else None)
        for kind, lay in self.layouts.items():
            names = [b for g in lay.groups for b in g.block_names()]
            gidx = np.concatenate([np.full(len(g.kept), i) for i, g in enumerate(lay.groups)])
            chan = np.concatenate([np.asarray(g.kept) for g in lay.groups])
            size = np.concatenate([np.full(len(g.kept), self._block_size(g)) for g in lay.groups])
            self.writer.describe_kind(kind, names, [g.name for g in lay.groups], gidx, chan, size)
        if self.trace_param is not None:
            self.writer.set_attrs(
                "trace", param=self.trace_param, flat_index=self.trace_index.cpu().numpy(),
                block=self._trace_block,
            )  # fmt: skip

    def _record_state(self, row: int) -> None:
        """Q and Q_abs of every block and the traced weights at theta_n (``self.theta``).

        Quadratic kinds: Q = M @ theta^2 (signed), Q_abs = |M| @ theta^2 (= Q without negative
        signs), from the part sums of theta^2 that ``after_step`` left unless theta_n was read
        afresh; translation: Q = M @ theta, Q_abs = |M| @ |theta|.
        """
        if self.quad is not None:
            if self.q_sums is None:
                self.q_sums = self.quad.reduce(torch.square(self.theta, out=self.block[3]))
            self.quad.put_both(self.q_sums, STATE, row)
        if self.lin is not None:
            self.lin.write(self.theta, "Q", row)
            for r in self.lin.regions:  # |theta| where the translation blocks are
                torch.abs(self.theta[r], out=self.block[2, r])
            self.lin.write(self.block[2], "Q_abs", row, unsigned=True)
        if self.trace_param is not None:
            self.bufs["trace/values"][row] = self.theta.index_select(0, self.trace_flat)

    @torch.no_grad()
    def before_step(
        self, loss: torch.Tensor | None = None, accuracy: torch.Tensor | None = None
    ) -> None:
        """Call after ``loss.backward()`` and before ``optimizer.step()``: records Q_n, keeps
        g_n (its grad_sq is reduced in ``after_step``, with the step signals)."""
        if self.in_step:
            raise NmechError("Recorder.before_step called twice without after_step")
        grads = [self.params[n].grad for n in self.quad_names]
        for n, g in zip(self.quad_names, grads, strict=True):
            if g is None:
                raise NmechError(f"{n} has no gradient: call before_step after loss.backward()")
        if self.versions != [p._version for p in self.plist]:
            self._load_theta()
        if self.quad is not None:
            torch._foreach_copy_(self.grad_views, grads)
        self._record_state(self.row)
        if loss is not None:
            self.loss_given = True
            self.bufs["train/loss"][self.row] = loss.detach().double()
        if accuracy is not None:
            self.bufs["train/accuracy"][self.row] = accuracy.detach().double()
        self.in_step = True

    @torch.no_grad()
    def after_step(self) -> None:
        """Call right after ``optimizer.step()``: records grad_sq and the step signals of D_n,
        and reduces theta_{n+1}^2 for the next step's Q."""
        if not self.in_step:
            raise NmechError("Recorder.after_step called without before_step")
        torch._foreach_copy_(self.next_views, self.plist)
        if self.adaptive:  # needs theta_n, overwritten below
            self._record_update(self.row)
        if self.quad is not None:
            sums = self.quad.step_sums(self.block, self.theta_next, self.grad)
            self.quad.put(sums[:, :3], STEP_SIGNALS, self.row)
            self.q_sums = sums[:, 3:].contiguous()
        self._bind(1 - self.cur)
        self.versions = [p._version for p in self.plist]
        if any(float(g["lr"]) != self.lr0 for g in self.optimizer.param_groups):
            self.lr_changed = True
        self.in_step = False
        self.row += 1
        self.steps += 1
        if self.row == self.K:
            self.flush()

    @property
    def committed(self) -> int:
        """Steps whose rows are durable in the records file."""
        return self.writer.committed

    def flush(self) -> None:
        """Append the buffered rows to the records file (one host copy per buffer).

        Rows are checked for NaN/inf on the host here: on the first non-finite row the file
        keeps the steps before it (and the state Q_n reached, when finite), is stamped
        ``diverged`` and closed, and :class:`Diverged` is raised.
        """
        if self.row == 0:
            return
        host = {name: buf[: self.row].cpu().numpy() for name, buf in self.bufs.items()}
        checked = {k: v for k, v in host.items() if k != "train/accuracy"}
        if not self.loss_given:
            checked.pop("train/loss")
        bad = first_nonfinite(checked)
        if bad is not None:
            self._diverge(host, {k: v[bad] for k, v in checked.items()}, bad)
        for name, rows in host.items():
            self.writer.append(name, rows)
        self.steps = self.writer.committed + self.row
        self.row = 0
        self.writer.commit(self.steps, self.lr_changed)

    def _diverge(self, host: dict[str, np.ndarray], row: dict[str, np.ndarray], bad: int) -> None:
        step = self.writer.committed + bad
        names = {kind: [b for g in lay.groups for b in g.block_names()]
                 for kind, lay in self.layouts.items()}  # fmt: skip
        what = describe(row, names)
        state = {k: v for k, v in host.items() if is_state_dataset(k)}
        final = all(np.isfinite(v[bad]).all() for v in state.values())
        for name, rows in host.items():
            keep = bad + 1 if final and name in state else bad
            self.writer.append(name, rows[:keep])
        self.writer.commit(step, self.lr_changed, final_state=final)
        self.row, self.steps, self.in_step = 0, step, False
        reason = f"training diverged at step {step}: {what}"
        self.writer.finish("diverged", reason)
        kept = f"steps 0..{step - 1}" if step else "no step"
        raise Diverged(f"{reason}; {self.writer.path.name} keeps {kept}; {HINT}")

    def abort(self) -> Path:
        """Keep the completed steps (a half-done step is dropped) and close without Q_N.

        The file then holds Q_0..Q_{N-1} with N-1 complete signal rows as far as readers go.
        """
        if self.writer.file.id.valid:
            self.in_step = False
            try:
                self.flush()
            except Diverged:
                return self.writer.path
            self.writer.finish("aborted")
        return self.writer.path

    @torch.no_grad()
    def close(self, status: str = "complete", reason: str = "") -> Path:
        """Record the final Q_N, flush, stamp ``status`` and close; returns the path."""
        if self.writer.file.id.valid:
            if self.in_step:
                raise NmechError("Recorder.close called between before_step and after_step")
            self.flush()
            self._load_theta()
            self._record_state(0)
            for name, buf in self.bufs.items():
                if is_state_dataset(name):
                    self.writer.append(name, buf[:1].cpu().numpy())
            self.writer.commit(self.steps, self.lr_changed, final_state=True)
            self.writer.finish(status, reason)
        return self.writer.path
