"""Exact recursions reproduce simulated invariant problems; predictions stay finite and
accurate over a million steps; bad input gets a one-line error."""

import numpy as np
import pytest

from nmech.derive import rules, symmetry
from nmech.derive.symmetry import dynamics
from nmech.errors import NmechError
from nmech.numerics import predict
from nmech.numerics.simulate import initial_state, step

RNG = np.random.default_rng(0)
B, D, K = 3, 4, 5  # blocks, block size, classes


class Problem:
    """A loss with B symmetric blocks; J (as block masks) and c define the observable."""

    def __init__(self, kind: str, seed: int = 0):
        self.kind = kind
        rng = self.rng = np.random.default_rng(seed)
        if kind == "scale":
            self.W, self.V = rng.normal(size=(B, D)), rng.normal(size=(B, D))
            self.size, self.signs = B * D, np.ones(D)
        elif kind == "rescale":
            self.X = rng.normal(size=(B, D, D))
            self.size, self.signs = B * 2 * D, np.r_[np.ones(D), -np.ones(D)]
        else:
            self.x, self.y = rng.normal(size=B), 2
            self.size = K * B

    def grad(self, theta):
        if self.kind == "scale":
            th = theta.reshape(B, D)
            r = np.linalg.norm(th, axis=1, keepdims=True)
            u = th / r
            gu = (
                2 * np.sum(self.W * u, axis=1, keepdims=True) * self.W + np.cos(u * self.V) * self.V
            )
            return ((gu - np.sum(gu * u, axis=1, keepdims=True) * u) / r).reshape(-1)
        if self.kind == "rescale":
            th = theta.reshape(B, 2, D)
            a, b = th[:, 0], th[:, 1]
            s = np.einsum("bij,bj->bi", self.X, a) * b  # products a·x_i times b_i
            ds = np.cos(s) + s / (1 + s * s)  # L = sin(s) + log(1 + s^2) / 2, bounded slope
            ga = np.einsum("bi,bij->bj", ds * b, self.X)
            gb = ds * np.einsum("bij,bj->bi", self.X, a)
            return np.stack([ga, gb], axis=1).reshape(-1)
        W = theta.reshape(K, B)
        z = W @ self.x
        p = np.exp(z - z.max())
        p /= p.sum()
        p[self.y] -= 1
        return np.outer(p, self.x).reshape(-1)

    def blocks(self, v):
        return v.reshape(B, -1) if self.kind != "translation" else v.reshape(K, B).T

    def observable(self, theta):
        t = self.blocks(theta)
        return t.sum(1) if self.kind == "translation" else (self.signs * t * t).sum(1)

    def pair(self, u, v):
        return (self.signs * self.blocks(u) * self.blocks(v)).sum(1)


def simulate(rule, problem, params, steps):
    state = initial_state(rule, problem.rng.normal(size=problem.size))
    Q, sig = [], {"grad_sq": [], "step_sq": [], "step_grad": []}
    for n in range(steps):
        Q.append(problem.observable(state["theta"]))
        new, used = step(rule, state, params, problem.grad, first=n == 0)
        if problem.kind != "translation":
            g, delta = used[0], new["theta"] - state["theta"]
            sig["grad_sq"].append(problem.pair(g, g))
            sig["step_sq"].append(problem.pair(delta, delta))
            sig["step_grad"].append(problem.pair(delta, g))
        state = new
    Q.append(problem.observable(state["theta"]))
    return np.array(Q), {k: np.array(v) for k, v in sig.items() if v}


RULES = {
    "gd": rules.gd(weight_decay=True),
    "heavy_ball": rules.heavy_ball(weight_decay=True),
    "nesterov": rules.nesterov(weight_decay=True),
    "torch_sgd_dampening": rules.torch_sgd(momentum=True, dampening=True, weight_decay=True),
    "torch_sgd_nesterov": rules.torch_sgd(nesterov=True, dampening=True, weight_decay=True),
}
PARAMS = {"eta": 0.05, "beta": 0.9, "lam": 1e-3, "tau": 0.2}


@pytest.mark.parametrize("kind", ["scale", "rescale", "translation"])
@pytest.mark.parametrize("name", list(RULES))
def test_exact_recursion_reproduces_simulation(name, kind):
    rule, problem = RULES[name], Problem(kind)
    Q, sig = simulate(rule, problem, PARAMS, 10_000)
    dyn = dynamics.derive(rule, getattr(symmetry, kind)())
    pred = predict(dyn, Q[0], sig, form="exact", steps=len(Q) - 1, values=PARAMS)
    err = np.max(np.abs(pred - Q) / np.abs(Q).max(axis=0))
    assert err <= 1e-10
    assert set(dyn.signals) <= set(sig) | set()


