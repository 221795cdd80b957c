"""Full batches of real data for ``nmech flow``: the digits set (default, offline) or a Tiny
ImageNet folder through :func:`nmech.validation.datasets.tiny_imagenet.load_tiny_imagenet`.

Tiny ImageNet images are normalised with the set's mean/std (as in training), average-pooled
from 64×64 to ``image_size`` and subsampled to ``samples`` images spread evenly over the
training split (so over its classes; labels renumbered 0..K−1 among the classes kept).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nmech.errors import NmechError
from nmech.validation.data import MEAN, STD
from nmech.validation.datasets.digits import digits_batch

DATASETS = ("digits", "tiny-imagenet")
TINY_SIZE = 64


def full_batch(
    data: str,
    data_dir: str | Path | None = None,
    samples: int | None = None,
    image_size: int = 16,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(x float64 [N, C, H, W], y int64 [N], number of classes)."""
    if data not in DATASETS:
        raise NmechError(f"unknown data '{data}'; choose from {', '.join(DATASETS)}")
    if data == "digits":
        if data_dir is not None:
            raise NmechError("--data-dir is for --data tiny-imagenet")
        return digits_batch(samples)
    if data_dir is None:
        raise NmechError("--data tiny-imagenet needs --data-dir (the tiny-imagenet-200 folder)")
    if image_size <= 0 or TINY_SIZE % image_size:
        raise NmechError(f"--image-size must divide {TINY_SIZE}, got {image_size}")
    from nmech.validation.datasets.tiny_imagenet import load_tiny_imagenet

    images = load_tiny_imagenet(data_dir, "train", image_size=TINY_SIZE)
    n = min(samples or 500, len(images.y))
    if n < 2:
        raise NmechError(f"--samples must be at least 2, got {n}")
    index = np.unique(np.linspace(0, len(images.y) - 1, n).round().astype(np.int64))
    x = torch.as_tensor(images.x[index], dtype=torch.float64).permute(0, 3, 1, 2) / 255.0
    x = (x - torch.tensor(MEAN, dtype=x.dtype).view(1, 3, 1, 1)) / torch.tensor(
        STD, dtype=x.dtype
    ).view(1, 3, 1, 1)
    x = F.avg_pool2d(x, TINY_SIZE // image_size)
    kept, y = np.unique(images.y[index], return_inverse=True)
    return x, torch.as_tensor(y, dtype=torch.int64), len(kept)
