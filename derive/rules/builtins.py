"""The built-in rules: the optimizers of the papers and of ``torch.optim``, exactly.

The built-ins use the shared symbols ``eta`` (learning rate), ``beta`` (momentum), ``lam``
(weight decay: coupled, L_λ = L + λ/2 |θ|², except AdamW's decoupled θ⁺ = (1 − ηλ)θ − …) and
``tau`` (dampening); the adaptive ones ``beta1``, ``beta2``, ``alpha`` and ``eps``. See
:mod:`nmech.derive.rules.rule` for the conventions of a :class:`Rule`.
"""

from __future__ import annotations

import sympy as sp

from nmech.derive.rules.averaging import schedule_free
from nmech.derive.rules.rule import PARAMETER, Assignment, Rule
from nmech.derive.symbols import (
    alpha,
    beta,
    beta1,
    beta2,
    eps,
    eta,
    grad,
    lam,
    norm,
    scalar,
    sign,
    step,
    tau,
    vector,
)
from nmech.errors import NmechError


def _decayed(point: sp.Expr, weight_decay: bool) -> sp.Expr:
    """∇L_λ(point) = ∇L(point) + λ·point, or ∇L(point) without weight decay."""
    return grad(point) + lam * point if weight_decay else grad(point)


def gd(weight_decay: bool = False) -> Rule:
    """Gradient descent: θ⁺ = θ − η(∇L(θ) + λθ)."""
    th = vector(PARAMETER)
    return Rule(
        name="gd" + ("+wd" if weight_decay else ""),
        assignments=(Assignment("theta_next", th - eta * _decayed(th, weight_decay)),),
    )


def heavy_ball(weight_decay: bool = False) -> Rule:
    """Heavy ball (Polyak): θ_{n+1} = θ_n − η(∇L(θ_n) + λθ_n) + β(θ_n − θ_{n−1})."""
    th, prev = vector(PARAMETER), vector("theta_prev")
    step = th - eta * _decayed(th, weight_decay) + beta * (th - prev)
    return Rule(
        name="heavy-ball" + ("+wd" if weight_decay else ""),
        assignments=(Assignment("theta_next", step),),
    )


def nesterov(weight_decay: bool = False) -> Rule:
    """Nesterov: y_n = θ_n + β(θ_n − θ_{n−1}), θ_{n+1} = y_n − η(∇L(y_n) + λy_n)."""
    th, prev, y = vector(PARAMETER), vector("theta_prev"), vector("y")
    return Rule(
        name="nesterov" + ("+wd" if weight_decay else ""),
        assignments=(
            Assignment("y", th + beta * (th - prev)),
            Assignment("theta_next", y - eta * _decayed(y, weight_decay)),
        ),
    )


def _flag(value: float | bool) -> bool:
    return bool(value) and float(value) != 0.0


def torch_sgd(
    momentum: float | bool = True,
    dampening: float | bool = False,
    nesterov: bool = False,
    weight_decay: float | bool = False,
) -> Rule:
    """``torch.optim.SGD`` exactly, as a state rule with momentum buffer ``v``.

    With d = ∇L(θ) + λθ: v⁺ = βv + (1−τ)d (first step: v⁺ = d), and
    θ⁺ = θ − η v⁺, or θ⁺ = θ − η(d + βv⁺) with ``nesterov=True``.
    Arguments take the optimizer's numbers (0 removes the term) or booleans; numbers are kept
    in :attr:`Rule.defaults` under ``beta``, ``tau`` and ``lam``.
    """
    th, v, v_next = vector(PARAMETER), vector("v"), vector("v_next")
    d = _decayed(th, _flag(weight_decay))
    defaults = {
        key: float(value)
        for key, value in (("beta", momentum), ("tau", dampening), ("lam", weight_decay))
        if not isinstance(value, bool)
    }
    name = "torch-sgd"
    if not _flag(momentum):
        if nesterov:
            raise NmechError("torch.optim.SGD: nesterov momentum requires a momentum > 0")
        return Rule(name, (Assignment("theta_next", th - eta * d),), defaults=defaults)
    damp = (1 - tau) if _flag(dampening) else 1
    direction = d + beta * v_next if nesterov else v_next
    return Rule(
        name=name + ("-nesterov" if nesterov else ""),
        assignments=(
            Assignment("v_next", beta * v + damp * d),
            Assignment("theta_next", th - eta * direction),
        ),
        first_step=(Assignment("v_next", d),),
        defaults=defaults,
    )


