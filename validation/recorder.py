"""Per-step measurement of every symmetry block, as hooks for any training loop.

Usage (any loop, any model, any torch optimizer: a registered one is read from its settings,
any other through the fallback of :mod:`nmech.validation.optimizers`)::

    from nmech.validation.discovery import discover
    from nmech.validation.recorder import Recorder

    found = discover(model, (x0, y0))                 # symmetry blocks, checked on a batch
    rec = Recorder(model, found, "run/records.h5", opt)
    for x, y in batches:
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        rec.before_step(loss.detach())                # theta_n, g_n = p.grad; the loss is optional
        opt.step()
        rec.after_step()                              # theta_{n+1}
    rec.close()                                       # Q_N, final flush
    result = rec.compare()                            # measured and predicted Q per kind and form

Per step n and block A (J the block's generator, all in float64 on the model's device):

    Q_n = <theta_n, J theta_n>  (quadratic kinds)   or  <1_A, theta_n>  (linear kinds)
    Q_abs_n = sum_A theta_i^2                        or  sum_A |theta_i|

and the signals of :mod:`nmech.validation.signals`: grad_sq, step_sq, step_grad for quadratic
kinds, and, when the optimizer has an update direction u_n (theta_{n+1} = a theta_n - eta u_n:
Adam, AdamW, RMSprop, Adagrad, the fallback), theta_u, u_sq (quadratic) and c_u (linear). u_n
is formed in float64 from the optimizer's state after the step (e.g. AdamW's exp_avg,
exp_avg_sq and step) by the formula of the derived rule (:meth:`OptimizerAdapter.update`),
not from (a theta_n - theta_{n+1}) / eta, so that its recursion is a real check of torch's
step (the fallback, which has no formula, is the exception and says so). A step count kept on
the device (``capturable``) enters as a device tensor, without a host sync.

g_n is ``p.grad`` as left by ``backward()``: the mini-batch loss gradient without weight decay
(torch adds the decay internally), negated under ``maximize=True``. It is copied in
``before_step`` unless the optimizer keeps it (below): SGD's foreach path with Nesterov and no
weight decay updates ``p.grad`` in place.

Cost per step: the recorded parameters are copied into flat vectors by one ``_foreach_copy_``
each: theta_n and theta_{n+1} (two buffers that swap roles), g_n, and any optimizer state u_n
needs, in float64 where the torch ops run. A compiled pass (CPU) reads float64 from the
parameters' own float type (an exact copy, half the memory traffic of float64), and reads the
optimizer's state where the optimizer keeps it (:meth:`Recorder._state_input`), and g_n in
``p.grad`` itself when the optimizer's adapter says its step leaves the gradient alone
(``gradient_kept``: Adam, AdamW, RMSprop, Adagrad, SGD without Nesterov; checked after the
step by the gradients' identity and version counters), each copied only where it cannot. ``after_step`` then
runs the *passes* of :mod:`nmech.validation.fused`: per reduction family, the part sums of the
per-element summands of its signals (and of Q and Q_abs at theta_{n+1}), then the block sums by
one small sparse product with the parts' signs (:class:`~nmech.validation.channels.
ChannelSums`). On the CPU (``fused=True``, the default) each pass is one numba kernel generated
from the summands, which reads every input once; elsewhere the same summands run as torch ops.
theta_{n+1} and its part sums serve as the next step's theta_n unless a parameter was written
in between (its version counter moved; theta_n and Q_n are then read afresh). Rows go to
preallocated device buffers (no ``.item()`` or host copy per step) and are appended to the HDF5
records file every ``flush_every`` steps.

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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import sympy as sp
import torch
from torch import nn

from nmech.errors import NmechError
from nmech.validation.addresses import AddressTable
from nmech.validation.channels import ChannelSums, Group, flat_order
from nmech.validation.fused import CompiledPass, CsrMatrix, TorchPass
from nmech.validation.kinds import KINDS, LINEAR_FAMILY, QUADRATIC_FAMILY
from nmech.validation.memory import gib, require
from nmech.validation.optimizers import UpdateDirection, adapter_for
from nmech.validation.records import RecordsWriter, is_state_dataset
from nmech.validation.signals import ELEMENTS, SIGNALS, recorded
from nmech.validation.stops import HINT, Diverged, describe, first_nonfinite

TRACE_PARAMS = 8
STATE = ("Q", "Q_abs")
#: The per-element symbols of :mod:`nmech.validation.signals`, as the kernels see them.
ELEMENT = {name: sp.Symbol(name, real=True) for name in ELEMENTS}


def _flat_views(flat: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    """Views of consecutive pieces of ``flat`` shaped like ``params``."""
    pieces = torch.split(flat, [p.numel() for p in params])
    return [v.view(p.shape) for v, p in zip(pieces, params, strict=True)]


def _copy(dst: list[torch.Tensor], src: list[torch.Tensor]) -> None:
    """``torch._foreach_copy_`` (one kernel per dtype group), nothing for empty lists (a model
    without any symmetry block records only its loss)."""
    if dst:
        torch._foreach_copy_(dst, src)


def _sqrt(x: Any) -> Any:
    return torch.sqrt(x) if isinstance(x, torch.Tensor) else math.sqrt(x)


class _Family:
    """The blocks of one reduction family: part sums of flat vectors, their signed per-block
    sums, the rows those fill, and the passes that compute the part sums.

    ``rows`` is one [K, blocks, signals] buffer; ``views()`` names its [K, blocks of a kind]
    slices ``"<kind>/<signal>"``. ``put(s, signals, row)`` writes M s, i.e. sum_{i in A} s_i v_i
    for every block A at once (s_i = 1 when ``unsigned``), into consecutive signal columns.
    """

    def __init__(
        self,
        groups_by_kind: dict[str, list[Group]],
        signals: tuple[str, ...],
        rows: int,
        offsets: dict[str, int],
        shapes: dict[str, torch.Size],
        device: torch.device,
        fused: bool,
        quadratic: bool,
    ) -> None:
        groups = [g for gs in groups_by_kind.values() for g in gs]
        self.groups = groups
        self.quadratic = quadratic
        self.sums = ChannelSums(groups, offsets, shapes, device)
        self.slices: dict[str, slice] = {}
        start = 0
        for kind, gs in groups_by_kind.items():
            width = sum(len(g.kept) for g in gs)
            self.slices[kind] = slice(start, start + width)
            start += width
        self.signals = signals
        self.column = {signal: j for j, signal in enumerate(signals)}
        self.rows = torch.zeros(rows, start, len(signals), dtype=torch.float64, device=device)
        self.fused = fused
        self.offsets, self.shapes = offsets, shapes
        if fused:
            self.csr = {False: CsrMatrix(self.sums.signed), True: CsrMatrix(self.sums.unsigned)}
            self.rows_np = self.rows.numpy()

    def make_pass(self, summands: Sequence[sp.Expr], arrays: Sequence[sp.Symbol]) -> Any:
        """The compiled (CPU) or torch pass of ``summands`` over this family's parts."""
        if self.fused:
            return CompiledPass(summands, arrays, self.sums, self.offsets, self.shapes)
        return TorchPass(summands, arrays, self.sums)

    def views(self) -> dict[str, torch.Tensor]:
        """``"<kind>/<signal>"`` -> the [K, blocks of the kind] slice of ``rows``."""
        return {
            f"{kind}/{signal}": self.rows[:, cols, j]
            for kind, cols in self.slices.items()
            for signal, j in self.column.items()
        }

    def put(
        self, s: torch.Tensor, signals: tuple[str, ...], row: int, unsigned: bool = False
    ) -> None:
        """``rows[row, :, signals[j]] = (M s)[:, j]``; ``signals`` are consecutive columns."""
        j = self.column[signals[0]]
        if self.fused:
            self.csr[unsigned].into(s.numpy(), self.rows_np[row, :, j : j + len(signals)])
        else:
            self.rows[row, :, j : j + len(signals)] = self.sums.blocks(s, unsigned)

    def put_both(self, s: torch.Tensor, signals: tuple[str, str], row: int) -> None:
        """``rows[row, :, signals] = [M s, |M| s]`` (s: [width, 1]; consecutive columns)."""
        if self.fused:
            self.put(s, signals[:1], row)
            self.put(s, signals[1:], row, unsigned=True)
            return
        j = self.column[signals[0]]
        self.rows[row, :, j : j + 2] = self.sums.both(s)

    def state_summands(self) -> list[sp.Expr]:
        """The summands whose part sums give Q and Q_abs at theta' (:meth:`put_state`):
        theta'^2 (quadratic kinds), or theta' and |theta'| (linear kinds)."""
        theta = ELEMENT["theta_next"]
        return [theta**2] if self.quadratic else [theta, sp.Abs(theta)]

    def put_state(self, s: torch.Tensor, row: int) -> None:
        """``rows[row, :, Q and Q_abs]`` from the part sums ``s`` of :meth:`state_summands`:
        Q = M s(theta^2), Q_abs = |M| s(theta^2) (quadratic kinds); Q = M s(theta),
        Q_abs = |M| s(|theta|) (linear kinds)."""
        if self.quadratic:
            self.put_both(s, STATE, row)
        else:
            self.put(s[:, :1], STATE[:1], row)
            self.put(s[:, 1:], STATE[1:], row, unsigned=True)


