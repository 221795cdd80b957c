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
import sympy as sp
from scipy import signal as sps

from nmech.derive.dynamics import SymmetryDynamics
from nmech.derive.symbols import HYPERPARAMETERS
from nmech.errors import NmechError


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


def _signal_matrix(
    names: tuple[str, ...], signals: Mapping[str, np.ndarray], steps: int, blocks: int
) -> np.ndarray:
    """[N, blocks, len(names)] float64, validated."""
    out = np.empty((steps, blocks, len(names)))
    for i, name in enumerate(names):
        if name not in signals:
            raise NmechError(f"signal '{name}' is needed but was not given")
        arr = np.asarray(signals[name], dtype=np.float64)
        if arr.shape != (steps, blocks):
            raise NmechError(f"signal '{name}' has shape {arr.shape}, expected ({steps}, {blocks})")
        if not np.all(np.isfinite(arr)):
            bad = np.argwhere(~np.isfinite(arr))[0]
            raise NmechError(f"signal '{name}' is not finite at step {bad[0]}, block {bad[1]}")
        out[:, :, i] = arr
    return out


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
    sig = _signal_matrix(rec.signals, signals, steps, blocks)
    out = np.empty((steps + 1, blocks))
    out[0] = q0
    if steps == 0:
        return out
    f = lambda m: np.array(m.tolist(), dtype=np.float64).reshape(m.shape)  # noqa: E731
    A, B, a1, B1 = f(rec.A), f(rec.B), f(rec.a1), f(rec.B1)
    h1 = (
        a1[:, 0][:, None] * q0[None, :] + np.einsum("hs,bs->hb", B1, sig[0]) if B1.size else a1 * q0
    )
    h1 = np.broadcast_to(h1, (A.shape[0], blocks))
    # state-space from n = 1: x_m = h_{m+1}; inputs: σ_{m+1}, plus h_1 injected at m = -1
    dim = A.shape[0]
    C = np.eye(1, dim)
    # filters run along the last (contiguous) axis: [blocks, time]
    total = np.zeros((blocks, steps + 1))  # index m+1 = -1..steps-1 -> Q_{m+1}
    for i in range(dim):
        num, den = sps.ss2tf(A, np.eye(dim)[:, [i]], C, np.zeros((1, 1)))
        x = np.zeros((blocks, steps + 1))
        x[:, 0] = h1[i]
        total += sps.lfilter(num[0], den, x, axis=-1)
    for j in range(len(rec.signals)):
        num, den = sps.ss2tf(A, B[:, [j]], C, np.zeros((1, 1)))
        x = np.zeros((blocks, steps + 1))
        x[:, 1:steps] = sig[1:steps, :, j].T
        total += sps.lfilter(num[0], den, x, axis=-1)
    out[1:] = total[:, 1:].T
    return out


def _continuous(
    dyn: SymmetryDynamics,
    q0: np.ndarray,
    signals: Mapping[str, np.ndarray],
    values: dict[str, float],
    steps: int,
) -> np.ndarray:
    c = dyn.continuous
    subs = {HYPERPARAMETERS[k]: v for k, v in values.items() if k in HYPERPARAMETERS}
    num = lambda e: float(sp.sympify(e).xreplace(subs))  # noqa: E731
    eta = values["eta"]
    blocks = q0.shape[0]
    sig = _signal_matrix(c.signals, signals, steps, blocks)
    forcing = sum(
        (num(w) * sig[:, :, i] for i, w in enumerate(c.forcing.values())), np.zeros((steps, blocks))
    )
    if c.ode_order == 1:
        rho = np.exp(-num(c.rate) * eta)
        a, kb, gb = [1.0, -rho], [1.0], [0.0, rho]
    else:
        gam, w2 = num(c.gamma), num(c.omega2)
        disc = gam * gam - w2
        if disc > 1e-12 * max(gam * gam, 1e-300):
            d = np.sqrt(disc)
            r1, r2 = -gam + d, -gam - d
            K1 = (r1 * np.exp(r2 * eta) - r2 * np.exp(r1 * eta)) / (r1 - r2)
            G1 = (np.exp(r1 * eta) - np.exp(r2 * eta)) / (r1 - r2)
            a1 = np.exp(r1 * eta) + np.exp(r2 * eta)
        elif disc < -1e-12 * max(gam * gam, 1e-300):
            om = np.sqrt(-disc)
            e = np.exp(-gam * eta)
            K1 = e * (np.cos(om * eta) + gam / om * np.sin(om * eta))
            G1 = e * np.sin(om * eta) / om
            a1 = 2 * e * np.cos(om * eta)
        else:
            e = np.exp(-gam * eta)
            K1, G1, a1 = (1 + gam * eta) * e, eta * e, 2 * e
        a2 = np.exp(-2 * gam * eta)
        a, kb, gb = [1.0, -a1, a2], [1.0, K1 - a1], [0.0, G1]
    impulse = np.zeros((blocks, steps + 1))
    impulse[:, 0] = q0
    drive = np.zeros((blocks, steps + 1))
    drive[:, :steps] = forcing.T
    out = sps.lfilter(kb, a, impulse, axis=-1) + eta * sps.lfilter(gb, a, drive, axis=-1)
    return np.ascontiguousarray(out.T)


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
