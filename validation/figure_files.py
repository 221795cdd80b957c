"""Saving a matplotlib figure as PNG and PDF side by side (the figure is closed after)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def save_png_pdf(fig, stem: Path, dpi: int = 130) -> list[Path]:
    """``stem``.png and ``stem``.pdf; returns both paths."""
    out = []
    for ext in ("png", "pdf"):
        path = stem.with_suffix(f".{ext}")
        fig.savefig(path, dpi=dpi)
        out.append(path)
    plt.close(fig)
    return out
