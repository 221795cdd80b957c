"""Predictions of a symmetry's observable from recorded per-step signals.

``form="exact"``: the exact discrete recursion h_{n+1} = A h_n + B σ_n, h_1 = a_1 Q_0 + B_1 σ_0,
Q_n = h_n[0], re-derived at the given parameter values and run as a linear filter
(scipy.signal.lfilter along the step axis, vectorised over blocks, float64).

``form="continuous"``: the paper's form, Q(t_n) = K(t_n) Q_0 + η Σ_{k<n} G(t_n − t_k) F_k with
the closed-form kernels sampled at t = nη. Sampled K and G satisfy the two-term recursion of
the ODE's characteristic roots ρ_± = e^{r_± η} (|ρ| < 1), so both sums are recursive filters too:
nothing is ever weighted by e^{+γτ}, and a million steps stay finite in every damping regime.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy import signal as sps

from nmech.derive.dynamics import SymmetryDynamics
from nmech.errors import NmechError

from .kernels import evaluate, numeric_kernels


def _check_parameters(values: Mapping[str, float]) -> None:
    eta, beta = values.get("eta"), values.get("beta", 0.0)
    if eta is None or not np.isfinite(eta) or eta <= 0:
        raise NmechError(f"learning rate eta must be a positive number, got {eta}")
    if not 0 <= beta < 1:
        raise NmechError(f"momentum beta must lie in [0, 1), got {beta}")
    if values.get("lam", 0.0) < 0:
        raise NmechError(f"weight decay lam must be >= 0, got {values['lam']}")
    if not 0 <= values.get("tau", 0.0) <= 1:
        raise NmechError(f"dampening tau must lie in [0, 1], got {values['tau']}")


def _signals(
    names: tuple[str, ...], signals: Mapping[str, np.ndarray], steps: int, blocks: int
) -> list[np.ndarray]:
    """The named signals as float64 [N, blocks] arrays, validated (no copy when possible)."""
    out = []
    for name in names:
        if name not in signals:
            raise NmechError(f"signal '{name}' is needed but was not given")
        arr = np.asarray(signals[name], dtype=np.float64)
        if arr.shape != (steps, blocks):
            raise NmechError(f"signal '{name}' has shape {arr.shape}, expected ({steps}, {blocks})")
        if not np.isfinite(arr).all():
            bad = np.argwhere(~np.isfinite(arr))[0]
            raise NmechError(f"signal '{name}' is not finite at step {bad[0]}, block {bad[1]}")
        out.append(arr)
    return out


def _all_pole(den: np.ndarray, drive: np.ndarray) -> np.ndarray:
    """y with Σ_k den[k] y[n−k] = drive[n] along axis 0 of drive [time, blocks] (den[0] = 1).

    Many blocks: a time loop vectorised over blocks, in place (no transposition of the
    [time, blocks] signals). Few blocks and many steps: scipy's lfilter along the time axis of
    the (small) transposed array.
    """
    den = np.asarray(den, dtype=np.float64) / den[0]
    steps, blocks = drive.shape
    if steps > 64 * blocks:
        return sps.lfilter([1.0], den, np.ascontiguousarray(drive.T), axis=-1).T
    y = drive  # filtered in place
    tmp = np.empty(blocks)
    for n in range(1, steps):
        for k in range(1, min(len(den), n + 1)):
            np.multiply(den[k], y[n - k], out=tmp)
            y[n] -= tmp
    return y


def _shape(q0: np.ndarray, signals: Mapping[str, np.ndarray], steps: int | None) -> tuple[int, int]:
    if q0.ndim != 1:
        raise NmechError(f"q0 must be one value per block, got shape {q0.shape}")
    if not np.all(np.isfinite(q0)):
        raise NmechError("q0 is not finite")
    lengths = {np.shape(v)[0] for v in signals.values() if np.ndim(v) >= 1}
    if steps is None:
        if len(lengths) != 1:
            raise NmechError("give steps=N, or signal arrays of one common length N")
        steps = lengths.pop()
    if steps < 0:
        raise NmechError(f"steps must be >= 0, got {steps}")
    return int(steps), q0.shape[0]


def _exact(
    dyn: SymmetryDynamics,
    q0: np.ndarray,
    signals: Mapping[str, np.ndarray],
    values: dict[str, float],
    steps: int,
) -> np.ndarray:
    rec = dyn.recursion_at(values)
    blocks = q0.shape[0]
    sig = _signals(rec.signals, signals, steps, blocks)
    out = np.empty((steps + 1, blocks))
    out[0] = q0
    if steps == 0:
        return out
    f = lambda m: np.array(m.tolist(), dtype=np.float64).reshape(m.shape)  # noqa: E731
    A, B, a1, B1 = f(rec.A), f(rec.B), f(rec.a1), f(rec.B1)
    dim = A.shape[0]
    h1 = a1[:, :1] * q0[None, :] + sum((B1[:, [j]] * s[0][None, :] for j, s in enumerate(sig)), 0)
    # x_m = h_{m+1} (m >= 0) obeys x_{m+1} = A x_m + B σ_{m+1}; all inputs share den(z) = det(zI − A),
    # so Q_{m+1} = C x_m is one all-pole filter of Σ_inputs num_input(z)·input: h_1 enters as an
    # impulse at m = −1. Layout [time, blocks], as recorded.
    C = np.eye(1, dim)
    drive = np.zeros((steps + 1, blocks))
    den = None
    for i in range(dim):
        num, den = sps.ss2tf(A, np.eye(dim)[:, [i]], C, np.zeros((1, 1)))
        for k, c in enumerate(num[0]):
            if c != 0 and k <= steps:
                drive[k] += c * h1[i]
    for j, s in enumerate(sig):
        num, _ = sps.ss2tf(A, B[:, [j]], C, np.zeros((1, 1)))
        for k, c in enumerate(num[0]):
            if c != 0 and k + 1 <= steps:  # σ_{m+1} sits at index m+1 (m = −1 .. steps−1)
                drive[k + 1 : steps + 1] += c * s[1 : steps + 1 - k]
    out[1:] = _all_pole(den, drive)[1:]
    return out


def _continuous(
    dyn: SymmetryDynamics,
    q0: np.ndarray,
    signals: Mapping[str, np.ndarray],
    values: dict[str, float],
    steps: int,
) -> np.ndarray:
    c = dyn.continuous
    eta = values["eta"]
    blocks = q0.shape[0]
    sig = _signals(c.signals, signals, steps, blocks)
    kern = numeric_kernels(c, values)
    K1, G1 = float(kern.K(eta)), float(kern.G(eta))
    if c.ode_order == 1:  # sampled kernels ρ^n, ρ = e^{−aη}; Riemann sum excludes s = t
        a, kb, gb = [1.0, -G1], [1.0], [0.0, G1]
    else:  # sampled kernels obey x_{n+2} = a1 x_{n+1} − a2 x_n, a2 = e^{−2Γη}, a1 = G(2η)/G(η)
        a1, a2 = float(kern.G(2 * eta)) / G1, np.exp(-2 * kern.decay * eta)
        a, kb, gb = [1.0, -a1, a2], [1.0, K1 - a1], [0.0, G1]
    # K and G share the denominator a: one all-pole pass over the FIR-combined drive
    drive = np.zeros((steps + 1, blocks))
    for k, coeff in enumerate(kb):
        if k <= steps:
            drive[k] += coeff * q0
    for w, s in zip(c.forcing.values(), sig):
        for k, g in enumerate(gb):
            if g != 0 and k <= steps:
                drive[k:] += (eta * evaluate(w, values) * g) * s[: steps + 1 - k]
    return _all_pole(np.asarray(a), drive)


def predict(
    dynamics: SymmetryDynamics,
    q0: np.ndarray,
    signals: Mapping[str, np.ndarray] | None = None,
    eta: float | None = None,
    beta: float = 0.0,
    lam: float = 0.0,
    tau: float = 0.0,
    form: str = "exact",
    steps: int | None = None,
) -> np.ndarray:
    """Q_0..Q_N per block, float64 [N+1, blocks]. ``signals``: name -> [N, blocks] arrays (extra
    names ignored); ``steps=N`` when the dynamics needs no signal."""
    values = {"eta": eta, "beta": beta, "lam": lam, "tau": tau}
    _check_parameters(values)
    values = {k: float(v) for k, v in values.items()}
    needed = {str(s) for s in dynamics.rule.parameters()}
    values = {k: v for k, v in values.items() if k in needed or k == "eta"}
    q0 = np.atleast_1d(np.asarray(q0, dtype=np.float64))
    signals = dict(signals or {})
    n, _ = _shape(q0, signals, steps)
    if form == "exact":
        return _exact(dynamics, q0, signals, values, n)
    if form == "continuous":
        return _continuous(
            dynamics, q0, signals, {**{"beta": beta, "lam": lam, "tau": tau}, **values}, n
        )
    raise NmechError(f"form must be 'exact' or 'continuous', got '{form}'")
