"""Channel scalings that leave a network's loss unchanged, found by propagating labels.

Every channel a parameter *writes* is a variable: output channel o of a Linear or Conv (row o of
its weight and bias[o]), channel c of a normalisation's affine weight and bias, column d of an
Embedding, index d of the last dim of any other parameter the graph reads (a positional
embedding, a class token). Scaling variable v by a > 0 scales those parameter slices by a.
Running the torch.fx graph on a real batch, every intermediate tensor carries an integer
*label* tensor of its shape: the variable its element is scaled by, or −1 (unchanged). Ops act
on labels as they act on values under a positive scaling:

* positively homogeneous, channel-wise ops (ReLU, LeakyReLU, pooling, dropout, negation,
  products with unscaled tensors or constants) and pure shape ops (view, permute, cat, getitem,
  ...) carry labels along (shape ops run on the label tensor itself);
* a sum x + y of scaled tensors needs equal scales element by element: their variables are
  *joined* (union-find); a sum with an unchanged summand (a residual from the input, a constant)
  *breaks* the scaled variables there;
* a normalisation (BatchNorm in training mode per channel, LayerNorm/RMSNorm over its
  normalised dims, GroupNorm per group) absorbs a common scale of each normalised set: the
  set's variables are joined and its output is unchanged; a set mixing scaled and unscaled
  elements breaks the scaled ones; its affine parameters then write new variables;
* a Linear or Conv *reads* its input: the scale of input channel j is compensated by scaling
  column j of its weight by 1/a (one variable per column, joined across positions), and its
  output carries its own row variables;
* a product of two scaled tensors (q·kᵀ, gating), any op not positively homogeneous (GELU, SiLU,
  softmax, tanh, ...), an opaque module, and the model output break what reaches them.

At the end every set of joined, unbroken variables is one symmetry block: its writers' slices
scale by a and its readers' columns by 1/a, so J = P_writers − P_readers (rescale; scale when
nothing reads it: all of it is absorbed by normalisations). A variable broken somewhere keeps
the first reason (an op and its node), which discovery reports per layer. The propagation
runs on the first two samples of the batch: labels never depend on the sample.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

Labels = torch.Tensor  # int64, same shape as the value, -1 = unchanged

LINEAR_MAPS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
NORMS = (*BATCH_NORMS, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)
ELEMENTWISE_MODULES = (
    nn.ReLU, nn.LeakyReLU, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.Identity,
    nn.AlphaDropout,
)  # fmt: skip
ELEMENTWISE_FUNCTIONS = {
    F.relu, torch.relu, F.leaky_relu, F.dropout, F.dropout1d, F.dropout2d, F.dropout3d,
    operator.neg, torch.neg, operator.pos,
}  # fmt: skip
ELEMENTWISE_METHODS = {"relu", "relu_", "neg", "contiguous", "clone", "float", "double", "half",
                       "bfloat16", "to", "type_as", "detach"}  # fmt: skip
SHAPE_MODULES = (nn.Flatten, nn.Unflatten)
SHAPE_FUNCTIONS = {
    torch.flatten, torch.reshape, torch.permute, torch.transpose, torch.squeeze, torch.unsqueeze,
    torch.cat, torch.concat, torch.stack, torch.chunk, torch.split, torch.unbind, torch.narrow,
    torch.select, torch.movedim, torch.swapaxes, torch.t, operator.getitem, torch.flip,
}  # fmt: skip
SHAPE_METHODS = {
    "view", "reshape", "permute", "transpose", "flatten", "unflatten", "squeeze", "unsqueeze",
    "expand", "expand_as", "chunk", "split", "unbind", "narrow", "select", "movedim", "t",
    "swapaxes", "flip", "repeat", "view_as", "reshape_as",
}  # fmt: skip
QUERY_METHODS = {"size", "dim", "numel", "stride", "is_contiguous", "get_device"}
ADDITIONS = {operator.add, operator.iadd, torch.add, operator.sub, operator.isub, torch.sub}
PRODUCTS = {operator.mul, operator.imul, torch.mul, operator.truediv, operator.itruediv,
            torch.div, torch.true_divide}  # fmt: skip
MATMULS = {operator.matmul, torch.matmul, torch.bmm}
POOLS: dict[type, Callable[..., torch.Tensor]] = {
    nn.MaxPool1d: F.max_pool1d, nn.MaxPool2d: F.max_pool2d, nn.MaxPool3d: F.max_pool3d,
    nn.AvgPool1d: F.max_pool1d, nn.AvgPool2d: F.max_pool2d, nn.AvgPool3d: F.max_pool3d,
}  # fmt: skip
ADAPTIVE_POOLS: dict[type, Callable[..., torch.Tensor]] = {
    nn.AdaptiveAvgPool1d: F.adaptive_max_pool1d, nn.AdaptiveAvgPool2d: F.adaptive_max_pool2d,
    nn.AdaptiveAvgPool3d: F.adaptive_max_pool3d, nn.AdaptiveMaxPool1d: F.adaptive_max_pool1d,
    nn.AdaptiveMaxPool2d: F.adaptive_max_pool2d, nn.AdaptiveMaxPool3d: F.adaptive_max_pool3d,
}  # fmt: skip
POOL_FUNCTIONS: dict[Any, Callable[..., torch.Tensor]] = {
    F.max_pool1d: F.max_pool1d, F.max_pool2d: F.max_pool2d, F.max_pool3d: F.max_pool3d,
    F.avg_pool1d: F.max_pool1d, F.avg_pool2d: F.max_pool2d, F.avg_pool3d: F.max_pool3d,
    F.adaptive_avg_pool1d: F.adaptive_max_pool1d, F.adaptive_avg_pool2d: F.adaptive_max_pool2d,
    F.adaptive_avg_pool3d: F.adaptive_max_pool3d,
}  # fmt: skip
SOFTMAXES = {F.softmax, torch.softmax, F.log_softmax, torch.log_softmax}


@dataclass(frozen=True)
class Slice:
    """Index ``index`` of parameter ``param`` along ``dim`` (None: the whole 0-d tensor)."""

    param: str
    dim: int | None
    index: int


@dataclass
class Propagation:
    """The outcome: variables, what they write and read, joins and breaks (module docstring).

    ``origin[v]`` = (module or parameter name, channel); ``writes[v]`` the slices v scales by a;
    ``reads`` the (variable, slice) pairs scaled by 1/a; ``broken[root]`` the first reason a
    set of joined variables cannot scale; ``keys`` the labels of every attention key operand
    (for :mod:`nmech.validation.discovery.translation`), by node name.
    """

    origin: list[tuple[str, int]] = field(default_factory=list)
    writes: list[list[Slice]] = field(default_factory=list)
    reads: list[tuple[int, Slice]] = field(default_factory=list)
    parent: list[int] = field(default_factory=list)
    broken: dict[int, str] = field(default_factory=dict)
    keys: dict[str, torch.Tensor] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # writer names in graph order

    def new(self, origin: tuple[str, int], writes: list[Slice]) -> int:
        """A fresh variable."""
        self.origin.append(origin)
        self.writes.append(writes)
        self.parent.append(len(self.parent))
        if origin[0] not in self.order:
            self.order.append(origin[0])
        return len(self.parent) - 1

    def find(self, v: int) -> int:
        """The representative of v's joined set."""
        root = v
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[v] != root:
            self.parent[v], v = root, self.parent[v]
        return root

    def join(self, a: int, b: int) -> None:
        """v_a and v_b must scale together."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        self.parent[rb] = ra
        if rb in self.broken:
            self.broken.setdefault(ra, self.broken.pop(rb))

    def breaks(self, v: int, reason: str) -> None:
        """v cannot scale (the first reason is kept)."""
        self.broken.setdefault(self.find(v), reason)

    def is_broken(self, v: int) -> bool:
        """True when v's joined set was broken."""
        return self.find(v) in self.broken

    def reason(self, v: int) -> str | None:
        """Why v's set was broken (None when it was not)."""
        return self.broken.get(self.find(v))


