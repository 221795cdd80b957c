"""The registry of models: one entry per network family (one file each), read by the presets,
the command line and the benchmarks.

Built in: ``vgg16_bn`` and ``vgg16`` (:mod:`.vgg`, the paper's), ``resnet18`` (:mod:`.resnet`,
CIFAR stem, BatchNorm), ``vit`` and ``charlm`` (:mod:`.transformer`, pre-LN transformers on
images and on characters). A model is built from a :class:`DataShape` (what its data looks
like) and a width multiplier; :func:`register_model` adds one (``docs/extending.md``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from nmech.errors import NmechError
from nmech.validation.models.resnet import ResNet18
from nmech.validation.models.transformer import CharTransformer, ViT
from nmech.validation.models.vgg import VGG, vgg16
from nmech.validation.registry import Registry

IMAGES, TOKENS = "images", "tokens"


@dataclass(frozen=True)
class DataShape:
    """What a model needs to know about its data: ``inputs`` (images [B, 3, S, S] or tokens
    [B, T]), ``classes`` (classes, or the vocabulary size), ``image_size`` S, ``context`` T."""

    inputs: str
    classes: int
    image_size: int = 32
    context: int = 64


@dataclass(frozen=True)
class ModelSpec:
    """One registered model: its name, the inputs it takes, its builder and a line for help."""

    name: str
    inputs: str
    build: Callable[[DataShape, float], nn.Module]
    summary: str


MODELS: Registry[ModelSpec] = Registry("model", inputs=(IMAGES, TOKENS))

#: Add an entry to the registry (its name must be new); returns it.
register_model = MODELS.register


def _dim(width: float) -> int:
    """Transformer width: 64 x width, a multiple of the 4 heads."""
    return max(4, 4 * round(16 * width))


register_model(ModelSpec("vgg16_bn", IMAGES, lambda d, w: vgg16(d.classes, True, d.image_size, w),
                         "the paper's VGG-16 with BatchNorm"))  # fmt: skip
register_model(ModelSpec("vgg16", IMAGES, lambda d, w: vgg16(d.classes, False, d.image_size, w),
                         "the paper's VGG-16 without BatchNorm"))  # fmt: skip
register_model(ModelSpec("resnet18", IMAGES, lambda d, w: ResNet18(d.classes, w),
                         "ResNet-18, CIFAR stem, BatchNorm"))  # fmt: skip
register_model(ModelSpec("vit", IMAGES, lambda d, w: ViT(d.classes, d.image_size, _dim(w)),
                         "pre-LN vision transformer, 4x4 patches, 2 blocks, 4 heads"))  # fmt: skip
register_model(ModelSpec("charlm", TOKENS, lambda d, w: CharTransformer(d.classes, d.context, _dim(w)),
                         "pre-LN causal character-level transformer, 2 blocks, 4 heads"))  # fmt: skip


def build_model(name: str, data: DataShape, width: float = 1.0) -> nn.Module:
    """The registered model ``name`` for ``data`` at ``width``."""
    spec = MODELS.entry(name)
    if spec.inputs != data.inputs:
        raise NmechError(f"model {name} takes {spec.inputs}, the data set gives {data.inputs}")
    if width <= 0:
        raise NmechError(f"width must be positive, got {width}")
    return spec.build(data, width)


__all__ = [
    "MODELS", "IMAGES", "TOKENS", "DataShape", "ModelSpec", "register_model", "build_model",
    "VGG", "vgg16", "ResNet18", "ViT", "CharTransformer",
]  # fmt: skip
