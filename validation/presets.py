"""Named run configurations for ``nmech validate --preset``.

* ``cpu-demo``: VGG-16-BN and VGG-16 at width 1/8 on 32x32 synthetic data (10 classes),
  torch SGD lr 0.1, momentum 0.9, weight decay 5e-4, batch 32, 300 steps (about a minute on
  2 CPU cores).
* ``cpu-resnet``: ResNet-18 (CIFAR stem, BatchNorm) at width 1/4 on scikit-learn's digits
  upsampled to 16x16, batch 32, 150 steps, the same SGD.
* ``cpu-transformer``: the pre-LN character-level transformer (width 64, 2 blocks, 4 heads,
  context 64) on the Python standard library's source, batch 16, 200 steps, the same SGD.
* ``paper-vgg16-bn`` / ``paper-vgg16``: the paper's setting -- 64x64 inputs, 200 classes,
  width 1, batch 256, lr 0.1, momentum 0.9, weight decay 5e-4, 100 epochs -- on Tiny ImageNet
  when ``--data-dir`` is given, else on synthetic data of the same shape.

``data`` names a registered data set (:mod:`nmech.validation.datasets`), ``models`` registered
models (:mod:`nmech.validation.models`), ``optimizer`` a registered optimizer
(:mod:`nmech.validation.optimizers`): :func:`with_optimizer` switches to another one with its
defaults (``adamw``: lr 0.01 and weight decay 0.5, eta*lam = 5e-3, so scale-invariant channels
approach their rotational equilibrium within a few hundred steps, time constant
1/(2 eta lam) = 100 steps).

Every preset has the GPU path switches ``channels_last``, ``bf16`` and ``compile`` off
(``nmech validate --channels-last --bf16 --compile`` turn them on; see
:mod:`nmech.validation.train`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from nmech.errors import NmechError
from nmech.validation.limits import check_number


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
    alpha: float = 0.99
    data: str = "synthetic"
    context: int = 64

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
    "cpu-resnet": Preset(
        "cpu-resnet", ("resnet18",), image_size=16, num_classes=10, width=1 / 4,
        batch_size=32, steps=150, epochs=None, data="digits",
    ),
    "cpu-transformer": Preset(
        "cpu-transformer", ("charlm",), image_size=32, num_classes=0, width=1.0,
        batch_size=16, steps=200, epochs=None, data="python-source", context=64,
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


#: Valid values of the numeric fields: field -> (option, type, low, high, which ends are
#: excluded: "(" the low one, ")" the high one). The upper bounds keep every derived quantity
#: finite in float64 (a learning rate of 1e308 times a weight decay overflows) and the run's
#: length and seed within what torch and numpy take.
LIMITS: dict[str, tuple[str, type, float, float, str]] = {
    "lr": ("--lr", float, 0.0, 1e6, "("),
    "momentum": ("--momentum", float, 0.0, 1.0, ")"),
    "weight_decay": ("--wd", float, 0.0, 1e3, ""),
    "dampening": ("--dampening", float, 0.0, 1.0, ")"),
    "width": ("--width", float, 0.0, 64.0, "("),
    "epochs": ("--epochs", float, 0.0, 1e6, "("),
    "steps": ("--steps", int, 1, 10**9, ""),
    "batch_size": ("--batch-size", int, 1, 10**6, ""),
    "seed": ("--seed", int, 0, 2**32 - 1, ""),
    "per_class": ("--per-class", int, 1, 10**6, ""),
    "flush_every": ("--flush-every", int, 1, 10**9, ""),
    "image_size": ("image_size", int, 1, 4096, ""),
    "num_classes": ("num_classes", int, 0, 10**6, ""),
    "eps": ("eps", float, 0.0, 1.0, "("),
    "alpha": ("alpha", float, 0.0, 1.0, ")"),
    "context": ("context", int, 1, 10**6, ""),
}  # fmt: skip
#: The non-numeric fields and their types.
KINDS_OF_FIELDS: dict[str, type] = {
    "name": str, "nesterov": bool, "channels_last": bool, "bf16": bool, "compile": bool,
    "optimizer": str, "data": str,
}  # fmt: skip


def check_value(field: str, value: object) -> None:
    """Raise a one-line NmechError naming the option unless ``value`` is a valid ``field``
    (:data:`LIMITS`)."""
    check_number(*LIMITS[field][:1], value, *LIMITS[field][1:])


def check_values(preset: Preset) -> None:
    """Every field of ``preset`` has its type and lies in its range (:data:`LIMITS`): a
    preset from the command line or from a run.json (``--resume``) is checked here before
    anything runs or is written."""
    for field, value in vars(preset).items():
        if field in LIMITS:
            if value is not None or field not in ("steps", "epochs"):
                check_value(field, value)
        elif field in KINDS_OF_FIELDS and not isinstance(value, KINDS_OF_FIELDS[field]):
            raise NmechError(f"{field} must be a {KINDS_OF_FIELDS[field].__name__}, got "
                             f"{value!r}")  # fmt: skip
    if (preset.steps is None) == (preset.epochs is None):
        raise NmechError("exactly one of --steps and --epochs sets the run's length")
    if not preset.models or not all(isinstance(m, str) and m for m in preset.models):
        raise NmechError(f"models must be a list of model names, got {preset.models!r}")
    betas = preset.betas
    if len(betas) != 2 or not all(
        isinstance(b, int | float) and not isinstance(b, bool) and 0 <= b < 1 for b in betas
    ):
        raise NmechError(f"betas must be two numbers in [0, 1), got {betas!r}")


def get_preset(name: str) -> Preset:
    """The preset called ``name``."""
    if name not in PRESETS:
        raise NmechError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name]


def with_optimizer(preset: Preset, optimizer: str | None) -> Preset:
    """``preset`` trained by the registered optimizer ``optimizer`` with its defaults (the
    preset itself when ``optimizer`` is None or the preset's own)."""
    if optimizer is None or optimizer == preset.optimizer:
        return preset
    from nmech.validation.optimizers import adapter_named

    adapter = adapter_named(optimizer)
    if adapter.torch_class is None:
        raise NmechError(f"{optimizer} is not an optimizer nmech can build")
    return replace(preset, optimizer=optimizer, **adapter.defaults)
