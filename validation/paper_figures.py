"""The paper's pictures of the symbolic side (Kunin et al. 2021, Figures 2-4), drawn from the
engine's output (``nmech figures --paper``).

* Figure 2 -- gradient fields of three 2-D network components, each invariant under one of
  the engine's symmetries ξ(θ) = Jθ + c (:mod:`nmech.derive.symmetry`): a softmax over two
  logits (translation, J = 0, c = 1), a batch-normalised unit (scale, J = I) and a linear path
  w₂·w₁ (rescale, J = diag(1, −1)). Each loss is checked against the engine's differentiated
  invariance identities (⟨∇L, ξ⟩ = 0 and ∇²Lξ + J∇L = 0) on the plotted grid before it is
  drawn; the arrows are −∇L, the dashed line/curve the symmetry's orbit through a point.
* Figure 3 -- level sets of the conserved quantity Q(θ) = ½⟨θ, Jθ⟩ + ⟨c, θ⟩ of each symmetry
  (hyperplane, sphere, hyperbola) with gradient-flow trajectories, which stay on them.
* Figure 4 -- on the paper's quadratic L(w) = wᵀAw, A = [[2.5, −1.5], [−1.5, 2]]: GD iterates
  with the gradient flow of L and of the engine's modified loss L̃ (contours of both), and
  heavy-ball iterates with the plain flow −∇L/(1 − β) and the engine's order-2 modified flow.
  Flows come from the numeric hand-off (:func:`nmech.numerics.flows.field_function`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import sympy as sp  # noqa: E402

from nmech.derive import modified_equation, rules, symmetry  # noqa: E402
from nmech.errors import NmechError  # noqa: E402
from nmech.numerics.coefficients import ExactValues  # noqa: E402
from nmech.numerics.flows import (  # noqa: E402
    SympyLoss,
    field_function,
    gradient_function,
    integrate,
    state_function,
)
from nmech.numerics.simulate import iterate  # noqa: E402
from nmech.validation.figure_files import save_png_pdf  # noqa: E402

w1, w2 = sp.symbols("w1 w2", real=True)
COORDS = [w1, w2]
A = sp.Matrix([[sp.Rational(5, 2), sp.Rational(-3, 2)], [sp.Rational(-3, 2), 2]])
QUADRATIC = (sp.Matrix([[w1, w2]]) * A * sp.Matrix([w1, w2]))[0]
GD_ETA = 0.08
#: The figures' file stems (each saved as PNG and PDF).
PAPER_FIGURES: tuple[str, ...] = (
    "figure2_vector_fields", "figure3_level_sets", "figure4_modified_flows",
)  # fmt: skip
MOMENTUM = {"eta": 0.02, "beta": 0.3}


class Component:
    """A 2-D loss with a symmetry of the engine and its concrete J, c."""

    def __init__(self, title: str, sym: symmetry.Symmetry, loss: sp.Expr, J, c) -> None:
        self.title, self.symmetry, self.loss = title, sym, loss
        self.J, self.c = np.asarray(J, dtype=float), np.asarray(c, dtype=float)

    def generator(self, theta: np.ndarray) -> np.ndarray:
        """ξ(θ) = Jθ + c at points θ [..., 2]."""
        return theta @ self.J.T + self.c

    def conserved(self, theta: np.ndarray) -> np.ndarray:
        """Q(θ) = ½⟨θ, Jθ⟩ + ⟨c, θ⟩ (∇Q = ξ)."""
        return 0.5 * np.einsum("...i,ij,...j->...", theta, self.J, theta) + theta @ self.c

    def check(self, points: np.ndarray) -> None:
        """The engine's identities k = 0, 1 (∇^m L[ξ, v, Jv, …] forms) vanish at ``points``."""
        grad = sp.lambdify([COORDS], [sp.diff(self.loss, x) for x in COORDS])
        hess = sp.lambdify([COORDS], sp.hessian(self.loss, COORDS).tolist())
        for theta in points:
            g, H = np.array(grad(list(theta)), float), np.array(hess(list(theta)), float)
            xi = self.generator(theta)
            for k in (0, 1):
                for v in np.eye(2):
                    total = sum(
                        c * _form(f, g, H, xi, v, self.J)
                        for f, c in self.symmetry.identity(k).items()
                    )
                    if abs(total) > 1e-9 * (1 + np.abs(g).max() + np.abs(H).max()):
                        raise NmechError(
                            f"{self.title}: loss breaks the {self.symmetry.name} identity {k}"
                        )


def _form(form, g, H, xi, v, J) -> float:
    """∇^m L[args] for m ≤ 2 with args among ξ, v1 and J v1."""
    m, args = form
    vectors = [{"xi": xi, "v1": v, "J v1": J @ v}[a] for a in args]
    if m == 1:
        return float(g @ vectors[0])
    return float(vectors[0] @ H @ vectors[1])