def _vars(labels: Labels) -> np.ndarray:
    """The distinct variables in a label tensor."""
    flat = labels.reshape(-1)
    return torch.unique(flat[flat >= 0]).numpy()


def _lines(labels: Labels, dims: tuple[int, ...]) -> Labels:
    """``labels`` with the dims to be reduced moved last and flattened: [sets, set size]."""
    keep = [d for d in range(labels.dim()) if d not in dims]
    moved = labels.permute(*keep, *dims)
    size = int(np.prod([labels.shape[d] for d in dims])) if dims else 1
    return moved.reshape(-1, size)


class LabelRun:
    """One label propagation over a traced module (module docstring)."""

    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm = gm
        self.out = Propagation()
        self.modules = dict(gm.named_modules())
        self.module_vars: dict[str, list[int]] = {}
        self.param_vars: dict[str, list[int]] = {}
        self.params = dict(gm.named_parameters())

    # -- joins and breaks over label tensors -------------------------------------------------

    def break_all(self, *labels: Any, reason: str) -> None:
        """Break every variable in ``labels`` (tensors, tuples of them, or None)."""
        for lab in labels:
            if isinstance(lab, tuple | list):
                self.break_all(*lab, reason=reason)
            elif isinstance(lab, torch.Tensor):
                for v in _vars(lab):
                    self.out.breaks(int(v), reason)

    def join_sets(self, lines: Labels, reason: str) -> Labels:
        """Rows of ``lines`` [sets, size] are sets that must scale together: join each row's
        variables; a row mixing scaled and unchanged elements breaks its variables. Returns
        one representative label per row (−1 for a row with no variable)."""
        marked = lines >= 0
        mixed = marked.any(1) & ~marked.all(1)
        if mixed.any():
            self.break_all(lines[mixed], reason=reason)
        rep = lines.max(1).values
        lo = torch.where(marked, lines, torch.iinfo(lines.dtype).max).min(1).values
        differ = marked.any(1) & (lo != rep)
        if differ.any():
            rows = lines[differ]
            pairs = torch.stack([rows.max(1).values.unsqueeze(1).expand_as(rows), rows], -1)
            pairs = pairs[rows >= 0].reshape(-1, 2)
            for a, b in torch.unique(pairs, dim=0).tolist():
                if a != b:
                    self.out.join(a, b)
        return rep

    def join_elementwise(self, a: Labels, b: Labels, reason: str) -> Labels:
        """Labels of a sum: equal-position variables joined, a scaled element against an
        unchanged one broken; the sum carries a's labels where set, else b's."""
        a, b = torch.broadcast_tensors(a, b)
        both = (a >= 0) & (b >= 0)
        one = (a >= 0) ^ (b >= 0)
        if one.any():
            self.break_all(a[one], b[one], reason=reason)
        if both.any():
            pairs = torch.stack([a[both], b[both]], 1)
            for x, y in torch.unique(pairs, dim=0).tolist():
                if x != y:
                    self.out.join(x, y)
        return torch.where(a >= 0, a, b)

    # -- writers --------------------------------------------------------------------------

    def writer_vars(self, name: str, slices: Callable[[int], list[Slice]], count: int) -> list[int]:
        """The variables of writer ``name`` (created once: a module called twice writes the
        same channels)."""
        if name not in self.module_vars:
            self.module_vars[name] = [self.out.new((name, c), slices(c)) for c in range(count)]
        return self.module_vars[name]

    @staticmethod
    def channel_labels(shape: torch.Size, dim: int, vars_: list[int]) -> Labels:
        """Labels of a tensor whose channel c along ``dim`` carries ``vars_[c]``."""
        ids = torch.tensor(vars_, dtype=torch.int64)
        view = [1] * len(shape)
        view[dim] = len(vars_)
        return ids.view(view).expand(shape).clone()

    def linear_module(self, name: str, m: nn.Module, x: Labels | None, y: torch.Tensor) -> Labels:
        """A Linear/Conv: reads its input's channels (columns), writes its output channels."""
        conv = not isinstance(m, nn.Linear)
        if x is not None:
            if conv and m.groups != 1:
                self.break_all(x, reason=f"grouped convolution {name}")
            else:
                dim = 1 if conv else x.dim() - 1
                lines = _lines(x, tuple(d for d in range(x.dim()) if d != dim))
                rep = self.join_sets(lines, reason=f"input of {name} mixes scaled and unchanged")
                for j, v in enumerate(rep.tolist()):
                    if v >= 0:
                        self.out.reads.append((v, Slice(f"{name}.weight", 1, j)))
        has_bias = getattr(m, "bias", None) is not None

        def slices(o: int) -> list[Slice]:
            own = [Slice(f"{name}.weight", 0, o)]
            return own + ([Slice(f"{name}.bias", 0, o)] if has_bias else [])

        count = m.out_channels if conv else m.out_features
        dim = 1 if conv else y.dim() - 1
        return self.channel_labels(y.shape, dim, self.writer_vars(name, slices, count))

    def parameter(self, name: str, value: torch.Tensor) -> Labels | None:
        """A parameter read by the graph (get_attr): one variable per index of its last dim."""
        if not isinstance(value, nn.Parameter) or not value.requires_grad:
            return None
        if value.dim() == 0:
            vars_ = self.writer_vars(name, lambda c: [Slice(name, None, 0)], 1)
            return torch.full((), vars_[0], dtype=torch.int64)
        dim = value.dim() - 1
        vars_ = self.writer_vars(name, lambda c: [Slice(name, dim, c)], value.shape[dim])
        return self.channel_labels(value.shape, dim, vars_)

    # -- normalisations --------------------------------------------------------------------

    def norm_module(
        self, name: str, m: nn.Module, x: Labels | None, y: torch.Tensor
    ) -> Labels | None:
        """Absorb the input's scale per normalised set, then write the affine channels."""
        if isinstance(m, BATCH_NORMS) and not m.training and m.track_running_stats:
            self.break_all(x, reason=f"{name} is a BatchNorm in eval mode (running statistics)")
        elif x is not None:
            self.join_sets(
                self.norm_sets(m, x), reason=f"{name} normalises it with unchanged features"
            )
        weight = getattr(m, "weight", None)
        if weight is None:
            return None
        if isinstance(m, (nn.LayerNorm, nn.RMSNorm)) and weight.dim() != 1:
            return None
        dim = 1 if isinstance(m, (*BATCH_NORMS, nn.GroupNorm)) else y.dim() - 1
        bias = getattr(m, "bias", None) is not None

        def slices(c: int) -> list[Slice]:
            own = [Slice(f"{name}.weight", 0, c)]
            return own + ([Slice(f"{name}.bias", 0, c)] if bias else [])

        return self.channel_labels(y.shape, dim, self.writer_vars(name, slices, weight.shape[0]))

    @staticmethod
    def norm_sets(m: nn.Module, x: Labels) -> Labels:
        """[sets, size]: the elements each normalisation statistic is taken over."""
        if isinstance(m, BATCH_NORMS):
            return _lines(x, tuple(d for d in range(x.dim()) if d != 1))
        if isinstance(m, nn.GroupNorm):
            return x.reshape(x.shape[0] * m.num_groups, -1)
        count = len(m.normalized_shape)
        return _lines(x, tuple(range(x.dim() - count, x.dim())))

    # -- the walk ---------------------------------------------------------------------------

    def run(self, example: torch.Tensor) -> Propagation:
        """Propagate labels through the graph on ``example`` (module docstring)."""
        real: dict[fx.Node, Any] = {}
        lab: dict[fx.Node, Any] = {}
        users_left = {n: len(n.users) for n in self.gm.graph.nodes}
        with torch.no_grad():
            for node in self.gm.graph.nodes:
                if node.op == "placeholder":
                    real[node], lab[node] = (example, None) if not real else (None, None)
                elif node.op == "get_attr":
                    value = _attr(self.gm, str(node.target))
                    real[node], lab[node] = value, self.parameter(str(node.target), value)
                elif node.op == "output":
                    self.break_all(*_flat(fx.node.map_arg(node.args, lab.get)),
                                   reason="it reaches the model output")  # fmt: skip
                else:
                    args = fx.node.map_arg(node.args, real.get)
                    kwargs = fx.node.map_arg(node.kwargs, real.get)
                    largs = fx.node.map_arg(node.args, lab.get)
                    lkwargs = fx.node.map_arg(node.kwargs, lab.get)
                    value = self.execute(node, args, kwargs)
                    real[node] = value
                    lab[node] = self.labels(node, args, kwargs, largs, lkwargs, value)
                for inp in node.all_input_nodes:  # free what no later node reads
                    users_left[inp] -= 1
                    if users_left[inp] == 0 and inp.op != "placeholder":
                        real.pop(inp, None)
                        lab.pop(inp, None)
        self.consolidate()
        return self.out

    def consolidate(self) -> None:
        """One parameter slice has one scale: join the variables that write the same slice
        (a parameter read twice), and those whose reads compensate the same column (a layer
        called twice); frozen parameters (requires_grad False) cannot scale."""
        owner: dict[Slice, int] = {}
        for v, slices in enumerate(self.out.writes):
            for s in slices:
                self._claim(owner, s, v)
        readers: dict[Slice, int] = {}
        for v, s in self.out.reads:
            self._claim(readers, s, v)

    def _claim(self, owner: dict[Slice, int], s: Slice, v: int) -> None:
        if s in owner:
            self.out.join(owner[s], v)
        else:
            owner[s] = v
        p = self.params.get(s.param)
        if p is not None and not p.requires_grad:
            self.out.breaks(v, f"{s.param} is frozen (requires_grad=False)")

    def execute(self, node: fx.Node, args: Any, kwargs: Any) -> Any:
        """The node's real value."""
        if node.op == "call_module":
            return self.modules[str(node.target)](*args, **kwargs)
        if node.op == "call_method":
            return getattr(args[0], str(node.target))(*args[1:], **kwargs)
        return node.target(*args, **kwargs)

    def labels(self, node: fx.Node, args: Any, kwargs: Any, largs: Any, lkwargs: Any,
               value: Any) -> Any:  # fmt: skip
        """The node's labels (module docstring)."""
        scaled = [x for x in _flat((largs, lkwargs)) if isinstance(x, torch.Tensor)]
        if node.op == "call_module":
            return self.module_labels(node, args, largs, value, scaled)
        target = node.target
        op = f"{target}" if node.op == "call_method" else getattr(target, "__name__", str(target))
        if node.op == "call_method" and target in QUERY_METHODS:
            return None
        if node.op == "call_function" and target is getattr:
            return (
                self.shape_op(node, args, kwargs, largs, lkwargs)
                if args[1] in ("T", "mT")
                else None
            )
        if target is F.scaled_dot_product_attention:
            return self.attention(node, args, kwargs, largs, lkwargs)
        if not scaled:
            return None
        where = f"{op} ({node.name})"
        if target in ELEMENTWISE_FUNCTIONS or (
            node.op == "call_method" and target in ELEMENTWISE_METHODS
        ):
            return largs[0]
        if target in SHAPE_FUNCTIONS or (node.op == "call_method" and target in SHAPE_METHODS):
            return self.shape_op(node, args, kwargs, largs, lkwargs)
        if target in POOL_FUNCTIONS:
            return self.pool(POOL_FUNCTIONS[target], largs[0], args[1:], kwargs, where)
        if target in ADDITIONS or (
            node.op == "call_method" and target in ("add", "add_", "sub", "sub_")
        ):
            return self.addition(args, largs, where)
        if target in PRODUCTS or (
            node.op == "call_method" and target in ("mul", "mul_", "div", "div_")
        ):
            return self.product(target, args, largs, value, where)
        if target in MATMULS or (node.op == "call_method" and target in ("matmul", "bmm")):
            return self.matmul(node, args, largs, where)
        if node.op == "call_method" and target in ("masked_fill", "masked_fill_"):
            fill = args[2] if len(args) > 2 else kwargs.get("value")
            if fill == 0 or (isinstance(fill, float) and abs(fill) == float("inf")):
                return largs[0]
        if target in (F.layer_norm, F.group_norm, F.rms_norm):
            return self.norm_function(target, args, largs, lkwargs, value, where)
        self.break_all(*scaled, reason=f"{where} is not positively homogeneous")
        return None

    def module_labels(self, node: fx.Node, args: Any, largs: Any, value: Any, scaled: list) -> Any:
        """Labels of a module call: writers, normalisations, element-wise and shape modules, pools."""
        name = str(node.target)
        m = self.modules[name]
        x = largs[0] if largs else None
        if isinstance(m, LINEAR_MAPS):
            return self.linear_module(name, m, x, value)
        if isinstance(m, NORMS):
            return self.norm_module(name, m, x, value)
        if isinstance(m, nn.Embedding):
            vars_ = self.writer_vars(
                name, lambda d: [Slice(f"{name}.weight", 1, d)], m.embedding_dim
            )
            return self.channel_labels(value.shape, value.dim() - 1, vars_)
        if not scaled:
            return None
        where = f"{type(m).__name__} {name}"
        if isinstance(m, ELEMENTWISE_MODULES):
            return x
        if isinstance(m, SHAPE_MODULES):
            return m(_unchanged_where_none(x, args[0]))
        if type(m) in POOLS:
            keys = ("kernel_size", "stride", "padding", "dilation", "ceil_mode")
            kwargs = {k: getattr(m, k) for k in keys if hasattr(m, k)}
            if type(m).__name__.startswith("Avg"):
                kwargs.pop("dilation", None)
            return self.pool(POOLS[type(m)], x, (), kwargs, where)
        if type(m) in ADAPTIVE_POOLS:
            return self.pool(ADAPTIVE_POOLS[type(m)], x, (m.output_size,), {}, where)
        self.break_all(*scaled, reason=f"{where} is not positively homogeneous")
        return None

    def shape_op(self, node: fx.Node, args: Any, kwargs: Any, largs: Any, lkwargs: Any) -> Any:
        """Run the shape op on the labels (unscaled tensor arguments as −1 labels)."""
        la = _merge(args, largs)
        lk = _merge(kwargs, lkwargs)
        return self.execute(node, la, lk)

    def pool(self, fn: Callable[..., torch.Tensor], x: Labels, args: Any, kwargs: Any,
             where: str) -> Labels:  # fmt: skip
        """A pooling window must hold one variable: windows that mix break them."""
        kwargs = {
            k: v for k, v in kwargs.items() if k not in ("count_include_pad", "divisor_override")
        }
        f = x.double()
        hi = fn(f, *args, **kwargs)
        lo = -fn(-f, *args, **kwargs)
        if not torch.equal(hi, lo):
            self.break_all(x, reason=f"{where} pools different channels together")
        return hi.round().to(torch.int64)

    def addition(self, args: Any, largs: Any, where: str) -> Labels | None:
        """A sum: variables joined element by element, a constant or an unchanged summand breaks."""
        a, b = (largs + (None, None))[:2]
        if not isinstance(args[1], torch.Tensor) or not isinstance(args[0], torch.Tensor):
            self.break_all(a, b, reason=f"{where} adds a constant")
            return None
        a = a if a is not None else torch.full(args[0].shape, -1, dtype=torch.int64)
        b = b if b is not None else torch.full(args[1].shape, -1, dtype=torch.int64)
        return self.join_elementwise(
            a, b, reason=f"residual addition {where} with an unchanged summand"
        )

    def product(self, target: Any, args: Any, largs: Any, value: Any, where: str) -> Labels | None:
        """x·c or x/c with c unscaled passes x's labels; two scaled factors break both."""
        a, b = (largs + (None, None))[:2]
        division = target in (operator.truediv, operator.itruediv, torch.div, torch.true_divide,
                              "div", "div_")  # fmt: skip
        if a is not None and b is not None or (division and b is not None):
            self.break_all(a, b, reason=f"{where} multiplies two scaled tensors")
            return None
        one = a if a is not None else b
        return one.expand(value.shape).clone() if one.shape != value.shape else one

    def matmul(self, node: fx.Node, args: Any, largs: Any, where: str) -> Labels | None:
        """a @ b with one scaled factor: its variables along the contraction joined, carried to the output."""
        a, b = (largs + (None, None))[:2]
        x, y = args[0], args[1]
        if b is not None:  # a softmax over the last dim may follow: b holds the keys
            self.out.keys[node.name] = b
        if a is not None and b is not None or x.dim() < 2 or y.dim() < 2:
            self.break_all(a, b, reason=f"{where} multiplies two scaled tensors")
            return None
        batch = torch.broadcast_shapes(x.shape[:-2], y.shape[:-2])
        if a is not None:  # row i of a must scale as one: one variable per (batch, i)
            full = a.expand(*batch, *a.shape[-2:])
            rep = self.join_sets(full.reshape(-1, full.shape[-1]), reason=f"{where} mixes channels")
            return (
                rep.reshape(*batch, full.shape[-2], 1)
                .expand(*batch, full.shape[-2], y.shape[-1])
                .clone()
            )
        full = b.expand(*batch, *b.shape[-2:])
        cols = full.transpose(-1, -2).reshape(-1, full.shape[-2])
        rep = self.join_sets(cols, reason=f"{where} mixes channels")
        return (
            rep.reshape(*batch, 1, full.shape[-1])
            .expand(*batch, x.shape[-2], full.shape[-1])
            .clone()
        )

    def attention(
        self, node: fx.Node, args: Any, kwargs: Any, largs: Any, lkwargs: Any
    ) -> Labels | None:
        """softmax(q kᵀ) v: q and k break (scores), v's channels pass to the output."""
        names = ("query", "key", "value")
        q, k, v = (largs[i] if i < len(largs) else lkwargs.get(n) for i, n in enumerate(names))
        if k is not None:
            self.out.keys[node.name] = k
        where = f"attention ({node.name})"
        self.break_all(q, k, reason=f"{where}: q·kᵀ multiplies two scaled tensors")
        if v is None:
            return None
        value = args[2] if len(args) > 2 else kwargs["value"]
        cols = v.transpose(-1, -2).reshape(-1, v.shape[-2])
        rep = self.join_sets(cols, reason=f"{where} mixes value channels")
        out_rows = args[0].shape[-2] if args else kwargs["query"].shape[-2]
        shape = (*v.shape[:-2], 1, value.shape[-1])
        return rep.reshape(shape).expand(*v.shape[:-2], out_rows, value.shape[-1]).clone()

    def norm_function(self, target: Any, args: Any, largs: Any, lkwargs: Any, value: Any,
                      where: str) -> Labels | None:  # fmt: skip
        """F.layer_norm / F.rms_norm / F.group_norm with parameters read by get_attr."""
        x = largs[0]
        if x is not None:
            if target is F.group_norm:
                lines = x.reshape(x.shape[0] * args[1], -1)
            else:
                shape = args[1]
                count = 1 if isinstance(shape, int) else len(shape)
                lines = _lines(x, tuple(range(x.dim() - count, x.dim())))
            self.join_sets(lines, reason=f"{where} normalises it with unchanged features")
        affine = [lab for lab in _flat((largs[2:], lkwargs)) if isinstance(lab, torch.Tensor)]
        out = None
        for lab in affine:
            lab = lab.expand(value.shape) if lab.dim() <= value.dim() else lab
            out = lab if out is None else self.join_elementwise(out, lab, reason=where)
        return None if out is None else out.clone()


