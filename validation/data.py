"""Image data as on-device batches: the embedded synthetic set and augmentation by torch ops.

Synthetic data (the default; nothing is downloaded): class k has a fixed random low-frequency
template T_k (Gaussian noise at 4x4, bilinearly upsampled to the image size, then squashed into
[0, 255]); image i of class k is  clip(T_k + 64 * N(0, 1) per pixel, 0, 255)  as uint8, drawn
from ``seed``. Classes are separable but noisy, so the training loss really falls.

Batches (:class:`DeviceBatches`) keep the whole uint8 set on the device and, per step: draw the
next indices of a per-epoch random permutation, apply RandomCrop(size, padding=4, zero fill) and
a horizontal flip with probability 1/2, then normalise, x = (x/255 - mean) / std, with the
Tiny ImageNet statistics mean (0.480, 0.448, 0.397), std (0.276, 0.269, 0.282).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nmech.errors import NmechError

MEAN = (0.480, 0.448, 0.397)
STD = (0.276, 0.269, 0.282)
PAD = 4


@dataclass(frozen=True)
class ImageSet:
    """Images ``x`` uint8 [N, H, W, 3] and labels ``y`` int64 [N] (numpy, on the host)."""

    x: np.ndarray
    y: np.ndarray
    num_classes: int

    def __post_init__(self) -> None:
        if self.x.ndim != 4 or self.x.shape[3] != 3 or self.x.dtype != np.uint8:
            raise NmechError(
                f"images must be uint8 [N, H, W, 3], got {self.x.dtype} {self.x.shape}"
            )
        if len(self.x) != len(self.y) or len(self.x) == 0:
            raise NmechError(f"{len(self.x)} images but {len(self.y)} labels")


def synthetic(num_classes: int, per_class: int, image_size: int, seed: int = 0) -> ImageSet:
    """Class-structured synthetic images (see the module docstring), deterministic in ``seed``."""
    if num_classes < 2 or per_class < 1 or image_size < 8:
        raise NmechError("synthetic data needs >= 2 classes, >= 1 image each, size >= 8")
    gen = torch.Generator().manual_seed(seed)
    low = torch.randn(num_classes, 3, 4, 4, generator=gen)
    templates = F.interpolate(low, size=(image_size, image_size), mode="bilinear")
    templates = 127.5 + 60.0 * templates / templates.std()
    x = np.empty((num_classes * per_class, image_size, image_size, 3), dtype=np.uint8)
    for k in range(num_classes):  # one class at a time bounds the float32 working memory
        noise = torch.randn(per_class, 3, image_size, image_size, generator=gen)
        xk = (templates[k] + 64.0 * noise).clamp(0, 255).round().to(torch.uint8)
        x[k * per_class : (k + 1) * per_class] = xk.permute(0, 2, 3, 1).numpy()
    y = np.repeat(np.arange(num_classes, dtype=np.int64), per_class)
    return ImageSet(x, y, num_classes)


class DeviceBatches:
    """Endless augmented, normalised batches ``(x float32 [B,3,H,W], y int64 [B])`` on a device.

    Deterministic given ``seed`` (a torch.Generator on the device draws all randomness).
    """

    def __init__(
        self,
        data: ImageSet,
        batch_size: int,
        device: torch.device | str = "cpu",
        seed: int = 0,
        augment: bool = True,
    ) -> None:
        if batch_size < 1:
            raise NmechError(f"batch size must be positive, got {batch_size}")
        self.device = torch.device(device)
        self.x = torch.from_numpy(data.x).to(self.device).permute(0, 3, 1, 2)  # [N,3,H,W] uint8
        self.y = torch.from_numpy(data.y).to(self.device, torch.int64)
        self.batch_size = min(batch_size, len(self.y))
        self.augment = augment
        self.num_classes = data.num_classes
        self.gen = torch.Generator(device=self.device).manual_seed(seed)
        shape = (1, 3, 1, 1)
        self.mean = torch.tensor(MEAN, device=self.device).view(shape) * 255.0
        self.std = torch.tensor(STD, device=self.device).view(shape) * 255.0
        self._order = torch.empty(0, dtype=torch.int64, device=self.device)
        self._pos = 0

    @property
    def steps_per_epoch(self) -> int:
        """Batches per pass over the data (the last partial batch is dropped)."""
        return max(1, len(self.y) // self.batch_size)

    def _indices(self) -> torch.Tensor:
        if self._pos + self.batch_size > len(self._order):
            self._order = torch.randperm(len(self.y), generator=self.gen, device=self.device)
            self._pos = 0
        idx = self._order[self._pos : self._pos + self.batch_size]
        self._pos += self.batch_size
        return idx

    def _crop_flip(self, x: torch.Tensor) -> torch.Tensor:
        """RandomCrop(H, padding=4) with zero fill and a random horizontal flip, per sample."""
        b, _, h, w = x.shape
        padded = F.pad(x, (PAD, PAD, PAD, PAD))
        dy = torch.randint(0, 2 * PAD + 1, (b, 1), generator=self.gen, device=self.device)
        dx = torch.randint(0, 2 * PAD + 1, (b, 1), generator=self.gen, device=self.device)
        rows = dy + torch.arange(h, device=self.device)  # [B, H]
        cols = dx + torch.arange(w, device=self.device)  # [B, W]
        flip = torch.rand(b, 1, generator=self.gen, device=self.device) < 0.5
        cols = torch.where(flip, cols.flip(1), cols)
        bi = torch.arange(b, device=self.device).view(b, 1, 1, 1)
        ci = torch.arange(3, device=self.device).view(1, 3, 1, 1)
        return padded[bi, ci, rows.view(b, 1, h, 1), cols.view(b, 1, 1, w)]

    def state_dict(self) -> dict[str, Any]:
        """Generator state and position in the current epoch (for checkpoints)."""
        return {"gen": self.gen.get_state(), "order": self._order.cpu(), "pos": self._pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue exactly where :meth:`state_dict` was taken."""
        self.gen.set_state(state["gen"])
        self._order = state["order"].to(self.device)
        self._pos = int(state["pos"])

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next batch."""
        idx = self._indices()
        x = self.x[idx].float()
        if self.augment:
            x = self._crop_flip(x)
        return (x - self.mean) / self.std, self.y[idx]
