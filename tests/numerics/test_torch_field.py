"""The torch hand-off on real (tiny) networks: nested jvps against full derivative tensors
(torch.func.hessian), against the sympy route, the modified loss against the field, and the
input checks."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
import torch
from torch import nn

from nmech.derive import modified_equation, rules
from nmech.errors import NmechError
from nmech.numerics.flows import field_function, state_function
from nmech.numerics.torch_field import (
    TorchModifiedLoss,
    hvp_equivalents,
    torch_field,
    torch_modified_loss,
    torch_state,
)
from nmech.numerics.torch_loss import module_loss

F64 = torch.float64


def _tiny(batch_norm: bool = False):
    torch.manual_seed(0)
    layers = [nn.Linear(3, 4)] + ([nn.BatchNorm1d(4)] if batch_norm else []) + [nn.Tanh()]
    model = nn.Sequential(*layers, nn.Linear(4, 3)).to(F64)
    x = torch.randn(12, 3, dtype=F64)
    y = torch.randint(0, 3, (12,))
    loss = module_loss(model, (x, y), nn.functional.cross_entropy)
    return loss, loss.theta()


def _derivatives(loss, theta):
    g = torch.func.grad(loss)(theta)
    H = torch.func.hessian(loss)(theta)
    T3 = torch.func.jacfwd(torch.func.hessian(loss))(theta)
    return g, H, T3


@pytest.mark.parametrize("batch_norm", [False, True])
def test_gd_order_two_is_the_known_formula_with_full_tensors(batch_norm):
    """f̃ = −g − (η/2)Hg − η²[(1/3)H²g + (1/12)∇³L[g, g]] with H and ∇³L formed in full."""
    loss, theta = _tiny(batch_norm)
    g, H, T3 = _derivatives(loss, theta)
    eta = 0.1
    expected = (
        -g - eta / 2 * H @ g - eta**2 * (H @ H @ g / 3 + torch.einsum("ijk,j,k", T3, g, g) / 12)
    )
    ours = torch_field(modified_equation(rules.gd(), 2), loss, theta, {"eta": eta})
    assert torch.allclose(ours, expected, rtol=1e-12, atol=1e-15)
    assert (eta**2 * H @ H @ g).abs().max() > 1e-6  # the second-order term is really there


def test_heavy_ball_and_its_slow_manifold_state():
    """θ̇ = −g/(1−β) − η(1+β)/(2(1−β)³)Hg; on the slow manifold θ_prev = φ_{−η}(θ) =
    θ + ηg/(1−β) + η²Hg/(1−β)³ + O(η³)."""
    loss, theta = _tiny()
    g, H, _ = _derivatives(loss, theta)
    eta, beta = 0.05, 0.9
    values = {"eta": eta, "beta": beta}
    me = modified_equation(rules.heavy_ball(), 1)
    expected = -g / (1 - beta) - eta * (1 + beta) / (2 * (1 - beta) ** 3) * H @ g
    assert torch.allclose(torch_field(me, loss, theta, values), expected, rtol=1e-12)
    prev = torch_state(me, "theta_prev", loss, theta, values)
    manifold = theta + eta * g / (1 - beta) + eta**2 * H @ g / (1 - beta) ** 3
    assert torch.allclose(prev, manifold, rtol=1e-12)


def test_gd_modified_loss_and_its_gradient_flow():
    """L̃ = L + (η/4)‖∇L‖², and −∇L̃ (autograd through the jvps) is the order-1 field."""
    loss, theta = _tiny()
    me = modified_equation(rules.gd(), 1)
    values = {"eta": 0.2}
    g = torch.func.grad(loss)(theta)
    assert torch.allclose(
        torch_modified_loss(me, loss, theta, values), loss(theta) + 0.05 * g @ g, rtol=1e-14
    )
    modified = TorchModifiedLoss(me, loss, values)
    flow = -modified.scale * torch.func.grad(modified)(theta)
    assert torch.allclose(flow, torch_field(me, loss, theta, values), rtol=1e-12)


def test_no_modified_loss_past_the_obstruction():
    loss, theta = _tiny()
    with pytest.raises(NmechError, match="no modified loss at order 2"):
        torch_modified_loss(modified_equation(rules.gd(), 2), loss, theta, {"eta": 0.1})


x, y = sp.symbols("x y", real=True)
SYMPY_LOSS = x**2 / 2 + y**2 + x**4 / 4 + x * y**2 / 2 + sp.Rational(3, 10) * sp.sin(x) + 3 * x


def _torch_loss(t):
    return (
        t[0] ** 2 / 2
        + t[1] ** 2
        + t[0] ** 4 / 4
        + t[0] * t[1] ** 2 / 2
        + 0.3 * torch.sin(t[0])
        + 3 * t[0]
    )


SYMPY_CASES = [
    (rules.gd(), 3, {"eta": 0.1}),
    (rules.heavy_ball(weight_decay=True), 2, {"eta": 0.1, "beta": 0.9, "lam": 0.01}),
    (rules.nesterov(), 2, {"eta": 0.1, "beta": 0.99}),
    (rules.adam(), 1, {"eta": 0.01, "beta1": 0.9, "beta2": 0.999, "eps": 1e-3}),
    (rules.rmsprop(), 2, {"eta": 0.01, "alpha": 0.99, "eps": 1e-3}),
    (rules.signum(weight_decay=True), 2, {"eta": 0.01, "beta": 0.9, "lam": 0.1}),
    (rules.lion(weight_decay=True), 2, {"eta": 0.01, "beta1": 0.9, "beta2": 0.99, "lam": 0.1}),
]


@pytest.mark.parametrize(
    ("rule", "order", "values"), SYMPY_CASES, ids=[c[0].name for c in SYMPY_CASES]
)
def test_torch_route_agrees_with_the_sympy_route(rule, order, values):
    me = modified_equation(rule, order)
    point = np.array([0.4, -0.3])
    ours = torch_field(me, _torch_loss, torch.tensor(point, dtype=F64), values).numpy()
    theirs = field_function(me, SYMPY_LOSS, [x, y], values)(point)
    assert np.allclose(ours, theirs, rtol=1e-12, atol=0), (ours, theirs)
    for name in me.states:
        a = torch_state(me, name, _torch_loss, torch.tensor(point, dtype=F64), values).numpy()
        b = state_function(me, name, SYMPY_LOSS, [x, y], values)(point)
        assert np.allclose(a, b, rtol=1e-12, atol=1e-300), name


def test_sign_rule_refuses_a_zero_gradient_entry():
    """The field of a sign rule exists on a region of fixed signs only: at a point where an
    entry of ∇L vanishes (∂L/∂y = 0 at y = 0 for this loss) torch_field refuses."""
    me = modified_equation(rules.signsgd(), 1)
    point = torch.tensor([0.4, 0.0], dtype=F64)
    with pytest.raises(NmechError, match="region where the signs are fixed"):
        torch_field(me, _torch_loss, point, {"eta": 0.1})


def test_cost_counts_distinct_subtrees_once():
    """GD: order 1 adds ∇²L∇L (1 HVP); order 2 adds (∇²L)²∇L (1) and ∇³L[∇L,∇L] (2)."""
    me = modified_equation(rules.gd(), 3)
    assert hvp_equivalents(me.terms) == [0.0, 1.0, 3.0, 4.0]


def _bad(loss, theta, values=None):
    me = modified_equation(rules.gd(), 1)
    with pytest.raises(NmechError) as info:
        torch_field(me, loss, theta, values or {"eta": 0.1})
    assert "\n" not in str(info.value)
    return str(info.value)


def test_bad_input_is_named():
    loss, theta = _tiny()
    assert "scalar" in _bad(lambda t: t * 2, torch.ones(3, dtype=F64))
    assert "entries, the model has" in _bad(loss, theta[:-1])
    assert "floating-point" in _bad(loss, torch.ones(theta.numel(), dtype=torch.int64))
    assert "1-D" in _bad(loss, theta.view(1, -1))
    assert "float64" in _bad(loss, theta.float())
    bad = theta.clone()
    bad[0] = float("nan")
    assert "non-finite" in _bad(loss, bad)
    assert "not finite" in _bad(lambda t: (t * float("inf")).sum(), torch.ones(2, dtype=F64))
    assert "eta" in _bad(loss, theta, {"beta": 0.5})
    assert "torch tensor" in _bad(loss, np.ones(3))


@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_normalisation_layers_get_right_third_derivatives(norm):
    """torch's fused batch_norm/layer_norm give wrong ∇³L under nested jvps (0.1-0.2 % here,
    pytorch#196699); module_loss's elementary replacement keeps the loss and gets ∇³L[g, g]
    right against a finite difference of reverse-over-reverse Hessian-vector products."""
    torch.manual_seed(0)
    layer = nn.BatchNorm1d(4) if norm == "batch" else nn.LayerNorm(4)
    model = nn.Sequential(nn.Linear(3, 4), layer, nn.Tanh(), nn.Linear(4, 3)).to(F64)
    x, y = torch.randn(12, 3, dtype=F64), torch.randint(0, 3, (12,))
    loss = module_loss(model, (x, y), nn.functional.cross_entropy)
    theta = loss.theta()
    assert abs(float((loss(theta) - nn.functional.cross_entropy(model(x), y)).detach())) < 1e-14
    g = torch.func.grad(loss)(theta)
    ours = torch_field(modified_equation(rules.gd(), 2), loss, theta, {"eta": 1.0})
    ours = -12 * (ours + g + H_g(loss, theta, g) / 2 + H_g(loss, theta, H_g(loss, theta, g)) / 3)
    h = 1e-4
    fd = (H_g(loss, theta + h * g, g) - H_g(loss, theta - h * g, g)) / (2 * h)
    assert torch.allclose(ours, fd, rtol=1e-6, atol=1e-7 * float(fd.abs().max()))


def H_g(loss, theta, v):
    """∇²L(θ)v by reverse-over-reverse autograd (independent of the jvp route)."""
    return torch.autograd.functional.hvp(loss, theta, v)[1]