def _attr(gm: fx.GraphModule, target: str) -> Any:
    value: Any = gm
    for part in target.split("."):
        value = getattr(value, part)
    return value


def _flat(x: Any) -> list[Any]:
    if isinstance(x, tuple | list):
        return [y for item in x for y in _flat(item)]
    if isinstance(x, dict):
        return [y for item in x.values() for y in _flat(item)]
    return [x]


def _unchanged_where_none(lab: Any, real: Any) -> Any:
    if lab is None and isinstance(real, torch.Tensor):
        return torch.full(real.shape, -1, dtype=torch.int64)
    return lab


def _merge(real: Any, lab: Any) -> Any:
    """``real`` with tensors replaced by their labels (−1 where unscaled)."""
    if isinstance(real, tuple | list):
        lab = lab if isinstance(lab, tuple | list) else [None] * len(real)
        return type(real)(_merge(r, lb) for r, lb in zip(real, lab, strict=True))
    if isinstance(real, dict):
        lab = lab if isinstance(lab, dict) else {}
        return {k: _merge(v, lab.get(k)) for k, v in real.items()}
    if isinstance(real, torch.Tensor):
        return lab if isinstance(lab, torch.Tensor) else _unchanged_where_none(None, real)
    return real


def propagate(gm: fx.GraphModule, example: torch.Tensor) -> Propagation:
    """Label propagation (module docstring) of ``gm`` on the first two samples of ``example``."""
    return LabelRun(gm).run(example[:2])