def _moments(
    g: sp.Expr, bias_correction: bool, b1: sp.Expr = beta1, amsgrad: bool = False
) -> tuple[Assignment, ...]:
    """Adam's moment buffers: m⁺ = β₁m + (1−β₁)g, v⁺ = β₂v + (1−β₂)g⊙g, and the step
    direction u = m̂/(√v̂ + ε) with m̂ = m⁺/(1−β₁ⁿ), v̂ = v⁺/(1−β₂ⁿ) (n = ``step``); with
    ``amsgrad`` the running maximum v̄⁺ = max(v̄, v⁺) (entry-wise) replaces v⁺ in v̂."""
    m, v = vector("m"), vector("v")
    m_next, v_next = vector("m_next"), vector("v_next")
    second = vector("vmax_next") if amsgrad else v_next
    if bias_correction:
        # torch: (lr / (1 - β₁ⁿ)) · m / (√v / √(1 - β₂ⁿ) + ε)
        u = m_next / (1 - b1**step) / (sp.sqrt(second) / sp.sqrt(1 - beta2**step) + eps)
    else:
        u = m_next / (sp.sqrt(second) + eps)
    running_max = (Assignment("vmax_next", sp.Max(vector("vmax"), v_next)),) if amsgrad else ()
    return (
        Assignment("m_next", b1 * m + (1 - b1) * g),
        Assignment("v_next", beta2 * v + (1 - beta2) * g * g),
        *running_max,
        Assignment("u", u),
    )


def adam(weight_decay: bool = False, bias_correction: bool = True, amsgrad: bool = False) -> Rule:
    """``torch.optim.Adam`` exactly: with g = ∇L(θ) + λθ,
    m⁺ = β₁m + (1−β₁)g, v⁺ = β₂v + (1−β₂)g⊙g, θ⁺ = θ − η m̂/(√v̂ + ε), the bias-corrected
    m̂ = m⁺/(1−β₁ⁿ), v̂ = v⁺/(1−β₂ⁿ) at step n (``bias_correction=False`` drops them;
    ``amsgrad``: v̂ from the running maximum of v⁺)."""
    th = vector(PARAMETER)
    return Rule(
        name="adam" + ("+wd" if weight_decay else "") + ("" if bias_correction else "-nobc")
        + ("-amsgrad" if amsgrad else ""),
        assignments=_moments(_decayed(th, weight_decay), bias_correction, amsgrad=amsgrad)
        + (Assignment("theta_next", th - eta * vector("u")),),
    )  # fmt: skip


def adamw(weight_decay: bool = True, bias_correction: bool = True, amsgrad: bool = False) -> Rule:
    """``torch.optim.AdamW`` exactly: decoupled decay applied first,
    θ⁺ = (1 − ηλ)θ − η m̂/(√v̂ + ε), the moments of :func:`adam` built from g = ∇L(θ)."""
    th = vector(PARAMETER)
    decay = (1 - eta * lam) if weight_decay else 1
    return Rule(
        name="adamw" + ("" if bias_correction else "-nobc") + ("-amsgrad" if amsgrad else ""),
        assignments=_moments(grad(th), bias_correction, amsgrad=amsgrad)
        + (Assignment("theta_next", decay * th - eta * vector("u")),),
    )


