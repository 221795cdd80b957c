"""Find the paper's symmetries in any ``nn.Module`` from its torch.fx graph, then check them.

Candidates come from the graph alone (no table of layer names):

* scale -- a Conv/Linear whose only user is a BatchNorm: each output channel (weight row and bias
  entry) is a block A; the loss is invariant under theta_A -> a*theta_A, so J = P_A,
  Q = |theta_A|^2.
* rescale -- a Conv/Linear layer i whose output reaches the input of Conv/Linear layer i+1 only
  through positively homogeneous, channel-wise maps (ReLU, LeakyReLU, max/avg pooling, Dropout,
  Flatten, view/reshape) and no BatchNorm: hidden channel c gives A1 = (row c of W_i, b_i[c])
  and A2 = the inputs of layer i+1 fed by c (after Flatten, columns c*HW .. (c+1)*HW - 1).
  Invariance under (a*theta_A1, theta_A2/a) gives J = P_A1 - P_A2, Q = |theta_A1|^2 -
  |theta_A2|^2.
* translation -- the Linear whose output is the model output, under softmax cross-entropy:
  each input column W[:, j] over classes, and the bias vector, is a block; adding a constant to
  it shifts every logit equally, so c = 1_A, J = 0, Q = <1_A, theta>.

Every candidate block is then checked on a real batch: the generator xi_A = J theta + c must be
orthogonal to the mini-batch gradient, and a block is kept only when

    |<g, xi>_A| / (|g_A| |xi_A| + 1e-30)  <=  tol      (default ``DEFAULT_TOL`` = 1e-3).

The tolerance covers float32 round-off and BatchNorm's eps, which breaks scale invariance by
about eps / Var(pre-activation). Blocks that fail are listed in ``Discovery.failures`` and left
out of the returned groups, never silently kept.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import fx, nn

from nmech.errors import NmechError
from nmech.validation.channels import Group, Part, reduce_part

DEFAULT_TOL = 1e-3
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

_LINEAR_MAPS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_HOMOGENEOUS_MODULES = (
    nn.ReLU, nn.LeakyReLU, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d,
    nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Dropout, nn.Dropout1d,
    nn.Dropout2d, nn.Dropout3d, nn.Flatten, nn.Identity,
)  # fmt: skip
_HOMOGENEOUS_FUNCTIONS = {
    F.relu, torch.relu, F.leaky_relu, F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d,
    F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.dropout,
    F.dropout1d, F.dropout2d, torch.flatten,
}  # fmt: skip
_HOMOGENEOUS_METHODS = {"relu", "relu_", "view", "reshape", "flatten", "contiguous"}
_SHAPE_QUERIES = {"size", "dim"}


@dataclass(frozen=True)
class BlockFailure:
    """A candidate block whose generator is not orthogonal to the gradient on the check batch."""

    kind: str
    group: str
    channel: int
    violation: float


@dataclass
class Discovery:
    """The symmetry groups that passed the check, and every block that did not."""

    groups: list[Group]
    failures: list[BlockFailure] = field(default_factory=list)
    tol: float = DEFAULT_TOL

    def of_kind(self, kind: str) -> list[Group]:
        """The groups of one kind, in graph order."""
        return [g for g in self.groups if g.kind == kind]

    def summary(self) -> str:
        """One line per kind: groups, blocks, and failed blocks."""
        lines = []
        for kind in ("scale", "rescale", "translation"):
            groups = self.of_kind(kind)
            failed = sum(1 for f in self.failures if f.kind == kind)
            blocks = sum(len(g.kept) for g in groups)
            lines.append(f"{kind}: {len(groups)} layers, {blocks} blocks, {failed} failed check")
        return "\n".join(lines)


def _module_of(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    return gm.get_submodule(str(node.target)) if node.op == "call_module" else None


def _is_homogeneous(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(_module_of(gm, node), _HOMOGENEOUS_MODULES)
    if node.op == "call_function":
        return node.target in _HOMOGENEOUS_FUNCTIONS
    return node.op == "call_method" and node.target in _HOMOGENEOUS_METHODS


def _data_users(node: fx.Node) -> list[fx.Node]:
    """Users that consume the tensor's values (shape queries such as ``x.size(0)`` excluded)."""
    return [
        u
        for u in node.users
        if not (u.op == "call_method" and u.target in _SHAPE_QUERIES)
        and not (u.op == "call_function" and u.target in (getattr, operator.getitem))
    ]


def _out_channels(m: nn.Module) -> int:
    return m.out_features if isinstance(m, nn.Linear) else m.out_channels


def _own_parts(name: str, m: nn.Module) -> tuple[Part, ...]:
    parts = [Part(f"{name}.weight", 0)]
    if m.bias is not None:
        parts.append(Part(f"{name}.bias", 0))
    return tuple(parts)


