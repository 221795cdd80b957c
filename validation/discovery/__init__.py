"""Find the symmetries of any ``nn.Module`` from its torch.fx graph, then check them on a batch.

``discover(model, (x, y))`` traces the model (:mod:`.trace`: a model fx cannot trace is a
one-line error naming the layer), proposes candidate blocks and checks each on the batch:

* scale and rescale (:mod:`.propagate`, :mod:`.blocks`): every positive channel scaling that
  the graph provably leaves unchanged — weights feeding a BatchNorm (per channel), a GroupNorm
  (per group), a LayerNorm or RMSNorm (the whole layer, or per head when a per-head norm
  follows a reshape: QK-norm); a Linear/Conv or a normalisation's affine channel and the
  columns of the next Linear/Conv across ReLU, pooling and shape ops; the channels of a
  residual stream (every writer of a stream channel with every reader, joined by the
  additions); attention values with the output projection. GELU, SiLU and other
  non-homogeneous maps, products of two scaled tensors and a residual addition with an
  unscaled summand end a candidate, and the reason is reported per layer, never guessed.
* translation (:mod:`.translation`): softmax cross-entropy logits (the output layer's columns
  and bias) and attention keys (the key bias, whose gradient is identically zero).

Every candidate block is then checked (:mod:`.check`): kept when its generator is orthogonal to
the batch gradient within the tolerance, else listed in ``Discovery.failures`` with its
violation, never silently kept. ``Discovery.summary()`` says per layer what was found, what
failed and by how much, and why nothing was proposed where nothing was.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from nmech.validation.channels import Group, Part
from nmech.validation.discovery.blocks import symmetry_groups
from nmech.validation.discovery.check import LINEAR_TOL_FACTOR, violations
from nmech.validation.discovery.propagate import Propagation, propagate
from nmech.validation.discovery.trace import trace
from nmech.validation.discovery.translation import attention_keys, output_head
from nmech.validation.kinds import ordered

DEFAULT_TOL = 1e-3
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

__all__ = [
    "DEFAULT_TOL", "BlockFailure", "Discovery", "Traced", "FINDERS", "candidate_groups",
    "discover", "Part",
]  # fmt: skip


@dataclass(frozen=True)
class Traced:
    """What a candidate finder reads: the traced graph, the label propagation (:mod:`.propagate`),
    the parameter shapes, and whether the loss is a softmax cross-entropy over the output."""

    gm: fx.GraphModule
    prop: Propagation
    shapes: dict[str, torch.Size]
    softmax_cross_entropy: bool


def _scalings(t: Traced) -> list[Group]:
    return symmetry_groups(t.prop, t.shapes)


def _output_head(t: Traced) -> list[Group]:
    return output_head(t.gm) if t.softmax_cross_entropy else []


def _attention_keys(t: Traced) -> list[Group]:
    return attention_keys(t.gm, t.prop)


#: The candidate finders, in order; each maps a :class:`Traced` model to candidate groups (of
#: registered kinds). A new kind's finder is appended here (``docs/extending.md``).
FINDERS: list[Callable[[Traced], list[Group]]] = [_scalings, _output_head, _attention_keys]


@dataclass(frozen=True)
class BlockFailure:
    """A candidate block whose generator is not orthogonal to the gradient on the check batch."""

    kind: str
    group: str
    channel: int
    violation: float


@dataclass
class Discovery:
    """The symmetry groups that passed the check, every block that did not, and per layer why
    nothing was proposed (``notes[layer][reason]`` = channels)."""

    groups: list[Group]
    failures: list[BlockFailure] = field(default_factory=list)
    tol: float = DEFAULT_TOL
    notes: dict[str, dict[str, int]] = field(default_factory=dict)
    layers: dict[str, str] = field(default_factory=dict)  # layer -> module class, graph order

    def of_kind(self, kind: str) -> list[Group]:
        """The groups of one kind, in graph order."""
        return [g for g in self.groups if g.kind == kind]

    @property
    def kinds(self) -> list[str]:
        """The kinds found, in registry order."""
        return ordered({g.kind for g in self.groups})

    def blocks(self, kind: str) -> int:
        """Number of kept blocks of ``kind``."""
        return sum(len(g.kept) for g in self.of_kind(kind))

    def per_layer(self) -> dict[str, dict[str, Any]]:
        """``{layer: {"type", "found": [..], "failed": [..], "notes": {reason: channels}}}``."""
        out: dict[str, dict[str, Any]] = {
            name: {"type": t, "found": [], "failed": [], "notes": {}}
            for name, t in self.layers.items()
        }

        def entry(group_parts: tuple[Part, ...]) -> dict[str, Any]:
            layer = group_parts[0].param.rsplit(".", 1)[0]
            return out.setdefault(layer, {"type": "", "found": [], "failed": [], "notes": {}})

        by_name = {}
        for g in self.groups:
            by_name[g.name] = g
            entry(g.parts)["found"].append(
                {"kind": g.kind, "group": g.name, "blocks": len(g.kept), "channels": g.channels}
            )
        failed: dict[tuple[str, str], list[float]] = {}
        for f in self.failures:
            failed.setdefault((f.kind, f.group), []).append(f.violation)
        for (kind, group), v in failed.items():
            parts = by_name[group].parts if group in by_name else (Part(group, None),)
            entry(parts)["failed"].append(
                {"kind": kind, "group": group, "blocks": len(v), "min_violation": min(v),
                 "max_violation": max(v)}
            )  # fmt: skip
        for layer, reasons in self.notes.items():
            out.setdefault(layer, {"type": "", "found": [], "failed": [], "notes": {}})["notes"] = (
                reasons
            )
        return out

    def summary(self) -> str:
        """Per layer: the symmetries found, the candidates that failed their check and by how
        much, and why nothing was proposed (the reason and the channels it concerns)."""
        lines = []
        if not self.groups:
            lines.append("no symmetry found in this model (reasons per layer below)")
        else:
            total = ", ".join(f"{k}: {self.blocks(k)} blocks" for k in self.kinds)
            lines.append(f"found {total}; {len(self.failures)} candidate blocks failed the check")
        for layer, info in self.per_layer().items():
            if not (info["found"] or info["failed"] or info["notes"]):
                continue
            head = f"{layer} ({info['type']})" if info["type"] else layer
            items = [f"{f['kind']} {f['blocks']}/{f['channels']} blocks ({f['group']})"
                     for f in info["found"]]  # fmt: skip
            items += [
                f"{f['kind']} {f['blocks']} blocks failed ({f['group']}; violation "
                f"{f['min_violation']:.1e}..{f['max_violation']:.1e} > tol)"
                for f in info["failed"]
            ]
            items += [f"no symmetry for {n} channels: {why}" for why, n in info["notes"].items()]
            lines.append(f"  {head}: " + "; ".join(items))
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """Plain data for ``discovery-<model>.json``."""
        return {
            "tolerance": self.tol,
            "linear_tolerance": self.tol * LINEAR_TOL_FACTOR,
            "groups": [
                {"kind": g.kind, "name": g.name, "channels": g.channels, "kept": len(g.kept)}
                for g in self.groups
            ],
            "failures": [vars(f) for f in self.failures],
            "layers": self.per_layer(),
        }


def candidate_groups(
    model: nn.Module, example: torch.Tensor, softmax_cross_entropy: bool = True
) -> tuple[list[Group], dict[str, dict[str, int]], dict[str, str]]:
    """Candidate groups of ``model`` (graph order), the reasons it has none elsewhere (per
    layer), and the layers' classes; ``example`` is an input batch."""
    gm = trace(model)
    prop = propagate(gm, example)
    shapes = {n: p.shape for n, p in model.named_parameters()}
    traced = Traced(gm, prop, shapes, softmax_cross_entropy)
    groups = [g for finder in FINDERS for g in finder(traced)]
    notes: dict[str, Counter] = {}
    for v, (writer, _) in enumerate(prop.origin):
        reason = prop.reason(v)
        if reason is not None:
            notes.setdefault(writer, Counter())[reason] += 1
    layers = {name: type(m).__name__ for name, m in model.named_modules() if name and name in
              set(prop.order) | {p.rsplit(".", 1)[0] for p in shapes}}  # fmt: skip
    return groups, {k: dict(v) for k, v in notes.items()}, layers


