"""Named run configurations for ``nmech validate --preset``.

* ``cpu-demo``: VGG-16-BN and VGG-16 at width 1/8 on 32x32 synthetic data (10 classes),
  torch SGD lr 0.1, momentum 0.9, weight decay 5e-4, batch 32, 300 steps (about a minute on
  2 CPU cores).
* ``paper-vgg16-bn`` / ``paper-vgg16``: the paper's setting -- 64x64 inputs, 200 classes,
  width 1, batch 256, lr 0.1, momentum 0.9, weight decay 5e-4, 100 epochs -- on Tiny ImageNet
  when ``--data-dir`` is given, else on synthetic data of the same shape.

Every preset trains with ``torch.optim.SGD`` (``optimizer="sgd"``); ``optimizer="adamw"``
(``nmech validate --optimizer adamw``) trains with ``torch.optim.AdamW`` instead, with
``betas``, ``eps`` and, unless given, lr 0.01 and weight decay 0.5 (:data:`ADAMW_DEFAULTS`:
eta*lam = 5e-3, so scale-invariant channels approach their rotational equilibrium within the
cpu-demo's 300 steps, time constant 1/(2 eta lam) = 100 steps).

Every preset has the GPU path switches ``channels_last``, ``bf16`` and ``compile`` off
(``nmech validate --channels-last --bf16 --compile`` turn them on; see
:mod:`nmech.validation.train`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from nmech.errors import NmechError


@dataclass(frozen=True)
class Preset:
    """Everything a validation run needs besides the output folder."""

    name: str
    models: tuple[str, ...]
    image_size: int
    num_classes: int
    width: float
    batch_size: int
    steps: int | None
    epochs: float | None
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    dampening: float = 0.0
    seed: int = 0
    per_class: int = 200
    flush_every: int = 100
    channels_last: bool = False
    bf16: bool = False
    compile: bool = False
    optimizer: str = "sgd"
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    @property
    def switches(self) -> dict[str, bool]:
        """The GPU path switches, by their option names."""
        return {"channels-last": self.channels_last, "bf16": self.bf16, "compile": self.compile}

    def with_overrides(self, **kw: object) -> Preset:
        """A copy with the given fields replaced (``None`` values are ignored)."""
        return replace(self, **{k: v for k, v in kw.items() if v is not None})


PRESETS: dict[str, Preset] = {
    "cpu-demo": Preset(
        "cpu-demo", ("vgg16_bn", "vgg16"), image_size=32, num_classes=10, width=1 / 8,
        batch_size=32, steps=300, epochs=None, per_class=200,
    ),
    "paper-vgg16-bn": Preset(
        "paper-vgg16-bn", ("vgg16_bn",), image_size=64, num_classes=200, width=1.0,
        batch_size=256, steps=None, epochs=100, per_class=100, flush_every=500,
    ),
    "paper-vgg16": Preset(
        "paper-vgg16", ("vgg16",), image_size=64, num_classes=200, width=1.0,
        batch_size=256, steps=None, epochs=100, per_class=100, flush_every=500,
    ),
}  # fmt: skip


#: lr and weight decay of ``--optimizer adamw`` where the command line gives none.
ADAMW_DEFAULTS = {"lr": 0.01, "weight_decay": 0.5}
OPTIMIZERS = ("sgd", "adamw")


def get_preset(name: str) -> Preset:
    """The preset called ``name``."""
    if name not in PRESETS:
        raise NmechError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name]
