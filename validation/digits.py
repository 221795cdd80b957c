"""Real data offline: scikit-learn's bundled handwritten digits as one full batch.

``sklearn.datasets.load_digits`` ships 1,797 8×8 grey-level images (values 0..16, ten classes)
inside scikit-learn's wheel: nothing is downloaded. Images are scaled to x/16 ∈ [0, 1] and
returned as float tensors [N, 1, 8, 8] with int64 labels; ``samples`` keeps the first N
(the set is ordered by writer, so every class is present in any prefix of 50 or more).
"""

from __future__ import annotations

import torch

from nmech.errors import NmechError

DIGITS_SIZE = 1797


def load_digits(
    samples: int | None = None, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(x [N, 1, 8, 8], y [N], number of classes) of the digits set."""
    from sklearn.datasets import load_digits as sklearn_digits

    n = DIGITS_SIZE if samples is None else samples
    if not 10 <= n <= DIGITS_SIZE:
        raise NmechError(
            f"the digits set has {DIGITS_SIZE} images: --samples must be 10..{DIGITS_SIZE}"
        )
    bunch = sklearn_digits()
    x = torch.as_tensor(bunch.images[:n] / 16.0, dtype=dtype).unsqueeze(1)
    y = torch.as_tensor(bunch.target[:n], dtype=torch.int64)
    return x, y, 10
