"""Paper-style figures (matplotlib, Agg backend, PNG).

* ``symmetries.png`` (after the paper's Figure 5): one panel per symmetry kind; measured Q of a
  spread of channels in colour, the exact-recursion prediction dashed black, the continuous
  (modified-flow) prediction dotted grey.
* ``per_parameter.png`` (after Figure 1): single weights of one channel wander with no law
  (left), while that channel's Q follows the predicted dynamics (right).
* ``equilibrium.png`` (after Kosson et al. 2024, Figure 1): per scale channel, the measured norm
  at the end of the run against the predicted equilibrium norm (left), and the angular update
  per step across channels against the predicted equilibrium angular update (right).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from nmech.validation.compare import KindComparison  # noqa: E402
from nmech.validation.equilibrium import EquilibriumCheck  # noqa: E402
from nmech.validation.records import Records  # noqa: E402

TITLES = {
    "scale": r"scale: $|\theta_A|^2$",
    "rescale": r"rescale: $|\theta_{A_1}|^2-|\theta_{A_2}|^2$",
    "translation": r"translation: $\langle 1_A,\theta\rangle$",
}
CHANNELS_PER_PANEL = 12


def pick_channels(comp: KindComparison, count: int = CHANNELS_PER_PANEL) -> np.ndarray:
    """Channels spread over all layers, preferring ones whose Q moves the most."""
    q = comp.measured.Q
    move = np.abs(q - q[0]).max(axis=0)
    groups = comp.measured.group_index
    picks = []
    for g in np.unique(groups):
        cols = np.flatnonzero(groups == g)
        picks.append(cols[np.argmax(move[cols])])
    picks = np.asarray(picks)
    if len(picks) > count:
        return picks[np.linspace(0, len(picks) - 1, count).round().astype(int)]
    rest = [c for c in np.argsort(-move) if c not in set(picks.tolist())]
    return np.concatenate([picks, np.asarray(rest[: count - len(picks)], dtype=int)])


def _plot_channels(ax: plt.Axes, comp: KindComparison, cols: np.ndarray) -> None:
    steps = np.arange(comp.measured.Q.shape[0])
    colours = plt.cm.viridis(np.linspace(0.0, 0.9, max(1, len(cols))))
    for colour, c in zip(colours, cols, strict=True):
        ax.plot(steps, comp.measured.Q[:, c], color=colour, lw=1.6, alpha=0.8)
    for form, style in (("continuous", dict(color="0.45", ls=":", lw=1.2)),
                        ("exact", dict(color="k", ls="--", lw=1.0))):  # fmt: skip
        res = comp.forms.get(form)
        if res is None or res.predicted is None:
            continue
        for i, c in enumerate(cols):
            ax.plot(
                steps, res.predicted[:, c], label=f"theory ({form})" if i == 0 else None, **style
            )
    ax.plot([], [], color=colours[0], label="measured (per channel)")
    ax.set_xlabel("step")
    ax.legend(fontsize=7, loc="best")


def symmetry_figure(comparisons: dict[str, tuple[str, KindComparison]], path: Path) -> Path:
    """One panel per kind: ``comparisons[kind] = (run label, comparison)``."""
    kinds = [k for k in ("scale", "rescale", "translation") if k in comparisons]
    fig, axes = plt.subplots(1, max(1, len(kinds)), figsize=(4.6 * max(1, len(kinds)), 3.8))
    axes = np.atleast_1d(axes)
    for ax, kind in zip(axes, kinds, strict=False):
        label, comp = comparisons[kind]
        _plot_channels(ax, comp, pick_channels(comp))
        ax.set_title(f"{TITLES[kind]}  ({label})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def per_parameter_figure(records: Records, comp: KindComparison, path: Path) -> Path | None:
    """Single weights (left) vs their channel's Q with theory (right); None without a trace."""
    block = records.trace_attrs.get("block")
    if records.trace is None or block not in comp.measured.block_names:
        return None
    col = comp.measured.block_names.index(block)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.2, 3.6))
    steps = np.arange(records.trace.shape[0])
    colours = plt.cm.tab10(np.arange(records.trace.shape[1]) % 10)
    for i in range(records.trace.shape[1]):
        left.plot(steps, records.trace[:, i] ** 2, color=colours[i], lw=1.0)
    left.set_title(f"per parameter: $\\theta_i^2$ of {block}", fontsize=9)
    left.set_xlabel("step")
    _plot_channels(right, comp, np.asarray([col]))
    right.set_title(f"per channel: Q of {block} ({comp.kind})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def equilibrium_figure(eq: EquilibriumCheck, label: str, path: Path) -> Path:
    """Measured vs predicted rotational equilibrium of the scale channels of one run."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.2, 3.8))
    norm = eq.norm[eq.tail].mean(axis=0)
    left.scatter(eq.norm_predicted, norm, s=6, alpha=0.6, label="channels (tail mean)")
    left.scatter(eq.norm_predicted, eq.norm[0], s=4, alpha=0.3, color="0.6", label="at step 0")
    lo = min(norm.min(), eq.norm_predicted.min(), eq.norm[0].min())
    hi = max(norm.max(), eq.norm_predicted.max(), eq.norm[0].max())
    left.plot([lo, hi], [lo, hi], "k--", lw=1.0, label="measured = predicted")
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel(r"predicted equilibrium $\|\theta\|$")
    left.set_ylabel(r"measured $\|\theta\|$")
    left.set_title(f"scale channels: norm ({label})", fontsize=9)
    left.legend(fontsize=7, loc="best")
    steps = np.arange(eq.angle.shape[0])
    lo_q, med, hi_q = np.percentile(eq.angle, [10, 50, 90], axis=1)
    right.fill_between(steps, lo_q, hi_q, alpha=0.3, label="channels, 10-90%")
    right.plot(steps, med, lw=1.2, label="median over channels")
    right.axhline(eq.angle_predicted, color="k", ls="--", lw=1.0, label="predicted equilibrium")
    right.set_xlabel("step")
    right.set_ylabel("angular update (rad)")
    right.set_title(f"scale channels: angular update ({label})", fontsize=9)
    right.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
