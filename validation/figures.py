"""The report's figures (matplotlib, Agg backend), each saved as PNG and, beside it, PDF.

* ``symmetries`` (after the paper's Figure 5): one column per symmetry kind. Top: Q against
  the step for a spread of channels: measured as solid lines (one colour per channel), the
  exact-recursion prediction as black dashes over them, the continuous (modified-flow)
  prediction as dotted lines in the channel's colour. Bottom: the residual
  |pred − meas| / D_c (the error normalisation of :mod:`nmech.validation.compare`) on a log
  axis, the envelope over all channels of the kind, one line per form.
* ``per_parameter`` (after Figure 1): single weights of one channel wander with no law
  (left), while that channel's Q follows the predicted dynamics (right, with its residual).
* ``equilibrium`` (after Kosson et al. 2024, Figure 1): per scale channel, the measured norm
  over the last quarter of the run against the predicted equilibrium norm (left), and the
  angular update per step across channels against the predicted equilibrium (right); a note
  on the figure when the run is shorter than a few relaxation times.

Axes carry units: Q in [θ]² for quadratic kinds and [θ] for linear ones ([θ] the unit of the
parameters), steps as counts, angles in radians per step.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import ticker  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from nmech.validation.compare import FLOOR, KindComparison  # noqa: E402
from nmech.validation.equilibrium import EquilibriumCheck  # noqa: E402
from nmech.validation.kinds import KINDS, ordered  # noqa: E402
from nmech.validation.records import Records  # noqa: E402

CHANNELS_PER_PANEL = 12
#: The report's figures (file stems) and the formats each is saved in.
FIGURE_NAMES: tuple[str, ...] = ("symmetries", "per_parameter", "equilibrium")
FIGURE_FORMATS: tuple[str, ...] = ("png", "pdf")
EXACT = dict(color="k", ls=(0, (4, 3)), lw=1.0)
CONTINUOUS = dict(ls=":", lw=1.8)
RESIDUAL_STYLE = {"exact": dict(color="k", ls="-", lw=1.2),
                  "continuous": dict(color="tab:red", ls=":", lw=1.8)}  # fmt: skip


def _save(fig: plt.Figure, path: Path) -> Path:
    """Save ``fig`` as ``path`` (PNG) and as the PDF beside it; returns the PNG path."""
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    fig.savefig(path.with_suffix(".pdf"))
    plt.close(fig)
    return path


def _unit(kind: str) -> str:
    return KINDS[kind].unit if kind in KINDS else "[θ]"


def _title(kind: str) -> str:
    return KINDS[kind].title if kind in KINDS else kind


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


def _denominator(comp: KindComparison) -> np.ndarray:
    """D_c of the error normalisation, per channel."""
    q, mag = comp.measured.Q, comp.measured.Q_abs
    d = np.maximum(np.abs(q).max(axis=0), FLOOR * np.abs(mag).max(axis=0))
    return np.maximum(d, np.finfo(np.float64).tiny)


def _plot_channels(ax: plt.Axes, comp: KindComparison, cols: np.ndarray) -> None:
    """Measured Q (solid, one colour per channel) and the two forms' predictions."""
    steps = np.arange(comp.measured.Q.shape[0])
    colours = plt.cm.viridis(np.linspace(0.0, 0.85, max(1, len(cols))))
    for colour, c in zip(colours, cols, strict=True):
        ax.plot(steps, comp.measured.Q[:, c], color=colour, lw=2.2, alpha=0.55)
        cont = comp.forms.get("continuous")
        if cont is not None and cont.predicted is not None:
            ax.plot(steps, cont.predicted[:, c], color=colour, **CONTINUOUS)
        exact = comp.forms.get("exact")
        if exact is not None and exact.predicted is not None:
            ax.plot(steps, exact.predicted[:, c], **EXACT)
    handles = [
        Line2D([], [], color=colours[0], lw=2.2, alpha=0.55, label="measured (colour = channel)"),
        Line2D([], [], label="exact recursion", **EXACT),
        Line2D([], [], color=colours[0], label="continuous (modified flow)", **CONTINUOUS),
    ]
    ax.legend(handles=handles, fontsize=7, loc="best")
    ax.set_xlabel("step n")
    ax.set_ylabel(f"Q  ({_unit(comp.kind)})")


def _plot_residuals(ax: plt.Axes, comp: KindComparison, cols: np.ndarray | None = None) -> None:
    """|pred − meas| / D_c on a log axis: the envelope over channels (or over ``cols``)."""
    steps = np.arange(comp.measured.Q.shape[0])
    denom = _denominator(comp)
    shown = slice(None) if cols is None else cols
    for form, style in RESIDUAL_STYLE.items():
        res = comp.forms.get(form)
        if res is None or res.predicted is None:
            continue
        rel = np.abs(res.predicted - comp.measured.Q)[1:, shown] / denom[shown]
        envelope = np.maximum(rel.max(axis=1), 1e-17)  # step 0 is Q_0 itself: left out
        ax.plot(steps[1:], envelope, label=form, **style)
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(ticker.LogLocator(numticks=6))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel("step n")
    ax.set_ylabel("|pred − meas| / max|Q|  (relative)")
    ax.legend(fontsize=7, loc="best", title="max over channels" if cols is None else None,
              title_fontsize=7)  # fmt: skip


