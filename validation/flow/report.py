"""``nmech flow``'s output folder: flow.json, flow.md and the figures (PNG and PDF).

flow.json (schema ``nmech.flow/1``)::

    {"schema", "rule", "orders": [0..P], "etas": [..],
     "errors": {p: {eta: max_{n >= N} |theta_n - theta~(n eta)|}},
     "slopes": {p: fitted log-log slope}, "expected_slopes": {p: p + 1},
     "burn_in": {p: {eta: N}}, "verdict": {p: |slope - (p+1)| <= 0.3},
     "modified_loss": null | {"errors", "burn_in", "slope"} (gradient flow of L~ through eta),
     "start", "start_note", "shadow_start_offset": {eta: |theta~(0) - theta_0|},
     "largest_curvature", "seconds", "settings": {...}}

(η keys are the floats' repr). Figures: ``trajectory_error`` (‖θ_n − θ̃(nη)‖ against the step n,
one panel per order, one line per η, the burn-in shaded) and ``slopes`` (log error against
log η per order with the fitted slopes, and the modified-loss route).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from nmech.validation.figure_files import save_png_pdf  # noqa: E402
from nmech.validation.flow.run import FlowResult, summary  # noqa: E402

SCHEMA = "nmech.flow/1"
TOLERANCE = 0.3
FIGURES = ("trajectory_error", "slopes")


def document(result: FlowResult, settings: dict[str, Any]) -> dict[str, Any]:
    """flow.json's document (schema in the module docstring), verdicts at ±0.3."""
    doc = {"schema": SCHEMA, **summary(result), "settings": settings}
    doc["verdict"] = {
        p: slope is not None and abs(slope - (int(p) + 1)) <= TOLERANCE
        for p, slope in doc["slopes"].items()
    }
    if doc["modified_loss"] is not None:
        slope = doc["modified_loss"]["slope"]
        doc["modified_loss"]["verdict"] = slope is not None and abs(slope - 2) <= TOLERANCE
    return doc


PARTIAL = "flow.partial.json"
#: What a flow run's folder holds (finished or not): never overwritten without --overwrite.
FLOW_FILES: tuple[str, ...] = ("flow.json", "flow.md", PARTIAL,
                               *(f"figures/{name}.*" for name in FIGURES))  # fmt: skip


def write_partial(result: FlowResult, settings: dict[str, Any], out: Path) -> None:
    """``flow.partial.json``: the η finished so far (a killed run keeps them; the finished
    run's flow.json replaces it)."""
    out.mkdir(parents=True, exist_ok=True)
    doc = document(result, settings)
    doc["finished_etas"] = [e for e in doc["etas"] if repr(e) in doc["errors"]["0"]]
    write_atomic(out / PARTIAL, json.dumps(doc, indent=2))


