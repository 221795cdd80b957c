"""Per-step measurement of every symmetry block, as hooks for any training loop.

Usage (any loop, any model; only the SGD object is required to be ``torch.optim.SGD``)::

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

g_n is ``p.grad`` as left by ``backward()``: the mini-batch loss gradient without weight decay
(torch's SGD adds the decay internally). It is copied in ``before_step`` because SGD's foreach
path with Nesterov and no weight decay updates ``p.grad`` in place. Rows go to preallocated
device buffers (no ``.item()`` or host copy per step) and are appended to the HDF5 records file
every ``flush_every`` steps.

Faults: each flush scans its rows on the host for NaN/inf (loss, every signal, Q); the first
bad step n ends the file at steps 0..n-1 (plus Q_n when finite), stamps it ``diverged`` and
raises :class:`~nmech.validation.stops.Diverged` naming the step and the block whose gradient
went non-finite. ``start_step=s`` continues a checkpointed run: the file keeps its first s
steps and new rows follow them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nmech.errors import NmechError
from nmech.validation.channels import KINDS, QUADRATIC, Group, signed_sum
from nmech.validation.optim import read_sgd
from nmech.validation.records import SIGNALS, RecordsWriter, is_state_dataset
from nmech.validation.stops import HINT, Diverged, describe, first_nonfinite

TRACE_PARAMS = 8


class _KindLayout:
    """The groups of one kind, their column offsets, and the device index of kept channels."""

    def __init__(self, groups: list[Group], device: torch.device) -> None:
        self.groups = groups
        self.offsets: list[int] = []
        self.keep: list[torch.Tensor | None] = []
        width = 0
        for g in groups:
            self.offsets.append(width)
            width += len(g.kept)
            idx = None if g.keep is None else torch.tensor(g.keep, device=device)
            self.keep.append(idx)
        self.width = width

    def fill(
        self, row: torch.Tensor, products: dict[str, torch.Tensor], unsigned: bool = False
    ) -> None:
        """Write the per-channel (signed) sums of ``products`` of every group into ``row``."""
        for g, off, idx in zip(self.groups, self.offsets, self.keep, strict=True):
            vals = signed_sum(g, products, unsigned)
            row[off : off + len(g.kept)] = vals if idx is None else vals.index_select(0, idx)


class Recorder:
    """Measure Q and its signals for ``groups`` of ``model`` trained by ``optimizer``."""

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
    ) -> None:
        if flush_every < 1:
            raise NmechError(f"flush_every must be positive, got {flush_every}")
        self.settings = read_sgd(optimizer)
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
        self.params = {n: named[n] for n in names}
        self.quad_names = sorted({p.param for g in groups if g.kind in QUADRATIC for p in g.parts})
        device = next(iter(self.params.values())).device if names else torch.device("cpu")
        self.device = device
        self.layouts = {
            k: _KindLayout([g for g in groups if g.kind == k], device)
            for k in KINDS
            if any(g.kind == k for g in groups)
        }
        self.K = flush_every
        self.bufs: dict[str, torch.Tensor] = {}
        for kind, lay in self.layouts.items():
            sigs = ("Q", "Q_abs", *SIGNALS) if kind in QUADRATIC else ("Q", "Q_abs")
            for s in sigs:
                self.bufs[f"{kind}/{s}"] = torch.zeros(
                    self.K, lay.width, dtype=torch.float64, device=device
                )
        self.bufs["train/loss"] = torch.full(
            (self.K,), float("nan"), dtype=torch.float64, device=device
        )
        self.bufs["train/accuracy"] = torch.full(
            (self.K,), float("nan"), dtype=torch.float64, device=device
        )
        self.theta_prev = {n: torch.empty_like(self.params[n]) for n in self.quad_names}
        self.grad = {n: torch.empty_like(self.params[n]) for n in self.quad_names}
        self.trace_param, self.trace_index = self._pick_trace(groups)
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

    def _describe(self) -> None:
        for name, buf in self.bufs.items():
            self.writer.create(name, buf.shape[1] if buf.ndim == 2 else None)
        for kind, lay in self.layouts.items():
            names = [b for g in lay.groups for b in g.block_names()]
            gidx = np.concatenate([np.full(len(g.kept), i) for i, g in enumerate(lay.groups)])
            chan = np.concatenate([np.asarray(g.kept) for g in lay.groups])
            self.writer.describe_kind(kind, names, [g.name for g in lay.groups], gidx, chan)
        if self.trace_param is not None:
            self.writer.set_attrs(
                "trace", param=self.trace_param, flat_index=self.trace_index.cpu().numpy(),
                block=self._trace_block,
            )  # fmt: skip

    def _record_state(self, row: int) -> None:
        """Q of every block and the traced weights at the current parameters, into ``row``."""
        theta = {n: p.detach() for n, p in self.params.items()}
        squares = {n: theta[n].double().square() for n in self.quad_names}
        for kind, lay in self.layouts.items():
            if kind in QUADRATIC:
                lay.fill(self.bufs[f"{kind}/Q"][row], squares)
                lay.fill(self.bufs[f"{kind}/Q_abs"][row], squares, unsigned=True)
            else:
                lay.fill(self.bufs[f"{kind}/Q"][row], {n: t.double() for n, t in theta.items()})
                lay.fill(
                    self.bufs[f"{kind}/Q_abs"][row], {n: t.double().abs() for n, t in theta.items()}
                )
        if self.trace_param is not None:
            flat = theta[self.trace_param].reshape(-1).index_select(0, self.trace_index)
            self.bufs["trace/values"][row] = flat.double()

    @torch.no_grad()
    def before_step(
        self, loss: torch.Tensor | None = None, accuracy: torch.Tensor | None = None
    ) -> None:
        """Call after ``loss.backward()`` and before ``optimizer.step()``: records Q_n, g_n."""
        if self.in_step:
            raise NmechError("Recorder.before_step called twice without after_step")
        for n in self.quad_names:
            g = self.params[n].grad
            if g is None:
                raise NmechError(f"{n} has no gradient: call before_step after loss.backward()")
            self.grad[n].copy_(g)
            self.theta_prev[n].copy_(self.params[n].detach())
        self._record_state(self.row)
        if self.quad_names:
            prods = {n: self.grad[n].double().square() for n in self.quad_names}
            for kind, lay in self.layouts.items():
                if kind in QUADRATIC:
                    lay.fill(self.bufs[f"{kind}/grad_sq"][self.row], prods)
        if loss is not None:
            self.loss_given = True
            self.bufs["train/loss"][self.row] = loss.detach().double()
        if accuracy is not None:
            self.bufs["train/accuracy"][self.row] = accuracy.detach().double()
        self.in_step = True

    @torch.no_grad()
    def after_step(self) -> None:
        """Call right after ``optimizer.step()``: records the step signals of D_n."""
        if not self.in_step:
            raise NmechError("Recorder.after_step called without before_step")
        if self.quad_names:
            delta = {
                n: self.params[n].detach().double() - self.theta_prev[n].double()
                for n in self.quad_names
            }
            step_sq = {n: delta[n].square() for n in self.quad_names}
            step_grad = {n: delta[n] * self.grad[n].double() for n in self.quad_names}
            for kind, lay in self.layouts.items():
                if kind in QUADRATIC:
                    lay.fill(self.bufs[f"{kind}/step_sq"][self.row], step_sq)
                    lay.fill(self.bufs[f"{kind}/step_grad"][self.row], step_grad)
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
            self._record_state(0)
            for name, buf in self.bufs.items():
                if is_state_dataset(name):
                    self.writer.append(name, buf[:1].cpu().numpy())
            self.writer.commit(self.steps, self.lr_changed, final_state=True)
            self.writer.finish(status, reason)
        return self.writer.path
