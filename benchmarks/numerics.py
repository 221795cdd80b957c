"""Numerics benchmark: predictions at the paper run's size against a per-step loop."""

from __future__ import annotations

import time

import numpy as np

from nmech.derive import dynamics, rules, symmetry
from nmech.numerics import predict

REGIMES = {"over": (0.9, 5e-4), "under": (0.99, 1e-2), "critical": (0.9, 0.0131632)}


def _loop(dyn, q0, s, params):
    rec = dyn.recursion_at(params)
    A, B = np.array(rec.A.tolist(), float), np.array(rec.B.tolist(), float)
    a1, B1 = np.array(rec.a1.tolist(), float), np.array(rec.B1.tolist(), float)
    h = a1 * q0[None, :] + B1 @ s[0][None, :]
    out = [q0, h[0]]
    for n in range(1, s.shape[0]):
        h = A @ h + B @ s[n][None, :]
        out.append(h[0])
    return np.array(out)


def run(quick: bool = False) -> list[dict]:
    steps, channels = (3_910, 4_224) if quick else (39_100, 4_224)
    dyn = dynamics.derive(rules.torch_sgd(momentum=True, weight_decay=True), symmetry.scale())
    rng = np.random.default_rng(0)
    s = np.abs(rng.normal(size=(steps, channels))) * 1e-3
    q0 = np.ones(channels)
    records = []
    for regime, (beta, lam) in REGIMES.items():
        params = {"eta": 0.1, "beta": beta, "lam": lam}
        dyn.recursion_at(params)  # derive once, outside the timing
        t0 = time.perf_counter()
        fast = predict(dyn, q0, {"step_sq": s}, form="exact", **params)
        t_fast = time.perf_counter() - t0
        t0 = time.perf_counter()
        slow = _loop(dyn, q0, s, params)
        t_loop = time.perf_counter() - t0
        assert np.allclose(fast, slow, rtol=1e-9, atol=1e-12)
        ratio = t_loop / t_fast
        records.append(
            {
                "name": f"numerics.predict.{regime} ({steps}x{channels})",
                "value": t_fast,
                "unit": "s",
                "baseline": t_loop,
                "ratio": ratio,
                "target": "< 2 s and >= 50x",
                "met": bool(t_fast < 2 and ratio >= 50),
            }
        )
    return records