def _rescale_group(name: str, m: nn.Module, nxt_name: str, nxt: nn.Module) -> Group | None:
    """Group for the hidden channels between ``m`` and ``nxt``; None if shapes do not pair."""
    c = _out_channels(m)
    if isinstance(nxt, nn.Linear):
        if nxt.in_features % c:
            return None
        fan = nxt.in_features // c
    elif nxt.groups == 1 and nxt.in_channels == c:
        fan = 1
    else:
        return None
    out = Part(f"{nxt_name}.weight", 1, fan, -1.0)
    return Group("rescale", f"{name}->{nxt_name}", (*_own_parts(name, m), out), c)


def _candidate(gm: fx.GraphModule, node: fx.Node, translation: bool) -> list[Group]:
    """Candidate groups starting at the Conv/Linear ``node``, following its single data path."""
    name, m = str(node.target), _module_of(gm, node)
    cur, flattened = node, False
    while True:
        users = _data_users(cur)
        if len(users) != 1:
            return []
        u = users[0]
        mod = _module_of(gm, u)
        if cur is node and isinstance(mod, _NORMS):
            return [Group("scale", name, _own_parts(name, m), _out_channels(m))]
        if isinstance(mod, _LINEAR_MAPS) and u.args and u.args[0] is cur:
            if isinstance(mod, nn.Linear) and not isinstance(m, nn.Linear) and not flattened:
                return []
            group = _rescale_group(name, m, str(u.target), mod)
            return [] if group is None else [group]
        if u.op == "output" and cur is node and translation and isinstance(m, nn.Linear):
            cols = Group(
                "translation", f"{name}.weight", (Part(f"{name}.weight", 1),), m.in_features
            )
            if m.bias is None:
                return [cols]
            return [cols, Group("translation", f"{name}.bias", (Part(f"{name}.bias", None),), 1)]
        if not _is_homogeneous(gm, u):
            return []
        flattened = flattened or isinstance(mod, nn.Flatten) or u.target in ("view", "reshape")
        flattened = flattened or u.target in (torch.flatten, "flatten")
        cur = u


def candidate_groups(model: nn.Module, softmax_cross_entropy: bool = True) -> list[Group]:
    """All candidate symmetry groups of ``model`` read off its torch.fx graph, in graph order."""
    if not isinstance(model, nn.Module):
        raise NmechError(f"expected an nn.Module, got {type(model).__name__}")
    try:
        gm = fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types for untraceable code
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NmechError(f"cannot trace {type(model).__name__} with torch.fx: {first}") from exc
    groups: list[Group] = []
    for node in gm.graph.nodes:
        if isinstance(_module_of(gm, node), _LINEAR_MAPS):
            groups.extend(_candidate(gm, node, softmax_cross_entropy))
    return groups


def _norm_sq(group: Group, t: dict[str, torch.Tensor]) -> torch.Tensor:
    """|t_A|^2 per channel (every part counted positively), float64."""
    return sum(reduce_part(p, t[p.param].double() ** 2) for p in group.parts)


def violations(
    groups: list[Group], params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor]
) -> list[torch.Tensor]:
    """Per group and channel, |<g, xi>_A| / (|g_A| |xi_A| + 1e-30) with xi = J theta + c."""
    out = []
    for g in groups:
        if g.quadratic:
            xi = {p.param: params[p.param] * p.sign for p in g.parts}
        else:
            xi = {p.param: torch.ones_like(params[p.param]) for p in g.parts}
        dot = sum(reduce_part(p, grads[p.param].double() * xi[p.param].double()) for p in g.parts)
        scale = (_norm_sq(g, grads) * _norm_sq(g, xi)).sqrt() + 1e-30
        out.append(dot.abs() / scale)
    return out


def discover(
    model: nn.Module,
    batch: tuple[torch.Tensor, torch.Tensor],
    loss_fn: LossFn = F.cross_entropy,
    softmax_cross_entropy: bool = True,
    tol: float = DEFAULT_TOL,
) -> Discovery:
    """Candidate groups of ``model`` that pass the orthogonality check on ``batch = (x, y)``.

    The model runs in its current mode (use train mode: BatchNorm in eval mode is not scale
    invariant, and those blocks fail). ``p.grad`` is left untouched.
    """
    groups = candidate_groups(model, softmax_cross_entropy)
    named = dict(model.named_parameters())
    names = sorted({p.param for g in groups for p in g.parts})
    x, y = batch
    loss = loss_fn(model(x), y)
    grads = dict(zip(names, torch.autograd.grad(loss, [named[n] for n in names]), strict=True))
    params = {n: named[n].detach() for n in names}
    kept: list[Group] = []
    failures: list[BlockFailure] = []
    for g, v in zip(groups, violations(groups, params, grads), strict=True):
        v = v.cpu().tolist()
        ok = tuple(c for c, val in enumerate(v) if val <= tol)
        failures += [
            BlockFailure(g.kind, g.name, c, val) for c, val in enumerate(v) if not val <= tol
        ]
        if ok:
            kept.append(replace(g, keep=None if len(ok) == g.channels else ok))
    return Discovery(kept, failures, tol)
