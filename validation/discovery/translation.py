"""Translation blocks (J = 0, c = 1_A): adding a constant along them leaves the loss unchanged.

* Softmax cross-entropy logits: a Linear whose output is the model output, under softmax
  cross-entropy over its last dim: each input column W[:, j] over classes, and the bias
  vector, is a block; adding a constant to it shifts every logit of a sample equally.
* Attention keys: in softmax(q kᵀ) (an explicit matmul followed by a softmax over its last
  dim, or ``F.scaled_dot_product_attention``) adding δ to every key shifts score (i, j) by
  q_i·δ, the same for every key j, so the softmax is unchanged: every key-bias entry of the
  layer that produces the keys (through pure shape ops: view, permute, unbind, ...) is a block
  of one element whose gradient is identically zero. A normalisation or any other op between
  (QK-norm, rotary embeddings) ends the walk: no candidate.
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from nmech.validation.channels import Group, Part
from nmech.validation.discovery.propagate import (
    LINEAR_MAPS,
    SHAPE_FUNCTIONS,
    SHAPE_METHODS,
    SOFTMAXES,
    Propagation,
)

_SHAPE_ONLY_METHODS = SHAPE_METHODS | {"contiguous", "float", "double", "half", "to", "clone"}
_SCORE_METHODS = {"mul", "div", "masked_fill", "masked_fill_", "to", "float", "contiguous"}
_SCORE_FUNCTIONS = {operator.mul, operator.truediv, torch.mul, torch.div, operator.add, torch.add}


def output_head(gm: fx.GraphModule) -> list[Group]:
    """Column and bias blocks of the Linear whose only use is the model output."""
    out = []
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        m = gm.get_submodule(str(node.target))
        users = list(node.users)
        if not isinstance(m, nn.Linear) or len(users) != 1 or users[0].op != "output":
            continue
        name = str(node.target)
        out.append(
            Group("translation", f"{name}.weight", (Part(f"{name}.weight", 1),), m.in_features)
        )
        if m.bias is not None:
            out.append(Group("translation", f"{name}.bias", (Part(f"{name}.bias", None),), 1))
    return out


def _softmax_dim(gm: fx.GraphModule, node: fx.Node) -> int | None:
    """The dim a softmax node normalises over (None if ``node`` is no softmax)."""
    if (
        node.op == "call_function"
        and node.target in SOFTMAXES
        or (node.op == "call_method" and node.target in ("softmax", "log_softmax"))
    ):
        return node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
    if node.op == "call_module" and isinstance(gm.get_submodule(str(node.target)), nn.Softmax):
        return gm.get_submodule(str(node.target)).dim
    return None


def _score_source(node: fx.Node) -> fx.Node | None:
    """The matmul whose output a softmax's input is, through scaling and masking."""
    cur = node.args[0] if node.args else None
    while isinstance(cur, fx.Node):
        if cur.op == "call_function" and cur.target in (operator.matmul, torch.matmul, torch.bmm):
            return cur
        if cur.op == "call_method" and cur.target in ("matmul", "bmm"):
            return cur
        if (cur.op == "call_method" and cur.target in _SCORE_METHODS) or (
            cur.op == "call_function" and cur.target in _SCORE_FUNCTIONS
        ):
            cur = cur.args[0]
            continue
        return None
    return None


def _producer(gm: fx.GraphModule, node: fx.Node) -> str | None:
    """The module that produces ``node`` through pure shape ops (None if another op is met)."""
    cur = node
    while isinstance(cur, fx.Node):
        if cur.op == "call_module":
            m = gm.get_submodule(str(cur.target))
            if isinstance(m, nn.Identity | nn.Flatten | nn.Unflatten) and cur.args:
                cur = cur.args[0]
                continue
            return str(cur.target) if isinstance(m, LINEAR_MAPS) or hasattr(m, "bias") else None
        pure = (cur.op == "call_method" and cur.target in _SHAPE_ONLY_METHODS) or (
            cur.op == "call_function" and cur.target in SHAPE_FUNCTIONS
        )
        if not pure or not cur.args:
            return None
        cur = cur.args[0]
    return None


def attention_keys(gm: fx.GraphModule, prop: Propagation) -> list[Group]:
    """Key-bias blocks of every attention (module docstring)."""
    keys: list[tuple[fx.Node, fx.Node]] = []  # (node whose labels were kept, key operand)
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target is F.scaled_dot_product_attention:
            key = node.args[1] if len(node.args) > 1 else node.kwargs.get("key")
            keys.append((node, key))
            continue
        dim = _softmax_dim(gm, node)
        source = _score_source(node) if dim is not None else None
        labels = prop.keys.get(source.name) if source is not None else None
        if labels is not None and dim in (-1, labels.dim() - 1):
            keys.append((source, source.args[1]))
    out: list[Group] = []
    seen: set[str] = set()
    for node, key in keys:
        labels = prop.keys.get(node.name)
        writer = _producer(gm, key) if isinstance(key, fx.Node) else None
        if labels is None or writer is None or writer in seen:
            continue
        bias = getattr(gm.get_submodule(writer), "bias", None)
        if not isinstance(bias, torch.Tensor):
            continue
        flat = labels.reshape(-1)
        rows = sorted({prop.origin[int(v)][1] for v in torch.unique(flat[flat >= 0]).tolist()
                       if prop.origin[int(v)][0] == writer})  # fmt: skip
        if not rows or rows[-1] - rows[0] + 1 != len(rows):
            continue
        seen.add(writer)
        part = Part(f"{writer}.bias", 0, 1, 1.0, rows[0])
        out.append(Group("translation", f"{writer}.bias:key", (part,), len(rows)))
    return out
