"""The registry of data sets: where a run's data comes from, read by the presets and the
command line. None needs a download.

* ``synthetic`` -- class-structured random images (:func:`nmech.validation.data.synthetic`);
* ``digits`` -- scikit-learn's 1,797 handwritten digits, upsampled (:mod:`.digits`);
* ``tiny-imagenet`` -- a local ``tiny-imagenet-200/`` folder (``--data-dir``,
  :mod:`.tiny_imagenet`);
* ``python-source`` -- the standard library's source as characters (:mod:`.text`).

:func:`load` returns an :class:`~nmech.validation.data.ImageSet` (images) or a
:class:`~nmech.validation.datasets.text.TextSet` (tokens); :func:`batches` the matching on-device
batch stream and :func:`loss_for` the training loss of the inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from nmech.errors import NmechError
from nmech.validation.data import DeviceBatches, synthetic
from nmech.validation.datasets.digits import load_digits
from nmech.validation.datasets.text import TokenBatches, load_python_source, sequence_cross_entropy
from nmech.validation.models import IMAGES, TOKENS, DataShape
from nmech.validation.registry import Registry


@dataclass(frozen=True)
class DatasetSpec:
    """One registered data set: ``load(preset, data_dir)``, the inputs it gives, whether it
    needs ``--data-dir``, whether image batches are augmented (crop and flip)."""

    name: str
    inputs: str
    load: Callable[[Any, str | Path | None], Any]
    summary: str
    needs_dir: bool = False
    augment: bool = True


DATASETS: Registry[DatasetSpec] = Registry("data set")

#: Add an entry to the registry (its name must be new); returns it.
register_dataset = DATASETS.register


def _tiny(preset: Any, data_dir: str | Path | None) -> Any:
    from nmech.validation.datasets.tiny_imagenet import load_tiny_imagenet

    if data_dir is None:
        raise NmechError(
            "the tiny-imagenet data set needs --data-dir (the tiny-imagenet-200 folder)"
        )
    return load_tiny_imagenet(data_dir, "train", image_size=preset.image_size)


register_dataset(DatasetSpec(
    "synthetic", IMAGES,
    lambda p, _: synthetic(p.num_classes, p.per_class, p.image_size, p.seed),
    "class-structured random images (no download)",
))  # fmt: skip
register_dataset(DatasetSpec(
    "digits", IMAGES, lambda p, _: load_digits(p.image_size),
    "scikit-learn's 1,797 handwritten digits, upsampled (real, bundled)", augment=False,
))  # fmt: skip
register_dataset(DatasetSpec(
    "tiny-imagenet", IMAGES, _tiny, "Tiny ImageNet's training split from --data-dir",
    needs_dir=True,
))  # fmt: skip
register_dataset(DatasetSpec(
    "python-source", TOKENS, lambda p, _: load_python_source(),
    "the Python standard library's source files, as characters (real, local)",
))  # fmt: skip


def dataset(name: str) -> DatasetSpec:
    """The registered data set ``name``."""
    return DATASETS.entry(name)


def load(name: str, preset: Any, data_dir: str | Path | None = None) -> Any:
    """The data of ``name`` for ``preset``."""
    return dataset(name).load(preset, data_dir)


def shape_of(name: str, data: Any, preset: Any) -> DataShape:
    """What the models need to know about ``data``."""
    inputs = dataset(name).inputs
    return DataShape(inputs, data.num_classes, preset.image_size, preset.context)


def batches(
    name: str, data: Any, preset: Any, device: torch.device, batch_size: int | None = None
) -> Any:
    """The on-device batch stream of ``data`` (seeded by the preset)."""
    size = batch_size or preset.batch_size
    if dataset(name).inputs == TOKENS:
        return TokenBatches(data, size, preset.context, device, seed=preset.seed)
    return DeviceBatches(data, size, device, seed=preset.seed, augment=dataset(name).augment)


def loss_for(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The training loss: cross-entropy per image, or per position of a token window."""
    return sequence_cross_entropy if dataset(name).inputs == TOKENS else F.cross_entropy


def describe(name: str, data: Any) -> dict[str, Any]:
    """A plain description of the data a run used (for the records and the report)."""
    info: dict[str, Any] = {"data": name, "data_summary": dataset(name).summary}
    if hasattr(data, "source"):
        info["data_source"] = data.source
    if hasattr(data, "y"):
        info["train_images"] = int(len(data.y))
    return info
