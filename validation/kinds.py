"""The registry of symmetry kinds: one entry per kind, read by discovery, the recorder, the
records reader, the comparison, the report and the figures.

A kind is a family of blocks A whose generator ξ = Jθ + c has one shape (``nmech.derive``'s
:class:`~nmech.derive.symmetry.Symmetry`). Its *reduction family* says what the recorder sums
per block (s_i the sign of element i in J, see :mod:`nmech.validation.channels`):

* ``quadratic`` (J ≠ 0, c = 0): Q = ⟨θ, Jθ⟩ = Σ_A s_i θ_i², magnitude Q_abs = Σ_A θ_i², and the
  quadratic signals of :mod:`nmech.validation.signals` (⟨g, Jg⟩, ⟨Δ, JΔ⟩, ...);
* ``linear`` (J = 0, c = 1_A): Q = ⟨1_A, θ⟩ = Σ_A θ_i, magnitude Q_abs = Σ_A |θ_i|, and the
  linear signals (⟨1_A, u⟩).

Built in (the paper's three): ``scale`` (J = P_A: weights feeding a normalisation), ``rescale``
(J = P_A1 − P_A2: in- and out-weights of a positively homogeneous unit) and ``translation``
(c = 1_A: softmax logits, attention key biases). :func:`register_kind` adds one; every consumer
then handles it (``docs/extending.md``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nmech.validation.registry import Registry

QUADRATIC_FAMILY = "quadratic"
LINEAR_FAMILY = "linear"


@dataclass(frozen=True)
class Kind:
    """One symmetry kind.

    ``symmetry`` builds the derive-side generator (``nmech.derive.symmetry.scale`` ...);
    ``title`` is the figure title (matplotlib TeX) and ``observable`` the plain-text Q;
    ``family`` is ``quadratic`` or ``linear`` (module docstring); ``unit`` is Q's unit in terms
    of the parameters' unit [θ].
    """

    name: str
    family: str
    symmetry: Callable[[], Any]
    title: str
    observable: str
    unit: str

    @property
    def quadratic(self) -> bool:
        """True for J ≠ 0 (Q quadratic in θ)."""
        return self.family == QUADRATIC_FAMILY


def _derive(name: str) -> Callable[[], Any]:
    def make() -> Any:
        from nmech.derive import symmetry

        return getattr(symmetry, name)()

    make.__name__ = f"{name}_symmetry"
    return make


KINDS: Registry[Kind] = Registry("symmetry kind", family=(QUADRATIC_FAMILY, LINEAR_FAMILY))

#: Add an entry to the registry (its name must be new); returns it.
register_kind = KINDS.register


register_kind(Kind("scale", QUADRATIC_FAMILY, _derive("scale"), r"scale: $|\theta_A|^2$",
                   "|theta_A|^2", "[θ]²"))  # fmt: skip
register_kind(Kind("rescale", QUADRATIC_FAMILY, _derive("rescale"),
                   r"rescale: $|\theta_{A_1}|^2-|\theta_{A_2}|^2$",
                   "|theta_A1|^2 - |theta_A2|^2", "[θ]²"))  # fmt: skip
register_kind(Kind("translation", LINEAR_FAMILY, _derive("translation"),
                   r"translation: $\langle 1_A,\theta\rangle$", "<1_A, theta>", "[θ]"))  # fmt: skip


def kind(name: str) -> Kind:
    """The registered kind ``name`` (a one-line NmechError for an unknown one)."""
    return KINDS.entry(name)


def ordered(names: Any) -> list[str]:
    """``names`` in registry order (unknown names last, sorted)."""
    names = set(names)
    return [k for k in KINDS if k in names] + sorted(names - set(KINDS))


def is_quadratic(name: str) -> bool:
    """True when the kind ``name`` is registered with the quadratic family."""
    return name in KINDS and KINDS[name].quadratic