class _FamilyPass:
    """One family's per-step signals in one pass over the flat arrays: the part sums of every
    recorded signal's summand (g_n with the optimizer's gradient sign; u_n, when the optimizer
    has one, substituted by its formula), then those of the family's Q and Q_abs at
    theta_{n+1} (the next step's state, :meth:`_Family.state_summands`). One pass reads each
    array once for all of them; its scalars (bias corrections, hyper-parameters) are evaluated
    per step."""

    def __init__(self, family: _Family, update: UpdateDirection | None, grad_sign: int) -> None:
        e = {**ELEMENT, "g": grad_sign * ELEMENT["g"]}
        arrays = {*ELEMENT} - {"u"}
        if update is not None:
            rename = {s: ELEMENT.get(s.name, sp.Symbol(s.name, real=True))
                      for s in update.expr.free_symbols if s.name in update.arrays}  # fmt: skip
            e["u"] = update.expr.xreplace(rename)
            arrays |= set(update.arrays)
        self.names = family.signals[len(STATE) :]
        summands = [SIGNALS[n].summand(e) for n in self.names] + family.state_summands()
        symbols = {s for x in summands for s in sp.sympify(x).free_symbols if s.name in arrays}
        self.family = family
        self.pass_ = family.make_pass(summands, sorted(symbols, key=lambda s: s.name))
        scalars = self.pass_.scalars
        symbols = sorted({s for x in scalars for s in sp.sympify(x).free_symbols}, key=str)
        self.symbols = [str(s) for s in symbols]
        self.values = update.values if update is not None else {}
        self.scalar_fn: Callable[..., Any] = sp.lambdify(
            symbols, list(scalars), modules=[{"sqrt": _sqrt}, "math"]
        )

    def sums(self, arrays: dict[str, torch.Tensor], step: Any) -> torch.Tensor:
        """The part sums [width, signals (+ 1)] for optimizer step count ``step``."""
        args = [step if name == "step" else self.values[name] for name in self.symbols]
        k = self.scalar_fn(*args)
        if self.family.fused:
            k = np.asarray([float(v) for v in k], dtype=np.float64)
        return self.pass_.sums(arrays, k)

    def run(self, arrays: dict[str, torch.Tensor], step: Any, row: int) -> torch.Tensor:
        """Record this family's signals of step ``row``; returns the part sums of its state
        summands (the next step's Q and Q_abs)."""
        sums = self.sums(arrays, step)
        if self.names:
            self.family.put(sums[:, : len(self.names)], self.names, row)
        return self.state_part(sums)

    def state_part(self, sums: torch.Tensor) -> torch.Tensor:
        """The columns of the pass's part sums ``sums`` that give Q and Q_abs (a copy: the
        pass reuses its output)."""
        return sums[:, len(self.names) :].contiguous()


