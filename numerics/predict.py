"""Predictions of a symmetry's observable from recorded per-step signals.

``form="exact"``: the exact discrete recursion h_{n+1} = A h_n + B σ_n, h_1 = a_1 Q_0 + B_1 σ_0,
Q_n = h_n[0], derived at the given parameter values (exact rationals, rounded once: the plain data
of :meth:`SymmetryDynamics.exact_at`) and run as a linear filter
(scipy.signal.lfilter along the step axis, vectorised over blocks, float64).

``form="continuous"``: the paper's form, Q(t_n) = K(t_n) Q_0 + η Σ_{k<n} G(t_n − t_k) F_k with
the closed-form kernels sampled at t = nη. Sampled K and G satisfy the two-term recursion of
the ODE's characteristic roots ρ_± = e^{r_± η} (|ρ| < 1), so both sums are recursive filters too:
nothing is ever weighted by e^{+γτ}, and a million steps stay finite in every damping regime.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Mapping

import numpy as np
from scipy import signal as sps

from nmech.derive.symmetry.continuous import NumericContinuous
from nmech.derive.symmetry.dynamics import SymmetryDynamics
from nmech.derive.symmetry.recursion import NumericRecursion
from nmech.errors import NmechError
from nmech.numerics.kernels import numeric_kernels


def _float_array(what: str, raw: object) -> np.ndarray:
    """``raw`` as a float64 array, or a one-line error naming ``what`` (complex values, strings,
    ragged lists and objects are refused rather than cast)."""
    try:
        arr = np.asarray(raw)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"dtype {arr.dtype}")
        return np.asarray(arr, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise NmechError(f"{what} must be an array of real numbers ({exc})") from None


def _signals(
    names: tuple[str, ...], signals: Mapping[str, np.ndarray], steps: int, blocks: int
) -> list[np.ndarray]:
    """The named signals as float64 [N, blocks] arrays, validated (no copy when possible)."""
    out = []
    for name in names:
        if name not in signals:
            raise NmechError(f"signal '{name}' is needed but was not given")
        arr = _float_array(f"signal '{name}'", signals[name])
        if arr.shape != (steps, blocks):
            raise NmechError(f"signal '{name}' has shape {arr.shape}, expected ({steps}, {blocks})")
        if not np.isfinite(arr.sum()) and not np.isfinite(arr).all():  # one cheap pass first
            bad = np.argwhere(~np.isfinite(arr))[0]
            raise NmechError(f"signal '{name}' is not finite at step {bad[0]}, block {bad[1]}")
        out.append(arr)
    return out


Tap = tuple  # (signal [N, blocks], offset o, numerator b): input x[n] = signal[n − o]
Impulse = tuple  # (position n0, vector [blocks], numerator b): input v at n0 only


def _filter(den: np.ndarray, taps: list[Tap], impulses: list[Impulse], y: np.ndarray) -> None:
    """Fill y[0..N] ([N+1, blocks]) with Σ_k den[k] y[n−k] = Σ_inputs Σ_k b_k x[n−k] (den[0] = 1).

    Many blocks: one fused time loop vectorised over blocks, reading each signal row once in
    the recorded [time, blocks] layout and writing straight into y (no transposition, no
    full-size temporaries). Few blocks and many steps: the inputs are combined and passed to
    scipy's lfilter along time.
    """
    steps, blocks = y.shape[0] - 1, y.shape[1]
    den = np.asarray(den, dtype=np.float64) / den[0]
    extra = {}
    for n0, v, b in impulses:
        for k, bk in enumerate(b):
            if bk != 0 and n0 + k <= steps:
                extra[n0 + k] = extra.get(n0 + k, 0.0) + bk * np.asarray(v, dtype=np.float64)
    if steps > 64 * blocks:
        drive = np.zeros((blocks, steps + 1))
        for n, v in extra.items():
            drive[:, n] += v
        for sig, o, b in taps:
            for k, bk in enumerate(b):
                lo = o + k
                if bk != 0 and lo <= steps:
                    drive[:, lo:] += bk * sig[: steps + 1 - lo].T
        y[:] = sps.lfilter([1.0], den, drive, axis=-1).T
        return
    tmp = np.empty(blocks)
    terms = [(sig, o + k, bk) for sig, o, b in taps for k, bk in enumerate(b) if bk != 0]
    feedback = [(k, -ak) for k, ak in enumerate(den) if k > 0 and ak != 0]
    for n in range(steps + 1):
        row = y[n]
        row[:] = extra.get(n, 0.0)
        for sig, lag, bk in terms:
            if 0 <= n - lag < sig.shape[0]:
                np.multiply(sig[n - lag], bk, out=tmp)
                row += tmp
        for k, ak in feedback:
            if n >= k:
                np.multiply(y[n - k], ak, out=tmp)
                row += tmp


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
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral):
        raise NmechError(f"steps must be a whole number, got {steps!r}")
    if steps < 0:
        raise NmechError(f"steps must be >= 0, got {steps}")
    return int(steps), q0.shape[0]


def _physical_memory() -> int | None:
    """Bytes of RAM on this machine (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _output(out: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    if out is None:
        need, have = 8 * shape[0] * shape[1], _physical_memory()
        if have is not None and need > have:
            raise NmechError(
                f"the prediction needs {need / 2**30:.3g} GiB ({shape[0]} x {shape[1]} float64), "
                f"more than this machine's {have / 2**30:.3g} GiB"
            )
        return np.empty(shape)
    if not isinstance(out, np.ndarray) or out.dtype != np.float64 or out.shape != shape:
        got = getattr(out, "shape", type(out).__name__), getattr(out, "dtype", None)
        raise NmechError(f"out must be a float64 array of shape {shape}, got {got[0]} {got[1]}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise NmechError("out must be a writeable C-contiguous array")
    return out


def recursion_matrices(rec: NumericRecursion) -> tuple[np.ndarray, ...]:
    """(A, B, a1, B1) of an exact recursion at numbers as float64 arrays ([dim, dim],
    [dim, signals], [dim, 1], [dim, signals])."""
    dim = len(rec.A)
    A = np.array(rec.A, dtype=np.float64).reshape(dim, dim)
    B = np.array(rec.B, dtype=np.float64).reshape(dim, len(rec.signals))
    a1 = np.array(rec.a1, dtype=np.float64).reshape(dim, 1)
    B1 = np.array(rec.B1, dtype=np.float64).reshape(dim, len(rec.signals))
    return A, B, a1, B1


def _exact(
    rec: NumericRecursion, q0: np.ndarray, signals: Mapping[str, np.ndarray], out: np.ndarray
) -> None:
    steps, blocks = out.shape[0] - 1, out.shape[1]
    sig = _signals(rec.signals, signals, steps, blocks)
    if steps == 0:
        out[0] = q0
        return
    A, B, a1, B1 = recursion_matrices(rec)
    dim = A.shape[0]
    h1 = a1[:, :1] * q0[None, :] + sum((B1[:, [j]] * s[0][None, :] for j, s in enumerate(sig)), 0)
    # x_m = h_{m+1} (m >= 0) obeys x_{m+1} = A x_m + B σ_{m+1}; all inputs share den(z) = det(zI − A),
    # so Q_{m+1} = C x_m is one all-pole filter of Σ_inputs num_input(z)·input: h_1 enters as an
    # impulse at m = −1 (output index 0 stands for m = −1, index n for Q_n).
    C, D = np.eye(1, dim), np.zeros((1, 1))
    impulses, taps, den = [], [], None
    for i in range(dim):
        num, den = sps.ss2tf(A, np.eye(dim)[:, [i]], C, D)
        impulses.append((0, h1[i], num[0]))
    for j, sj in enumerate(sig):
        num, _ = sps.ss2tf(A, B[:, [j]], C, D)
        taps.append((sj[1:], 1, num[0]))  # σ_{m+1} at output index m + 1, m >= 0
    _filter(den, taps, impulses, out)
    out[0] = q0  # index 0 held h_0's first entry (m = −1) while filtering; Q_0 is q0


def _continuous(
    c: NumericContinuous, q0: np.ndarray, signals: Mapping[str, np.ndarray], out: np.ndarray
) -> None:
    eta = c.eta
    steps, blocks = out.shape[0] - 1, out.shape[1]
    sig = _signals(tuple(c.forcing), signals, steps, blocks)
    kern = numeric_kernels(c)
    K1, G1 = float(kern.K(eta)), float(kern.G(eta))
    if c.ode_order == 1:  # sampled kernels ρ^n, ρ = e^{−aη}; Riemann sum excludes s = t
        a, kb, gb = [1.0, -G1], [1.0], [0.0, G1]
    else:  # sampled kernels obey x_{n+2} = a1 x_{n+1} − a2 x_n, a2 = e^{−2Γη}, a1 = G(2η)/G(η)
        a1, a2 = float(kern.G(2 * eta)) / G1, np.exp(-2 * kern.decay * eta)
        a, kb, gb = [1.0, -a1, a2], [1.0, K1 - a1], [0.0, G1]
    # K and G share the denominator a: one filter, Q_0 as an impulse, the forcing as taps
    impulses = [(0, q0, kb)]
    taps = [(sj, 0, [eta * w * g for g in gb]) for w, sj in zip(c.forcing.values(), sig)]
    _filter(np.asarray(a), taps, impulses, out)


def predict(
    dynamics: SymmetryDynamics,
    q0: np.ndarray,
    signals: Mapping[str, np.ndarray] | None = None,
    *,
    values: Mapping[str, float],
    form: str = "exact",
    steps: int | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Q_0..Q_N per block, float64 [N+1, blocks].

    ``values``: the hyper-parameters by their shared names (eta, beta, lam, tau, ...; see
    :func:`nmech.derive.symbols.exact_values`), from which derive hands over plain float data
    (:meth:`SymmetryDynamics.exact_at`, :meth:`SymmetryDynamics.continuous_at`).
    ``signals``: name -> [N, blocks] arrays (extra names ignored); ``steps=N`` when the dynamics
    needs no signal.

    ``out``: a C-contiguous float64 [N+1, blocks] array to write the prediction into (and
    return), e.g. reused across calls; at the paper run's size a fresh one is 1.3 GB, and
    first-touching that much memory can cost more than the filter itself."""
    if form not in ("exact", "continuous"):
        raise NmechError(f"form must be 'exact' or 'continuous', got {form!r}")
    q0 = np.atleast_1d(_float_array("q0", q0))
    signals = dict(signals or {})
    n, blocks = _shape(q0, signals, steps)
    out = _output(out, (n + 1, blocks))
    if form == "exact":
        _exact(dynamics.exact_at(values), q0, signals, out)
    else:
        _continuous(dynamics.continuous_at(values), q0, signals, out)
    return out