def adagrad(weight_decay: bool = False) -> Rule:
    """``torch.optim.Adagrad`` exactly (``lr_decay`` 0): with g = ∇L(θ) + λθ, the accumulated
    squares v⁺ = v + g⊙g (v starts at ``initial_accumulator_value``) and
    θ⁺ = θ − η g/(√v⁺ + ε). No slow manifold exists (v grows without bound), so only its
    symmetry dynamics, which need the update direction u = g/(√v⁺ + ε) alone, are derived."""
    th, v_next = vector(PARAMETER), vector("v_next")
    g = _decayed(th, weight_decay)
    return Rule(
        name="adagrad" + ("+wd" if weight_decay else ""),
        assignments=(
            Assignment("v_next", vector("v") + g * g),
            Assignment("theta_next", th - eta * g / (sp.sqrt(v_next) + eps)),
        ),
    )


def rmsprop(weight_decay: bool = False, momentum: bool = False, eps_inside: bool = False) -> Rule:
    """``torch.optim.RMSprop`` exactly (centered off): with g = ∇L(θ) + λθ,
    v⁺ = αv + (1−α)g⊙g and θ⁺ = θ − η g/(√v⁺ + ε); with ``momentum``, b⁺ = βb + g/(√v⁺ + ε)
    and θ⁺ = θ − ηb⁺. ``eps_inside=True`` is the smooth variant g/√(v⁺ + ε) used in the
    backward-error literature (not torch's)."""
    th, v_next = vector(PARAMETER), vector("v_next")
    g = _decayed(th, weight_decay)
    denom = sp.sqrt(v_next + eps) if eps_inside else sp.sqrt(v_next) + eps
    body = [Assignment("v_next", alpha * vector("v") + (1 - alpha) * g * g)]
    if momentum:
        body.append(Assignment("b_next", beta * vector("b") + g / denom))
        body.append(Assignment("theta_next", th - eta * vector("b_next")))
    else:
        body.append(Assignment("theta_next", th - eta * g / denom))
    name = "rmsprop" + ("+wd" if weight_decay else "") + ("+momentum" if momentum else "")
    return Rule(name=name + ("-eps-inside" if eps_inside else ""), assignments=tuple(body))


def _sign_step(direction: sp.Expr, weight_decay: bool) -> sp.Expr:
    """θ − η(sign(direction) + λθ): a sign step with decoupled weight decay."""
    th = vector(PARAMETER)
    return th - eta * (sign(direction) + (lam * th if weight_decay else 0))


def signsgd(weight_decay: bool = False) -> Rule:
    """signSGD (Bernstein et al. 2018): θ⁺ = θ − η(sign ∇L(θ) + λθ), entry-wise sign,
    decoupled decay. Smooth on each region where ∇L keeps its signs; there the modified field
    is exactly −(−log(1 − ηλ)/(ηλ))(sign ∇L + λθ) (−sign ∇L, all corrections 0, without
    decay)."""
    return Rule(
        name="signsgd" + ("+wd" if weight_decay else ""),
        assignments=(Assignment("theta_next", _sign_step(grad(vector(PARAMETER)), weight_decay)),),
    )


def signum(weight_decay: bool = False) -> Rule:
    """signum (Bernstein et al. 2018), the sign of the momentum buffer:
    m⁺ = βm + (1−β)∇L(θ), θ⁺ = θ − η(sign m⁺ + λθ), decoupled decay. On its slow manifold
    m = ∇L + O(η), so on a region where ∇L keeps its signs it moves as signSGD does."""
    m_next = vector("m_next")
    g = grad(vector(PARAMETER))
    return Rule(
        name="signum" + ("+wd" if weight_decay else ""),
        assignments=(
            Assignment("m_next", beta * vector("m") + (1 - beta) * g),
            Assignment("theta_next", _sign_step(m_next, weight_decay)),
        ),
    )


def lion(weight_decay: bool = False) -> Rule:
    """Lion (Chen et al. 2023): c = β₁m + (1−β₁)∇L(θ), θ⁺ = θ − η(sign c + λθ),
    m⁺ = β₂m + (1−β₂)∇L(θ). On its slow manifold m = ∇L + O(η), c = ∇L + O(η): on a region
    where ∇L keeps its signs it moves as signSGD does."""
    th, m = vector(PARAMETER), vector("m")
    g = grad(th)
    return Rule(
        name="lion" + ("+wd" if weight_decay else ""),
        assignments=(
            Assignment("c", beta1 * m + (1 - beta1) * g),
            Assignment("theta_next", _sign_step(vector("c"), weight_decay)),
            Assignment("m_next", beta2 * m + (1 - beta2) * g),
        ),
    )