def components() -> list[Component]:
    """The three components of Figure 2 (losses chosen invariant; checked in ``check``)."""
    logit_gap = w1 - w2
    softmax = sp.Rational(7, 10) * sp.log(1 + sp.exp(-logit_gap)) + sp.Rational(3, 10) * sp.log(
        1 + sp.exp(logit_gap)
    )
    radius = sp.sqrt(w1**2 + w2**2)
    batch_norm = -(w1 * sp.cos(1) + w2 * sp.sin(1)) / radius
    linear_path = (w1 * w2 - 1) ** 2 / 2
    return [
        Component(
            "softmax (translation)", symmetry.translation(), softmax, np.zeros((2, 2)), [1, 1]
        ),
        Component("batch norm (scale)", symmetry.scale(), batch_norm, np.eye(2), [0, 0]),
        Component(
            "linear path (rescale)", symmetry.rescale(), linear_path, np.diag([1, -1]), [0, 0]
        ),
    ]


def _grid(n: int = 15, span: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    xs = np.linspace(-span, span, n)
    X, Y = np.meshgrid(xs, xs)
    return X, Y


def figure2(out: Path) -> list[Path]:
    """Gradient fields of the three components with their symmetry orbits."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    X, Y = _grid()
    for ax, comp in zip(axes, components()):
        points = np.stack([X.ravel(), Y.ravel()], 1)
        points = points[np.linalg.norm(points, axis=1) > 0.3]
        comp.check(points)
        grad = gradient_function(comp.loss, COORDS)
        field = -np.array([grad(p) for p in points])
        field /= np.maximum(np.linalg.norm(field, axis=1, keepdims=True), 1e-12)
        ax.quiver(points[:, 0], points[:, 1], field[:, 0], field[:, 1], color="tab:blue",
                  angles="xy", scale=25, width=0.004, label="−∇L (direction)")  # fmt: skip
        orbit = _orbit(comp, np.array([1.2, 0.6]))
        ax.plot(orbit[:, 0], orbit[:, 1], "--", color="tab:red", lw=2, label="symmetry orbit (ξ)")
        ax.set_title(comp.title)
        _plane(ax, (-2.1, 2.1), (-2.1, 2.1), "lower left")
    fig.suptitle("Figure 2: gradient fields of invariant components and their symmetries")
    fig.tight_layout()
    return save_png_pdf(fig, out / PAPER_FIGURES[0])


def _plane(ax, xlim: tuple[float, float], ylim: tuple[float, float], legend: str) -> None:
    """Axes of the (w₁, w₂) plane: labels, equal aspect, limits, legend."""
    ax.set_xlabel("$w_1$")
    ax.set_ylabel("$w_2$")
    ax.set_aspect("equal")
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.legend(loc=legend, fontsize=8)


def _orbit(comp: Component, theta: np.ndarray) -> np.ndarray:
    """exp(sJ)θ + s c for s ∈ [−2, 2]: the symmetry's orbit through θ (ξ integrated)."""
    s = np.linspace(-2, 2, 200)
    diag = np.diag(comp.J)
    return theta[None, :] * np.exp(np.outer(s, diag)) + np.outer(s, comp.c)


def figure3(out: Path) -> list[Path]:
    """Level sets of each conserved Q with gradient-flow paths on them."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    X, Y = _grid(200)
    starts = [np.array([1.5, -0.5]), np.array([-0.8, 1.4]), np.array([0.4, 1.8])]
    for ax, comp in zip(axes, components()):
        Q = comp.conserved(np.stack([X, Y], -1))
        ax.contour(X, Y, Q, levels=15, cmap="Greys", linewidths=0.8)
        field = gradient_function(comp.loss, COORDS)
        for i, start in enumerate(starts):
            path = integrate(lambda th, f=field: -f(th), start, np.linspace(0, 3, 200))
            ax.plot(path[:, 0], path[:, 1], color="tab:orange", lw=2,
                    label="gradient flow" if i == 0 else None)  # fmt: skip
            ax.plot(*start, "o", color="tab:orange")
        ax.plot([], [], color="grey", lw=0.8, label="level sets of Q")
        ax.set_title(f"{comp.title}: Q = ½⟨θ,Jθ⟩ + ⟨c,θ⟩")
        _plane(ax, (-2.0, 2.0), (-2.0, 2.0), "lower left")
    fig.suptitle("Figure 3: conserved quantities (hyperplane, sphere, hyperbola)")
    fig.tight_layout()
    return save_png_pdf(fig, out / PAPER_FIGURES[1])


def _loss_surface(fn: Callable[[np.ndarray], float], X, Y) -> np.ndarray:
    return np.array([[fn(np.array([x, y])) for x, y in zip(rx, ry)] for rx, ry in zip(X, Y)])


THETA0 = np.array([1.9, 0.3])


def figure4_paths(theta0: np.ndarray = THETA0, samples: int = 200) -> dict[str, dict]:
    """Figure 4's curves: for "gd" and "heavy_ball", the iterates, the plain flow and the
    engine's modified flow, the flows sampled at ``samples`` times and at the iterates' times
    (keys ``*_at_steps``); heavy ball starts on its slow manifold."""
    grad = gradient_function(QUADRATIC, COORDS)
    out = {}
    cases = [
        ("gd", rules.gd(), 1, {"eta": GD_ETA}, 18, 1.0),
        ("heavy_ball", rules.heavy_ball(), 2, MOMENTUM, 40, 1 - MOMENTUM["beta"]),
    ]
    for name, rule, order, values, steps, scale in cases:
        me = modified_equation(rule, order)
        states0 = {s: state_function(me, s, QUADRATIC, COORDS, values)(theta0) for s in me.states}
        iterates = iterate(me.rule, theta0, steps, values, grad, states0, first_step=False)
        modified = field_function(me, QUADRATIC, COORDS, values)
        curves = {"iterates": iterates}
        grid = {"": np.linspace(0, steps * values["eta"], samples)}
        grid["_at_steps"] = values["eta"] * np.arange(steps + 1)
        for suffix, times in grid.items():
            curves["plain" + suffix] = integrate(lambda th, c=scale: -grad(th) / c, theta0, times)
            curves["modified" + suffix] = integrate(modified, theta0, times)
        out[name] = curves
    return out


def modified_loss_function(eta: float) -> Callable[[np.ndarray], float]:
    """θ ↦ L̃(θ) = Σ_k η^k Σ_s c_s s(θ), GD's modified loss from the engine (exact coefficients)."""
    modified = modified_equation(rules.gd(), 1).modified_loss()
    values = ExactValues({"eta": eta})
    concrete = SympyLoss(QUADRATIC, COORDS)

    def value(theta: np.ndarray) -> float:
        point = concrete.at(theta, values)
        return sum(
            eta**k * values.coefficient(c) * point.scalar(s)
            for k, phi in enumerate(modified.terms)
            for s, c in phi.items()
        )

    return value


def figure4(out: Path) -> list[Path]:
    """GD with its modified loss, heavy ball with its modified flow (:func:`figure4_paths`)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 5))
    X, Y = _grid(60, 2.2)
    loss = sp.lambdify([COORDS], QUADRATIC)
    paths = figure4_paths()
    surface = _loss_surface(lambda t: loss(list(t)), X, Y)
    for ax in (left, right):
        ax.contour(X, Y, surface, levels=12, colors="grey", linewidths=0.7)
        ax.plot([], [], color="grey", lw=0.7, label="level sets of L")
    left.contour(X, Y, _loss_surface(modified_loss_function(GD_ETA), X, Y), levels=12,
                 colors="tab:green", linewidths=0.7, linestyles="dashed")  # fmt: skip
    left.plot([], [], color="tab:green", lw=0.7, ls="--", label="level sets of L̃ = L + (η/4)‖∇L‖²")
    gd, hb = paths["gd"], paths["heavy_ball"]
    left.plot(*gd["plain"].T, color="tab:blue", lw=2, label="gradient flow of L")
    left.plot(*gd["modified"].T, color="tab:green", lw=2, label="gradient flow of L̃ (modified)")
    left.plot(*gd["iterates"].T, "o", color="black", ms=4, label=f"GD iterates, η = {GD_ETA}")
    left.set_title("GD and its modified loss")
    beta = MOMENTUM["beta"]
    right.plot(*hb["plain"].T, color="tab:blue", lw=2, label="flow −∇L/(1−β)")
    right.plot(*hb["modified"].T, color="tab:red", lw=2, label="modified flow (order 2)")
    right.plot(*hb["iterates"].T, "o", color="black", ms=3,
               label=f"heavy-ball iterates, η = {MOMENTUM['eta']}, β = {beta}")  # fmt: skip
    right.set_title("Heavy ball and its modified flow (slow-manifold start)")
    for ax in (left, right):
        _plane(ax, (-0.2, 2.1), (-0.9, 1.4), "lower right")
    fig.suptitle("Figure 4: L(w) = wᵀAw, A = [[2.5, −1.5], [−1.5, 2]]")
    fig.tight_layout()
    return save_png_pdf(fig, out / PAPER_FIGURES[2])


def paper_figures(out: Path) -> list[Path]:
    """Figures 2, 3 and 4 as PNG and PDF in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    return figure2(out) + figure3(out) + figure4(out)
