"""scikit-learn's bundled handwritten digits as an image set: real data that needs no download.

``sklearn.datasets.load_digits()`` ships 1,797 8x8 grayscale images (values 0..16) of the
digits 0-9 inside the wheel. Each is scaled to 0..255, upsampled bilinearly to
``image_size`` x ``image_size`` (torch ``F.interpolate``, align_corners False), rounded to
uint8 and repeated over three channels: an :class:`~nmech.validation.data.ImageSet` of 10
classes that the image models take like any other.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from nmech.errors import NmechError
from nmech.validation.data import ImageSet

CLASSES = 10


def load_digits(image_size: int = 32) -> ImageSet:
    """The 1,797 digits as uint8 [N, image_size, image_size, 3] (module docstring)."""
    if image_size < 8:
        raise NmechError(f"digits need an image size of at least 8, got {image_size}")
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as exc:  # a dependency, but say what is missing rather than trace back
        raise NmechError(f"the digits data set needs scikit-learn ({exc})") from None
    bunch = sklearn_digits()
    small = torch.from_numpy(bunch.images.astype(np.float32) * (255.0 / 16.0)).unsqueeze(1)
    large = F.interpolate(small, size=(image_size, image_size), mode="bilinear",
                          align_corners=False)  # fmt: skip
    pixels = large.clamp(0, 255).round().to(torch.uint8).squeeze(1).numpy()
    x = np.ascontiguousarray(np.repeat(pixels[..., None], 3, axis=3))
    return ImageSet(x, bunch.target.astype(np.int64), CLASSES)