class Recorder:
    """Measure Q and its signals for the blocks ``groups`` (a list of groups, or what
    :func:`~nmech.validation.discovery.discover` returned) of ``model`` trained by
    ``optimizer``.

    ``fused`` (CPU models): compute the passes with kernels generated for the CPU (default);
    False takes the torch ops a GPU model takes."""

    def __init__(
        self,
        model: nn.Module,
        groups: Any,
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
        groups = list(getattr(groups, "groups", groups))
        unknown = sorted({g.kind for g in groups} - set(KINDS))
        if unknown:
            raise NmechError(f"unknown symmetry kind {unknown[0]!r}; known: {', '.join(KINDS)}")
        adapter = adapter_for(optimizer)
        self.title = adapter.title
        self.settings = adapter.read(optimizer)
        self.update = adapter.update(self.settings)
        self.grad_sign = adapter.gradient_sign(self.settings)
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
        device = next(iter(self.params.values())).device if names else torch.device("cpu")
        self.device = device
        self.by_family = {
            family: {
                k: [g for g in groups if g.kind == k]
                for k, spec in KINDS.items()
                if spec.family == family and any(g.kind == k for g in groups)
            }
            for family in (QUADRATIC_FAMILY, LINEAR_FAMILY)
        }
        self.K = flush_every
        self._check_row_memory(device)
        self.fused = fused and device.type == "cpu"
        self.grad_in_place = self.fused and adapter.gradient_kept(self.settings)
        self.grads: AddressTable | None = None  # g_n read in place (before_step)
        self.grad_versions: list[int] = []
        self._init_flat(names, shapes, device)
        self.bufs: dict[str, torch.Tensor] = {}
        for family in (self.quad, self.lin):
            if family is not None:
                self.bufs.update(family.views())
        for name in ("train/loss", "train/accuracy"):
            self.bufs[name] = torch.full((self.K,), math.nan, dtype=torch.float64, device=device)
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

    def _check_row_memory(self, device: torch.device) -> None:
        """Refuse (one line) a flush interval whose row buffers -- flush_every rows of every
        block's Q and signals, on the device and in the host copy a flush makes -- exceed the
        device's memory, or whose records chunks pass HDF5's 4 GiB limit."""
        update = self.update is not None
        blocks = {family: {kind: sum(len(g.kept) for g in gs) for kind, gs in kinds.items()}
                  for family, kinds in self.by_family.items()}  # fmt: skip
        values = sum(sum(b.values()) * (len(STATE) + len(recorded(family, update)))
                     for family, b in blocks.items())  # fmt: skip
        widest = max((n for b in blocks.values() for n in b.values()), default=0)
        if self.K * widest * 8 >= 2**32:
            raise NmechError(f"--flush-every {self.K}: a records chunk would be "
                             f"{gib(self.K * widest * 8)}, past HDF5's 4 GiB limit; choose a "
                             "smaller --flush-every")  # fmt: skip
        row_bytes = 8 * (values + 2 + TRACE_PARAMS)
        require(2 * self.K * row_bytes, device, "--flush-every",
                f"{self.K} rows of {values} values (the row buffers)")  # fmt: skip

    def _init_flat(
        self, names: list[str], shapes: dict[str, torch.Size], device: torch.device
    ) -> None:
        """Flat buffers (module docstring), the families' reductions and their passes;
        parameters laid out in ``names`` order."""
        plist = [self.params[n] for n in names]
        self.plist = plist
        self.shapes = [p.shape for p in plist]
        self.offsets: dict[str, int] = {}
        numel = 0
        for n, p in zip(names, plist, strict=True):
            self.offsets[n] = numel
            numel += p.numel()
        # theta, g_n and optimizer state feed the passes in the parameters' own float type
        # when compiled (an exact copy, converted to float64 in the kernel), in float64 for
        # the torch ops
        own = functools.reduce(torch.promote_types, (p.dtype for p in plist), torch.float32)
        self.flat_dtype = own if self.fused else torch.float64
        self.pair = torch.zeros(2, numel, dtype=self.flat_dtype, device=device)
        self._theta_views = [_flat_views(buf, plist) for buf in self.pair]
        self.flat_grad = torch.zeros(numel, dtype=self.flat_dtype, device=device)
        self.grad_views = _flat_views(self.flat_grad, plist)
        self.versions: list[int] | None = None  # parameter versions when theta was copied
        # per pass, the part sums of Q and Q_abs's summands at theta_n (None: to be read afresh)
        self.q_sums: list[torch.Tensor] | None = None
        self._bind(0)

        def family(name: str) -> _Family | None:
            kinds = self.by_family[name]
            if not kinds:
                return None
            signals = STATE + recorded(name, self.update is not None)
            return _Family(kinds, signals, self.K, self.offsets, shapes, device, self.fused,
                           quadratic=name == QUADRATIC_FAMILY)  # fmt: skip

        self.quad, self.lin = family(QUADRATIC_FAMILY), family(LINEAR_FAMILY)
        self.state_bufs: dict[str, torch.Tensor] = {}
        for name, source in (self.update.arrays if self.update else {}).items():
            if source.startswith("state:"):
                self.state_bufs[name] = torch.zeros(numel, dtype=self.flat_dtype, device=device)
        self.state_views = {n: _flat_views(b, plist) for n, b in self.state_bufs.items()}
        self.passes = [
            _FamilyPass(fam, self.update, self.grad_sign)
            for fam in (self.quad, self.lin)
            if fam is not None
        ]

    def _bind(self, cur: int) -> None:
        """theta_n = ``pair[cur]``, theta_{n+1} = the other one."""
        self.cur = cur
        self.theta = self.pair[cur]
        self.theta_next = self.pair[1 - cur]
        self.theta_views = self._theta_views[cur]
        self.next_views = self._theta_views[1 - cur]

    def _load_theta(self) -> None:
        """Copy the current parameters into the flat theta_n (float64)."""
        _copy(self.theta_views, self.plist)
        self.versions = [p._version for p in self.plist]
        self.q_sums = None

    def _step_count(self, states: list[dict]) -> Any:
        """The optimizer's step count n (a float, or a device tensor when kept there)."""
        steps = [st["step"] for st in states]
        if isinstance(steps[0], torch.Tensor) and steps[0].device.type != "cpu":
            return steps[0].to(torch.float64)
        counts = {float(n) for n in steps}
        if len(counts) != 1:
            raise NmechError(
                f"recorded parameters are at different optimizer steps {sorted(counts)}"
            )
        return counts.pop()

    def _record_signals(self, row: int) -> None:
        """The step's signals of every family (u_n's from the optimizer's state after the step,
        :meth:`_state_input`); keeps the part sums that give Q and Q_abs at theta_{n+1}."""
        step: Any = 0.0
        arrays: dict[str, Any] = {"theta": self.theta, "theta_next": self.theta_next,
                                  "g": self._grad_input()}  # fmt: skip
        if self.update is not None:
            states = [self.optimizer.state[p] for p in self.plist]
            for name, source in self.update.arrays.items():
                if source.startswith("state:"):
                    key = source.removeprefix("state:")
                    if any(key not in st for st in states):
                        raise NmechError(f"optimizer state has no {key!r} after the step")
                    arrays[name] = self._state_input(name, [st[key] for st in states])
            step = self._step_count(states) if states and "step" in states[0] else 0.0
        self.q_sums = [p.run(arrays, step, row) for p in self.passes]

    def _grad_input(self) -> Any:
        """g_n as the passes read it: the copy ``before_step`` made, or, when it kept the
        gradients themselves, ``p.grad`` after checking that the step left them alone (the
        same tensors at the same version); NmechError naming the parameter if not."""
        if self.grads is None:
            return self.flat_grad
        for name, p, g, version in zip(self.params, self.plist, self.grads.tensors,
                                       self.grad_versions, strict=True):  # fmt: skip
            if p.grad is not g or g._version != version:
                raise NmechError(
                    f"{self.title}.step() changed {name}.grad, which the recorder reads after "
                    "the step (gradient_kept): nothing recorded for this step"
                )
        return self.grads

    def _state_input(self, name: str, tensors: list[torch.Tensor]) -> Any:
        """The optimizer state ``tensors`` (one per parameter) as a pass reads them: in place
        when compiled and they allow it (:func:`~nmech.validation.addresses.readable`:
        contiguous CPU tensors of one float type, shaped like their parameters, what torch's
        optimizers keep), else copied into the flat buffer."""
        table = AddressTable.of(tensors, self.shapes) if self.fused else None
        if table is not None:
            return table
        _copy(self.state_views[name], tensors)
        return self.state_bufs[name]

    def _pick_trace(self, groups: list[Group]) -> tuple[str | None, torch.Tensor]:
        """A few weights of the first recorded channel of the first quadratic group (from its
        largest part along dim 0, e.g. a conv's weight rather than its bias)."""
        quad = [g for g in groups if g.quadratic and any(p.dim == 0 for p in g.parts)]
        if not quad:
            return None, torch.empty(0, dtype=torch.int64)
        g = quad[0]
        rows = [p for p in g.parts if p.dim == 0]
        part = max(
            rows, key=lambda p: self.params[p.param].numel() // self.params[p.param].shape[0]
        )
        p = self.params[part.param]
        channel = part.first + g.kept[0]
        per_row = p.numel() // p.shape[0]
        base = channel * part.fan * per_row
        n = min(TRACE_PARAMS, part.fan * per_row)
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
        for kinds in self.by_family.values():
            for kind, groups in kinds.items():
                names = [b for g in groups for b in g.block_names()]
                gidx = np.concatenate([np.full(len(g.kept), i) for i, g in enumerate(groups)])
                chan = np.concatenate([np.asarray(g.kept) for g in groups])
                size = np.concatenate([np.full(len(g.kept), self._block_size(g)) for g in groups])
                self.writer.describe_kind(kind, names, [g.name for g in groups], gidx, chan, size)
        if self.trace_param is not None:
            self.writer.set_attrs(
                "trace", param=self.trace_param, flat_index=self.trace_index.cpu().numpy(),
                block=self._trace_block,
            )  # fmt: skip

    def _state_sums(self) -> list[torch.Tensor]:
        """Per pass, the part sums of Q and Q_abs's summands for a theta_n read afresh, by the
        pass that gives them after every step (with theta_next = theta_n): the same kernel
        and summation order, so Q_n is bitwise the same whether theta_n came from the previous
        step or from a checkpoint (``--resume``). The passes' other sums (with placeholder
        scalars 1) are unused."""
        arrays = {"theta": self.theta, "theta_next": self.theta, "g": self.flat_grad,
                  **self.state_bufs}  # fmt: skip
        out = []
        for p in self.passes:
            ones = [1.0] * len(p.pass_.scalars)
            out.append(p.state_part(p.pass_.sums(arrays, np.asarray(ones) if self.fused else ones)))
        return out

    def _record_state(self, row: int) -> None:
        """Q and Q_abs of every block (:meth:`_Family.put_state`, from the part sums
        ``after_step`` left, or :meth:`_state_sums` when theta_n was read afresh) and the
        traced weights at theta_n (``self.theta``)."""
        if self.q_sums is None:
            self.q_sums = self._state_sums()
        for p, sums in zip(self.passes, self.q_sums, strict=True):
            p.family.put_state(sums, row)
        if self.trace_param is not None:
            self.bufs["trace/values"][row] = self.theta.index_select(0, self.trace_flat)

    @torch.no_grad()
    def before_step(
        self, loss: torch.Tensor | None = None, accuracy: torch.Tensor | None = None
    ) -> None:
        """Call after ``loss.backward()`` and before ``optimizer.step()``: records Q_n, keeps
        g_n (its signals are reduced in ``after_step``, with the step's). ``loss`` and
        ``accuracy`` are optional (not reported when never given)."""
        if self.in_step:
            raise NmechError("Recorder.before_step called twice without after_step")
        grads = [p.grad for p in self.plist]
        for n, g in zip(self.params, grads, strict=True):
            if g is None:
                raise NmechError(f"{n} has no gradient: call before_step after loss.backward()")
        if self.versions != [p._version for p in self.plist]:
            self._load_theta()
        self.grads = AddressTable.of(grads, self.shapes) if self.grad_in_place else None
        if self.grads is None:
            _copy(self.grad_views, grads)
        else:
            self.grad_versions = [g._version for g in grads]
        self._record_state(self.row)
        if loss is not None:
            self.loss_given = True
            self.bufs["train/loss"][self.row] = loss.detach().double()
        if accuracy is not None:
            self.bufs["train/accuracy"][self.row] = accuracy.detach().double()
        self.in_step = True

    @torch.no_grad()
    def after_step(self) -> None:
        """Call right after ``optimizer.step()``: records the step's signals and reduces
        theta_{n+1}^2 for the next step's Q."""
        if not self.in_step:
            raise NmechError("Recorder.after_step called without before_step")
        _copy(self.next_views, self.plist)
        self._record_signals(self.row)
        self.grads = None
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

    @property
    def path(self) -> Path:
        """The records file."""
        return self.writer.path

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
        names = {kind: [b for g in groups for b in g.block_names()]
                 for kinds in self.by_family.values() for kind, groups in kinds.items()}  # fmt: skip
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

    def compare(self) -> Any:
        """Measured and predicted Q per kind and form, with the errors
        (:func:`nmech.validation.compare.compare_file` of the closed records file)."""
        if self.writer.file.id.valid:
            raise NmechError("Recorder.compare needs the records closed: call rec.close() first")
        from nmech.validation.compare import compare_file

        return compare_file(self.writer.path)
