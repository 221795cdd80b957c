"""The model's torch.fx graph, or a one-line error naming the layer that cannot be traced."""

from __future__ import annotations

from torch import fx, nn

from nmech.errors import NmechError


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _culprit(model: nn.Module) -> tuple[str, nn.Module, BaseException] | None:
    """The deepest submodule whose own trace fails (modules in pre-order: a parent first)."""
    found: tuple[str, nn.Module, BaseException] | None = None
    for name, sub in model.named_modules():
        if not name or (found is not None and not name.startswith(found[0] + ".")):
            continue
        try:
            fx.symbolic_trace(sub)
        except Exception as exc:  # fx raises many types for untraceable code
            found = (name, sub, exc)
    return found


def trace(model: nn.Module) -> fx.GraphModule:
    """``torch.fx.symbolic_trace(model)``; when it fails, the error names the innermost layer
    whose forward cannot be traced and the operation fx refused."""
    if not isinstance(model, nn.Module):
        raise NmechError(f"expected an nn.Module, got {type(model).__name__}")
    try:
        return fx.symbolic_trace(model)
    except Exception as exc:
        culprit = _culprit(model)
        if culprit is None:
            where = f"in {type(model).__name__}.forward"
            reason = _first_line(exc)
        else:
            name, sub, inner = culprit
            where = f"layer '{name}' ({type(sub).__name__})"
            reason = _first_line(inner)
        raise NmechError(
            f"cannot trace {type(model).__name__} with torch.fx: {where}: {reason}"
        ) from exc
