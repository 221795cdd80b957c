"""Predictions of the derived dynamics for every recorded block, and their errors.

For each kind (a registered one: :mod:`nmech.validation.kinds`) the derivation engine gives the
dynamics of Q under the run's optimizer (its derived rule, :mod:`nmech.validation.optimizers`;
adaptive rules and the fallback: the recursion driven by the recorded update u_n);
``nmech.numerics.predict`` evaluates them from Q_0 and the measured signals in two forms:
``exact`` (the discrete recursion, which should match to float32 round-off) and ``continuous``
(the paper's modified-flow solution).

Error of channel c in one form (pred, meas: [N+1] trajectories):

    err_c = max_n |pred_c(n) - meas_c(n)| / D_c,
    D_c   = max( max_n |meas_c(n)|,  FLOOR * max_n M_c(n) )

with M_c the block's magnitude (sum_A theta_i^2 for scale/rescale, sum_A |theta_i| for
translation). D_c is the channel's max |Q| except where Q stays below FLOOR = 1% of the
magnitude -- a rescale channel whose in- and out-norms nearly cancel, or the zero-initialised
bias sum -- whose Q float32 parameters resolve only to about 1e-7 * M_c. ``end`` is the same
quotient at the last step only.

A channel whose magnitude stays below NOISE = 1e-6 of the largest channel magnitude of its kind
in the file (a zero-initialised attention key bias: its gradient is identically zero, so it
holds only float32 round-off) carries no measurable Q: its error is kept per channel but left
out of ``max``, ``median`` and ``end``, and counted as ``at_noise_floor``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nmech.validation.kinds import kind as registered_kind
from nmech.validation.optimizers import Settings, settings_from_dict
from nmech.validation.records import KindRecords, Records, load_records

FORMS: tuple[str, ...] = ("exact", "continuous")
FLOOR = 1e-2
NOISE = 1e-6

#: predictor(kind, form, q0, signals, steps, settings) -> [N+1, blocks]
Predictor = Callable[[str, str, np.ndarray, dict[str, np.ndarray], int, Settings], np.ndarray]


class EnginePredictor:
    """Predictions from the derivation engine, deriving each kind's dynamics once per rule."""

    def __init__(self) -> None:
        self._dynamics: dict[tuple[str, Settings], Any] = {}

    def dynamics(self, kind: str, settings: Settings) -> Any:
        """``nmech.derive.symmetry.dynamics.derive(rule, symmetry)`` for the run's optimizer and
        the registered kind's symmetry."""
        key = (kind, settings)
        if key not in self._dynamics:
            from nmech.derive.symmetry import dynamics

            symmetry = registered_kind(kind).symmetry()
            self._dynamics[key] = dynamics.derive(settings.rule(), symmetry)
        return self._dynamics[key]

    def __call__(
        self,
        kind: str,
        form: str,
        q0: np.ndarray,
        signals: dict[str, np.ndarray],
        steps: int,
        settings: Settings,
    ) -> np.ndarray:
        from nmech.numerics import predict

        dyn = self.dynamics(kind, settings)
        pred = predict(dyn, q0, signals, values=settings.values(), steps=steps, form=form)
        return np.asarray(pred, dtype=np.float64)


@dataclass
class FormResult:
    """One form's prediction [N+1, blocks] and per-channel errors, or why it is missing;
    ``noise`` marks the channels at the noise floor (module docstring)."""

    predicted: np.ndarray | None
    errors: np.ndarray | None
    end_errors: np.ndarray | None
    floored: int = 0
    problem: str | None = None
    noise: np.ndarray | None = None

    def measurable(self) -> tuple[np.ndarray, np.ndarray]:
        """(errors, end errors) of the channels above the noise floor."""
        assert self.errors is not None and self.end_errors is not None
        keep = slice(None) if self.noise is None else ~self.noise
        return self.errors[keep], self.end_errors[keep]

    def summary(self) -> dict[str, Any]:
        """``{"max", "median", "end", "channels", "floored", "at_noise_floor"}`` (NaN and a
        reason if missing)."""
        nan = float("nan")
        if self.errors is None or self.end_errors is None or len(self.errors) == 0:
            return {"max": nan, "median": nan, "end": nan, "channels": 0, "problem": self.problem}
        errors, end = self.measurable()
        return {
            "max": float(np.max(errors)) if errors.size else nan,
            "median": float(np.median(errors)) if errors.size else nan,
            "end": float(np.max(end)) if end.size else nan,
            "channels": int(errors.size),
            "floored": self.floored,
            "at_noise_floor": int(len(self.errors) - errors.size),
        }


@dataclass
class KindComparison:
    """Measured Q of one kind and each form's prediction (``forms[form].predicted``,
    ``.errors`` per channel); :attr:`Q`, :attr:`predicted` and :attr:`errors` are the arrays."""

    kind: str
    measured: KindRecords
    forms: dict[str, FormResult] = field(default_factory=dict)

    @property
    def Q(self) -> np.ndarray:
        """Measured Q, float64 [N+1, blocks]."""
        return self.measured.Q

    @property
    def predicted(self) -> dict[str, np.ndarray | None]:
        """Form -> predicted Q [N+1, blocks] (None where the form is unavailable)."""
        return {form: res.predicted for form, res in self.forms.items()}

    @property
    def errors(self) -> dict[str, np.ndarray | None]:
        """Form -> per-channel error [blocks] (module docstring)."""
        return {form: res.errors for form, res in self.forms.items()}


def channel_errors(
    pred: np.ndarray, meas: np.ndarray, mag: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-channel max-over-steps and final-step errors (module docstring), and floored count."""
    peak = np.abs(meas).max(axis=0)
    floor = FLOOR * np.abs(mag).max(axis=0)
    denom = np.maximum(np.maximum(peak, floor), np.finfo(np.float64).tiny)
    diff = np.abs(pred - meas)
    return diff.max(axis=0) / denom, diff[-1] / denom, int(np.sum(floor > peak))


def noise_floor(mag: np.ndarray) -> np.ndarray:
    """Channels whose magnitude stays below NOISE of the kind's largest (module docstring)."""
    scale = np.abs(mag).max(axis=0) if mag.size else np.zeros(mag.shape[1:])
    return scale <= NOISE * (scale.max() if scale.size else 0.0)


def compare_file(path: str | Any, predictor: Predictor | None = None) -> dict[str, KindComparison]:
    """:func:`compare` of the records file at ``path`` (any records file, however written)."""
    return compare(load_records(path), predictor)


def compare(records: Records, predictor: Predictor | None = None) -> dict[str, KindComparison]:
    """Every form's prediction and errors for every kind in ``records``."""
    predictor = predictor or EnginePredictor()
    settings = settings_from_dict(records.optimizer)
    out: dict[str, KindComparison] = {}
    for kind, kr in records.kinds.items():
        comp = KindComparison(kind, kr)
        steps = kr.Q.shape[0] - 1
        for form in FORMS:
            try:
                pred = predictor(kind, form, kr.Q[0], kr.signals, steps, settings)
            except Exception as exc:  # report an engine failure per form, keep the others
                comp.forms[form] = FormResult(
                    None, None, None, problem=f"{type(exc).__name__}: {exc}"
                )
                continue
            if pred.shape != kr.Q.shape:
                problem = f"prediction shape {pred.shape} != measured {kr.Q.shape}"
                comp.forms[form] = FormResult(None, None, None, problem=problem)
                continue
            err, end, floored = channel_errors(pred, kr.Q, kr.Q_abs)
            comp.forms[form] = FormResult(pred, err, end, floored, noise=noise_floor(kr.Q_abs))
        out[kind] = comp
    return out