def write_atomic(path: Path, text: str) -> None:
    """Write then rename: a reader (or a crash) never sees half a file."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)


def markdown(doc: dict[str, Any]) -> str:
    """flow.md: the errors and slopes table, the start and burn-in, the curvature."""
    etas = doc["etas"]
    lines = [
        f"# nmech flow: {doc['rule']} on {doc['settings']['model']} / {doc['settings']['data']}",
        "",
        f"Full-batch iterates of `{doc['rule']}` (float64) against the order-p modified flow, "
        f"T = {doc['settings']['horizon']}, start `{doc['start']}`: {doc['start_note']}.",
        "",
        "| order p | " + " | ".join(f"η = {e:g}" for e in etas) + " | slope | expected | ok |",
        "|---|" + "---|" * (len(etas) + 3),
    ]
    for p in doc["orders"]:
        errors = doc["errors"][str(p)]
        cells = " | ".join(f"{errors[repr(e)]:.3e}" for e in etas)
        ok = "yes" if doc["verdict"][str(p)] else "**no**"
        lines.append(f"| {p} | {cells} | {doc['slopes'][str(p)]:.2f} | {p + 1} | {ok} |")
    if doc["modified_loss"] is not None:
        m = doc["modified_loss"]
        cells = " | ".join(f"{m['errors'][repr(e)]:.3e}" for e in etas)
        ok = "yes" if m["verdict"] else "**no**"
        lines.append(f"| L̃ (order 1) | {cells} | {m['slope']:.2f} | 2 | {ok} |")
        lines += [
            "",
            "The last row is the gradient flow θ̃' = −s∇L̃ of the modified loss through η "
            "(for GD, L̃ = L + (η/4)‖∇L‖²), ∇L̃ by autograd.",
        ]
    burn = doc["burn_in"][str(doc["orders"][-1])]
    lines += [
        "",
        "Errors: max over the compared steps n ≥ N of ‖θ_n − θ̃(nη)‖₂ over all parameters; "
        "N (burn-in) at the highest order: " + ", ".join(f"η={e:g}: {burn[repr(e)]}" for e in etas),
        "",
        f"λ_max(∇²L(θ₀)) = {doc['largest_curvature']:.4g}; wall time {doc['seconds']:.1f} s.",
        "",
        "Figures: `figures/trajectory_error.png`, `figures/slopes.png` (and PDF).",
    ]
    return "\n".join(lines) + "\n"


def figures(result: FlowResult, doc: dict[str, Any], folder: Path) -> list[Path]:
    """The two figures of the module docstring, PNG and PDF, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    orders = result.orders
    fig, axes = plt.subplots(1, len(orders), figsize=(3.6 * len(orders), 3.4), squeeze=False)
    colours = plt.cm.viridis(np.linspace(0, 0.85, len(doc["etas"])))
    for ax, (p, r) in zip(axes[0], orders.items()):
        for colour, eta in zip(colours, doc["etas"]):
            curve = r.curves[eta]
            first = r.burn_in[eta]
            steps = np.arange(first, first + len(curve))
            shown = np.where(curve > 0, curve, np.nan)  # the exact match at the start
            ax.semilogy(steps, shown, color=colour, label=f"η = {eta:g}")
            if first > 0:
                ax.axvspan(0, first, color=colour, alpha=0.08)
        ax.set_title(f"order p = {p}")
        ax.set_xlabel("step n")
        ax.set_ylabel("‖θ_n − θ̃(nη)‖")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(
        f"{doc['rule']}: iterates vs order-p modified flow (T = {doc['settings']['horizon']})"
    )
    fig.tight_layout()
    written += save_png_pdf(fig, folder / "trajectory_error")
    fig, ax = plt.subplots(figsize=(5.2, 4.2))
    etas = np.array(doc["etas"])
    routes = [(f"p = {p}", r, p + 1) for p, r in orders.items()]
    if result.modified_loss is not None:
        routes.append(("L̃ gradient flow", result.modified_loss, 2))
    for (label, r, expected), marker in zip(routes, "osd^vP*"):
        errors = np.array([r.errors[e] for e in doc["etas"]])
        fit = np.polyfit(np.log(etas), np.log(errors), 1)
        line = ax.loglog(etas, errors, marker, label=f"{label}: slope {fit[0]:.2f} ({expected})")[0]
        ax.loglog(etas, np.exp(np.polyval(fit, np.log(etas))), "-", color=line.get_color(), lw=1)
    ax.set_xlabel("learning rate η")
    ax.set_ylabel("max error ‖θ_n − θ̃(nη)‖")
    ax.set_title(f"{doc['rule']}: error against η (expected slope in brackets)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    written += save_png_pdf(fig, folder / "slopes")
    return written


def write(result: FlowResult, settings: dict[str, Any], out: Path) -> dict[str, Any]:
    """flow.json, flow.md and figures/ in ``out``; returns the JSON document."""
    doc = document(result, settings)
    figures(result, doc, out / "figures")
    write_atomic(out / "flow.md", markdown(doc))
    write_atomic(out / "flow.json", json.dumps(doc, indent=2))
    (out / PARTIAL).unlink(missing_ok=True)
    return doc