def symmetry_figure(comparisons: dict[str, tuple[str, KindComparison]], path: Path) -> Path:
    """One column per kind (``comparisons[kind] = (run label, comparison)``): Q over steps and
    the residuals of both forms."""
    kinds = ordered(comparisons)
    n = max(1, len(kinds))
    fig, axes = plt.subplots(2, n, figsize=(4.8 * n, 6.4), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 2]})  # fmt: skip
    for i, kind in enumerate(kinds):
        label, comp = comparisons[kind]
        _plot_channels(axes[0, i], comp, pick_channels(comp))
        axes[0, i].set_title(f"{_title(kind)}  ({label})", fontsize=9)
        _plot_residuals(axes[1, i], comp)
    return _save(fig, path)


def per_parameter_figure(records: Records, comp: KindComparison, path: Path) -> Path | None:
    """Single weights (left) vs their channel's Q with theory and residual (right); None
    without a trace."""
    block = records.trace_attrs.get("block")
    if records.trace is None or block not in comp.measured.block_names:
        return None
    col = comp.measured.block_names.index(block)
    fig, axes = plt.subplots(2, 2, figsize=(9.6, 6.0), gridspec_kw={"height_ratios": [3, 2]})
    steps = np.arange(records.trace.shape[0])
    colours = plt.cm.tab10(np.arange(records.trace.shape[1]) % 10)
    for i in range(records.trace.shape[1]):
        axes[0, 0].plot(steps, records.trace[:, i] ** 2, color=colours[i], lw=1.0)
    axes[0, 0].set_title(f"per parameter: $\\theta_i^2$ of {block}", fontsize=9)
    axes[0, 0].set_xlabel("step n")
    axes[0, 0].set_ylabel("θ_i²  ([θ]²)")
    axes[1, 0].axis("off")
    _plot_channels(axes[0, 1], comp, np.asarray([col]))
    axes[0, 1].set_title(f"per channel: Q of {block} ({comp.kind})", fontsize=9)
    _plot_residuals(axes[1, 1], comp, np.asarray([col]))
    return _save(fig, path)


def _log_or_linear(ax: plt.Axes, values: np.ndarray, axis: str) -> None:
    """A log axis labelled at 1, 2, 5 x 10^k (at 10^k only beyond 2.5 decades) in plain
    numbers, minor ticks unlabelled (they overlapped), or a linear axis when the values span
    less than a factor 10."""
    v = values[np.isfinite(values) & (values > 0)]
    if v.size == 0 or v.max() / v.min() < 10:
        return
    getattr(ax, f"set_{axis}scale")("log")
    target = getattr(ax, f"{axis}axis")
    subs = (1.0, 2.0, 5.0) if np.log10(v.max() / v.min()) <= 2.5 else (1.0,)
    target.set_major_locator(ticker.LogLocator(subs=subs, numticks=12))
    target.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{x:g}"))
    target.set_minor_formatter(ticker.NullFormatter())


def equilibrium_figure(
    eq: EquilibriumCheck, label: str, path: Path, too_short: bool = False
) -> Path:
    """Measured vs predicted rotational equilibrium of the scale channels of one run."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.6, 4.0))
    norm = eq.norm[eq.tail].mean(axis=0)
    left.scatter(eq.norm_predicted, norm, s=7, alpha=0.7, color="tab:blue",
                 label="channels, mean over the last quarter")  # fmt: skip
    left.scatter(eq.norm_predicted, eq.norm[0], s=5, alpha=0.35, color="0.55", label="at step 0")
    both = np.concatenate([norm, eq.norm_predicted, eq.norm[0]])
    lo, hi = both[both > 0].min(), both.max()
    left.plot([lo, hi], [lo, hi], "k--", lw=1.0, label="measured = predicted")
    _log_or_linear(left, both, "x")
    _log_or_linear(left, both, "y")
    left.set_xlabel("predicted equilibrium ‖θ‖  ([θ])")
    left.set_ylabel("measured ‖θ‖  ([θ])")
    left.set_title(f"scale channels: norm ({label})", fontsize=9)
    left.legend(fontsize=7, loc="best")
    steps = np.arange(eq.angle.shape[0])
    lo_q, med, hi_q = np.percentile(eq.angle, [10, 50, 90], axis=1)
    right.fill_between(steps, lo_q, hi_q, alpha=0.3, color="tab:blue", label="channels, 10-90%")
    right.plot(steps, med, lw=1.2, color="tab:blue", label="median over channels")
    right.axhline(eq.angle_predicted, color="k", ls="--", lw=1.0, label="predicted equilibrium")
    right.set_xlabel("step n")
    right.set_ylabel("angular update  (rad / step)")
    right.set_title(f"scale channels: angular update ({label})", fontsize=9)
    right.legend(fontsize=7, loc="best")
    if too_short:
        fig.text(0.5, 0.01, "run shorter than 3 relaxation times 1/(ηλ): equilibrium not reached",
                 ha="center", fontsize=8, color="tab:red")  # fmt: skip
    return _save(fig, path)
