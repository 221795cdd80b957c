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
from nmech.validation.records import SIGNALS, RecordsWriter

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
        self.row = 0
        self.steps = 0
        self.in_step = False
        attrs = {
            "model": model_name or type(model).__name__,
            "optimizer": json.dumps(self.settings.as_dict()),
            "run": json.dumps(run_info or {}),
            "lr_constant": True,
            "steps": 0,
        }
        self.writer = RecordsWriter(path, attrs)
        self._describe()

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
            self.writer.set_attrs("/", lr_constant=False)
        self.in_step = False
        self.row += 1
        self.steps += 1
        if self.row == self.K:
            self.flush()

    def flush(self) -> None:
        """Append the buffered rows to the records file (one host copy per buffer)."""
        if self.row == 0:
            return
        for name, buf in self.bufs.items():
            self.writer.append(name, buf[: self.row].cpu().numpy())
        self.row = 0
        self.writer.flush(self.steps)

    def abort(self) -> Path:
        """Keep the completed steps (a half-done step is dropped) and close without Q_N.

        The file then holds Q_0..Q_{N-1} with N-1 complete signal rows as far as readers go.
        """
        if self.writer.file.id.valid:
            self.in_step = False
            self.flush()
            self.writer.close()
        return self.writer.path

    @torch.no_grad()
    def close(self) -> Path:
        """Record the final Q_N, flush, close the file and return its path."""
        if self.writer.file.id.valid:
            if self.in_step:
                raise NmechError("Recorder.close called between before_step and after_step")
            self.flush()
            self._record_state(0)
            for kind in self.layouts:
                for name in (f"{kind}/Q", f"{kind}/Q_abs"):
                    self.writer.append(name, self.bufs[name][:1].cpu().numpy())
            if self.trace_param is not None:
                self.writer.append("trace/values", self.bufs["trace/values"][:1].cpu().numpy())
            self.writer.flush(self.steps)
            self.writer.close()
        return self.writer.path