def test_torch_nesterov_needs_step_grad_and_translation_needs_none():
    assert "step_grad" in dynamics.derive(RULES["torch_sgd_nesterov"], symmetry.scale()).signals
    assert dynamics.derive(RULES["heavy_ball"], symmetry.translation()).signals == ()


def test_continuous_form_at_beta_zero_is_the_papers_formula():
    dyn = dynamics.derive(rules.gd(weight_decay=True), symmetry.scale(), paper=True)
    eta, lam, n = 0.1, 1e-2, 400
    sig = {"grad_sq": np.abs(RNG.normal(size=(n, 2)))}
    q0 = np.array([1.0, 2.0])
    pred = predict(dyn, q0, sig, values={"eta": eta, "lam": lam}, form="continuous")
    t = eta * np.arange(n + 1)
    paper = np.array(
        [  # eta * integral, d tau = eta
            np.exp(-2 * lam * t[i]) * q0
            + eta
            * eta
            * np.sum(np.exp(-2 * lam * (t[i] - t[:i]))[:, None] * sig["grad_sq"][:i], axis=0)
            for i in range(n + 1)
        ]
    )
    np.testing.assert_allclose(pred, paper, rtol=1e-12)


def test_continuous_error_shrinks_with_eta():
    errors = []
    for eta in (0.04, 0.02, 0.01):
        problem = Problem("scale", seed=3)
        params = {"eta": eta, "lam": 0.05}
        steps = int(round(2.0 / eta))
        rule = rules.gd(weight_decay=True)
        Q, sig = simulate(rule, problem, params, steps)
        pred = predict(
            dynamics.derive(rule, symmetry.scale()), Q[0], sig, form="continuous", values=params
        )
        errors.append(np.max(np.abs(pred - Q) / np.abs(Q).max(axis=0)))
    slope = np.polyfit(np.log([0.04, 0.02, 0.01]), np.log(errors), 1)[0]
    assert slope > 0.8  # the continuous (first-order) form converges as eta -> 0


def _reference(dyn, q0, sig, params, steps):
    """The exact recursion in long double, step by step."""
    rec = dyn.recursion_at(params)
    f = lambda m: np.array(m.tolist(), dtype=np.longdouble)  # noqa: E731
    A, Bm, a1, B1 = f(rec.A), f(rec.B), f(rec.a1), f(rec.B1)
    s = sig.astype(np.longdouble)
    h = a1[:, 0] * np.longdouble(q0) + B1 @ s[0]
    out = np.empty(steps + 1, dtype=np.longdouble)
    out[0], out[1] = q0, h[0]
    for n in range(1, steps):
        h = A @ h + Bm @ s[n]
        out[n + 1] = h[0]
    return out


@pytest.mark.parametrize(
    "beta,lam",
    [(0.9, 5e-4), (0.99, 1e-2), (0.9, 0.277**2 * 0.1 * 1.9 / 4)],
    ids=["over", "under", "critical"],
)
def test_million_steps_stable_and_accurate(beta, lam):
    steps, eta = 1_000_000, 0.1
    dyn = dynamics.derive(rules.torch_sgd(momentum=True, weight_decay=True), symmetry.scale())
    s = np.abs(RNG.normal(size=(steps, 1))) * 1e-3
    params = {"eta": eta, "beta": beta, "lam": lam}
    exact = predict(dyn, np.array([1.0]), {"step_sq": s}, form="exact", values=params)[:, 0]
    cont = predict(dyn, np.array([1.0]), {"step_sq": s}, form="continuous", values=params)[:, 0]
    assert np.all(np.isfinite(exact)) and np.all(np.isfinite(cont))
    ref = _reference(dyn, 1.0, s, {**params, "tau": 0.0}, steps)
    rel = np.max(np.abs(exact - ref.astype(float))) / np.max(np.abs(ref.astype(float)))
    assert rel <= 1e-9


def test_bad_input_is_a_one_line_error():
    dyn = dynamics.derive(rules.torch_sgd(momentum=True), symmetry.scale())
    good = {"step_sq": np.ones((5, 2))}
    cases = [
        ({"step_sq": np.ones((5, 3))}, {"eta": 0.1, "beta": 0.9}, "shape"),
        ({"step_sq": np.full((5, 2), np.nan)}, {"eta": 0.1, "beta": 0.9}, "not finite"),
        (good, {"eta": 0.1, "beta": 1.0}, "beta"),
        (good, {"eta": -0.1, "beta": 0.9}, "eta"),
        ({}, {"eta": 0.1, "beta": 0.9}, "step_sq"),
    ]
    for signals, values, word in cases:
        with pytest.raises(NmechError, match=word) as info:
            predict(dyn, np.ones(2), signals, values=values, steps=5)
        assert "\n" not in str(info.value)
    with pytest.raises(NmechError, match="several gradients"):
        extragradient = rules.parse("theta_next = theta - eta*grad(theta - eta*grad(theta))")
        dynamics.derive(extragradient, symmetry.scale()).recursion_at({"eta": 0.1})


