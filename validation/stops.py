"""Why a run stops early: divergence (non-finite values) and interruption (signals, budget).

Divergence is found without a host sync per step: the recorder keeps each step's loss and
signals in device buffers and copies them to the host once per flush anyway, so
:func:`first_nonfinite` scans those host rows there. A run that diverges therefore trains up
to ``flush_every - 1`` steps past the bad one, and the records are cut back to the last step
whose values were all finite.

Interruption: inside :class:`StopRequest`, SIGINT and SIGTERM only set a flag that the training
loop reads between steps (a plain attribute read, no sync); the loop then raises
:class:`Interrupted` and the caller flushes the records and writes a checkpoint. A second
SIGINT raises KeyboardInterrupt at once.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Mapping
from types import FrameType, TracebackType

import numpy as np

from nmech.errors import NmechError

HINT = "try a smaller learning rate (--lr)"


class Diverged(NmechError):
    """A loss, gradient or recorded value became non-finite; the message is one line."""


class Interrupted(Exception):
    """The run was asked to stop (a signal, or a step budget) after ``step`` steps."""

    def __init__(self, step: int, signum: int | None) -> None:
        self.step = step
        self.signum = signum
        why = f"by {signal.Signals(signum).name}" if signum else "as asked (--stop-after)"
        super().__init__(f"stopped {why} after step {step}")

    @property
    def exit_code(self) -> int:
        """128 + the signal number (130 SIGINT, 143 SIGTERM); 0 for a step budget."""
        return 128 + self.signum if self.signum else 0


class StopRequest:
    """Context manager turning SIGINT/SIGTERM into a flag; ``stop_after`` adds a step budget."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, stop_after: int | None = None) -> None:
        self.stop_after = stop_after
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def due(self, step: int) -> bool:
        """True when the loop should stop before running step ``step``."""
        return self.signum is not None or (self.stop_after is not None and step >= self.stop_after)


def first_nonfinite(rows: Mapping[str, np.ndarray]) -> int | None:
    """The first row index at which any array of ``rows`` holds a NaN or an infinity."""
    bad = [
        int(np.argmax(~ok))
        for a in rows.values()
        if not (ok := np.isfinite(a).reshape(len(a), -1).all(1)).all()
    ]
    return min(bad) if bad else None


def describe(row: Mapping[str, np.ndarray], names: Mapping[str, list[str]]) -> str:
    """What went non-finite in one row: the loss, and the block whose gradient did first.

    ``row`` maps dataset names to that row's values; ``names`` maps a kind to block names.
    """
    parts = []
    loss = row.get("train/loss")
    if loss is not None and not np.isfinite(loss).all():
        parts.append(f"loss is {float(loss.reshape(-1)[0])}")
    grads = [
        (key.split("/")[0], np.flatnonzero(~np.isfinite(v)), v.size)
        for key, v in row.items()
        if key.endswith("/grad_sq")
    ]
    bad = [names[kind][i] for kind, idx, _ in grads for i in idx]
    total = sum(size for _, _, size in grads)
    if bad and len(bad) == total:
        parts.append(f"every recorded gradient is non-finite (first block {bad[0]})")
    elif bad:
        parts.append(f"gradient first non-finite in block {bad[0]} ({len(bad)} of {total})")
    if not parts:
        key = next(k for k, v in row.items() if not np.isfinite(v).all())
        parts.append(f"{key} is non-finite")
    return "; ".join(parts)
