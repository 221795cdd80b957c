"""scikit-learn's bundled handwritten digits: real data that needs no download.

``sklearn.datasets.load_digits()`` ships 1,797 8x8 grayscale images (values 0..16) of the
digits 0-9 inside the wheel. Two views of the same set:

* :func:`load_digits` -- for the image models: each image scaled to 0..255, upsampled
  bilinearly to ``image_size`` x ``image_size`` (torch ``F.interpolate``, align_corners False),
  rounded to uint8 and repeated over three channels: an
  :class:`~nmech.validation.data.ImageSet` of 10 classes that the image models take like any
  other.
* :func:`digits_batch` -- for ``nmech flow``: one full batch at the native 8x8, scaled to
  x/16 in [0, 1], float tensors [N, 1, 8, 8] (float64 by default) with int64 labels; ``samples``
  keeps the first N (the set is ordered by writer, so every class is present in any prefix of
  50 or more).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from nmech.errors import NmechError
from nmech.validation.data import ImageSet

CLASSES = 10
DIGITS_SIZE = 1797


def _sklearn_digits():
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as exc:  # a dependency, but say what is missing rather than trace back
        raise NmechError(f"the digits data set needs scikit-learn ({exc})") from None
    return sklearn_digits()


def load_digits(image_size: int = 32) -> ImageSet:
    """The 1,797 digits as uint8 [N, image_size, image_size, 3] (module docstring)."""
    if image_size < 8:
        raise NmechError(f"digits need an image size of at least 8, got {image_size}")
    bunch = _sklearn_digits()
    small = torch.from_numpy(bunch.images.astype(np.float32) * (255.0 / 16.0)).unsqueeze(1)
    large = F.interpolate(small, size=(image_size, image_size), mode="bilinear",
                          align_corners=False)  # fmt: skip
    pixels = large.clamp(0, 255).round().to(torch.uint8).squeeze(1).numpy()
    x = np.ascontiguousarray(np.repeat(pixels[..., None], 3, axis=3))
    return ImageSet(x, bunch.target.astype(np.int64), CLASSES)


def digits_batch(
    samples: int | None = None, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(x [N, 1, 8, 8] in [0, 1], y int64 [N], number of classes): the first ``samples``
    digits (all 1,797 by default) as one full batch (module docstring)."""
    n = DIGITS_SIZE if samples is None else samples
    if not 10 <= n <= DIGITS_SIZE:
        raise NmechError(
            f"the digits set has {DIGITS_SIZE} images: --samples must be 10..{DIGITS_SIZE}"
        )
    bunch = _sklearn_digits()
    x = torch.as_tensor(bunch.images[:n] / 16.0, dtype=dtype).unsqueeze(1)
    y = torch.as_tensor(bunch.target[:n], dtype=torch.int64)
    return x, y, CLASSES