@pytest.mark.parametrize("form", ["exact", "continuous"])
def test_prediction_into_a_given_buffer(form):
    """``out=`` is filled in place (stale contents overwritten, the same array returned) with
    the values of a fresh prediction, in both filter paths (many blocks, few blocks)."""
    dyn = dynamics.derive(rules.torch_sgd(momentum=True, weight_decay=True), symmetry.scale())
    params = {"eta": 0.1, "beta": 0.9, "lam": 1e-2}
    for steps, blocks in [(50, 7), (2_000, 3)]:
        s = np.abs(RNG.normal(size=(steps, blocks))) * 1e-3
        q0 = RNG.uniform(0.5, 2.0, blocks)
        fresh = predict(dyn, q0, {"step_sq": s}, values=params, form=form)
        buf = np.full((steps + 1, blocks), np.nan)
        got = predict(dyn, q0, {"step_sq": s}, out=buf, values=params, form=form)
        assert got is buf and np.array_equal(buf, fresh)
    for bad, word in [(np.empty((steps, blocks)), "shape"), (np.empty((blocks, steps + 1)).T, "C")]:
        with pytest.raises(NmechError, match=word) as info:
            predict(dyn, q0, {"step_sq": s}, out=bad, values=params, form=form)
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["heavy_ball", "nesterov", "torch_sgd_nesterov"])
def test_continuous_momentum_form_converges(name):
    """The second-order (paper) form's error falls as η → 0 (about O(η) for Nesterov; slower
    for heavy ball at these sizes, where the start-from-rest transient dominates)."""
    errors = []
    for eta in (0.02, 0.01, 0.005):
        params = {"eta": eta, "beta": 0.9, "lam": 1e-2, "tau": 0.0}
        Q, sig = simulate(RULES[name], Problem("scale", seed=3), params, int(round(5 / eta)))
        dyn = dynamics.derive(RULES[name], symmetry.scale())
        pred = predict(dyn, Q[0], sig, form="continuous", values=params)
        errors.append(np.max(np.abs(pred - Q) / np.abs(Q).max(axis=0)))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.02


@pytest.mark.parametrize(
    "change,word",
    [
        ({"values": {"eta": 0.1, "beta": 0.9, "lam": float("nan")}}, "lam must be finite"),
        ({"values": {"eta": 0.1, "beta": 0.9, "lam": "0.1"}}, "lam must be a real number"),
        ({"values": {"eta": 0.1, "beta": 0.9, "lam": 1e-3 + 0j}}, "lam must be a real number"),
        ({"values": {"eta": 0.1, "beta": 0.9, "lam": np.ones(2)}}, "lam must be a real number"),
        ({"values": {"eta": 0.1, "beta": 0.9, "lam": True}}, "lam must be a real number"),
        ({"values": {"eta": 0.1, "beta": 0.9}}, "no value given for parameter\\(s\\) lam"),
        ({"steps": 4.5, "signals": {}}, "steps must be a whole number"),
        ({"signals": {"step_sq": np.ones((4, 2)) * (1 + 1j)}}, "real numbers"),
        ({"signals": {"step_sq": [["a"] * 2] * 4}}, "real numbers"),
        ({"signals": {"step_sq": np.ones((4, 2), dtype=object)}}, "real numbers"),
        ({"q0": ["x", "y"]}, "q0 must be an array of real numbers"),
        ({"steps": 10**12, "signals": {}}, "more than this machine"),
        ({"form": "exactly"}, "form must be"),
    ],
)
@pytest.mark.parametrize("form", ["exact", "continuous"])
def test_bad_arguments_are_refused_in_one_line(change, word, form):
    """Hyper-parameters, signals, q0, steps and form that cannot give a correct prediction are
    refused with a one-line NmechError, in both forms (never NaN output, a dropped imaginary
    part, a truncated step count or a MemoryError)."""
    dyn = dynamics.derive(rules.torch_sgd(momentum=True, weight_decay=True), symmetry.scale())
    call = {
        "q0": np.ones(2),
        "signals": {"step_sq": np.ones((4, 2))},
        "values": {"eta": 0.1, "beta": 0.9, "lam": 1e-3},
        "form": form,
    }
    call.update(change)
    with pytest.raises(NmechError, match=word) as info:
        predict(dyn, call.pop("q0"), call.pop("signals"), **call)
    assert "\n" not in str(info.value)