def normalized_gd() -> Rule:
    """Normalised GD: θ⁺ = θ − η∇L(θ)/‖∇L(θ)‖ (global Euclidean norm), smooth where ∇L ≠ 0;
    its leading flow is −∇L/‖∇L‖, at unit speed."""
    th = vector(PARAMETER)
    return Rule(
        name="normalized-gd",
        assignments=(Assignment("theta_next", th - eta * grad(th) / norm(grad(th))),),
    )


def sam() -> Rule:
    """SAM with its normalised ascent step (Foret et al. 2021): θ⁺ = θ − η∇L(θ + ρ∇L/‖∇L‖), the
    radius a fixed multiple of the learning rate, ρ = rη (so that the ascent is O(η) and the
    expansion in η applies; a fixed ρ as η → 0 is another limit). Smooth where ∇L ≠ 0; to
    first order its flow is the gradient flow of L + η(r‖∇L‖ + ‖∇L‖²/4)."""
    th, r = vector(PARAMETER), scalar("r")
    g = grad(th)
    return Rule(
        name="sam",
        assignments=(Assignment("theta_next", th - eta * grad(th + r * eta * g / norm(g))),),
    )


def clipped_gd() -> Rule:
    """GD with gradient clipping by global norm c, on its active region ‖∇L‖ > c:
    θ⁺ = θ − ηc∇L/‖∇L‖ (normalised GD at learning rate ηc). Where ‖∇L‖ < c the step is GD's;
    the modified equation holds while the iterates stay on the active region."""
    th, c = vector(PARAMETER), scalar("c")
    return Rule(
        name="clip-gd",
        assignments=(Assignment("theta_next", th - eta * c * grad(th) / norm(grad(th))),),
    )


BUILTINS = {
    "gd": gd,
    "heavy-ball": heavy_ball,
    "nesterov": nesterov,
    "rmsprop": rmsprop,
    "adam": adam,
    "signsgd": signsgd,
    "signum": signum,
    "lion": lion,
}
#: Built-ins with a global norm (smooth where ∇L ≠ 0), offered without weight decay.
NORM_RULES = {"normalized-gd": normalized_gd, "sam": sam, "clip-gd": clipped_gd}


def builtin(
    name: str, weight_decay: bool = False, nesterov: bool = False, dampening: bool = False
) -> Rule:
    """A built-in rule by its CLI name (gd, heavy-ball, nesterov, torch-sgd, rmsprop, adam,
    adamw, signsgd, signum, lion, normalized-gd, sam, clip-gd, schedule-free); ``nesterov`` and
    ``dampening`` select torch's SGD variants."""
    if name == "schedule-free":
        if weight_decay or nesterov or dampening:
            raise NmechError("schedule-free takes no --weight-decay, --torch-nesterov, --dampening")
        return schedule_free()
    if name == "adamw":
        if nesterov or dampening:
            raise NmechError("--torch-nesterov and --dampening apply to the torch-sgd rule only")
        return adamw(weight_decay=weight_decay)
    if name == "torch-sgd":
        return torch_sgd(
            momentum=True, dampening=dampening, nesterov=nesterov, weight_decay=weight_decay
        )
    if nesterov or dampening:
        raise NmechError("--torch-nesterov and --dampening apply to the torch-sgd rule only")
    if name in NORM_RULES:
        if weight_decay:
            raise NmechError(f"--weight-decay is not offered for {name}: write it into a rule file")
        return NORM_RULES[name]()
    if name not in BUILTINS:
        known = ", ".join([*BUILTINS, "torch-sgd", "adamw", *NORM_RULES, "schedule-free"])
        raise NmechError(f"unknown rule '{name}' (known: {known})")
    return BUILTINS[name](weight_decay=weight_decay)