def discover(
    model: nn.Module,
    batch: tuple[torch.Tensor, torch.Tensor],
    loss_fn: LossFn = F.cross_entropy,
    softmax_cross_entropy: bool = True,
    tol: float = DEFAULT_TOL,
) -> Discovery:
    """Candidate groups of ``model`` that pass the orthogonality check on ``batch = (x, y)``.

    The model runs in its current mode (use train mode: BatchNorm in eval mode is not scale
    invariant, and is reported so). ``p.grad`` is left untouched. ``softmax_cross_entropy``:
    ``loss_fn`` is a softmax cross-entropy over the output's last dim (translation of the
    output layer).
    """
    x, y = batch
    groups, notes, layers = candidate_groups(model, x, softmax_cross_entropy)
    named = dict(model.named_parameters())
    names = [n for n, p in named.items() if p.requires_grad]
    loss = loss_fn(model(x), y)
    grads = torch.autograd.grad(loss, [named[n] for n in names], allow_unused=True)
    grads = {
        n: torch.zeros_like(named[n]) if g is None else g for n, g in zip(names, grads, strict=True)
    }
    params = {n: named[n].detach() for n in names}
    kept: list[Group] = []
    failures: list[BlockFailure] = []
    usable = [g for g in groups if all(p.param in grads for p in g.parts)]
    for g, v in zip(usable, violations(usable, params, grads), strict=True):
        bound = tol if g.quadratic else tol * LINEAR_TOL_FACTOR
        v = v.tolist()
        ok = tuple(c for c in g.kept if v[c] <= bound)
        failures += [BlockFailure(g.kind, g.name, c, v[c]) for c in g.kept if not v[c] <= bound]
        if ok:
            kept.append(replace(g, keep=None if len(ok) == g.channels else ok))
    return Discovery(kept, failures, tol, notes, layers)
