"""Shared helpers: small VGG models."""

from __future__ import annotations

import pytest
import torch

from nmech.validation.models import vgg16


@pytest.fixture
def small_vgg():
    """Factory of width-1/8 VGG-16 models on 32x32 inputs with 10 classes."""

    def make(batch_norm: bool, seed: int = 0) -> torch.nn.Module:
        torch.manual_seed(seed)
        return vgg16(10, batch_norm=batch_norm, image_size=32, width=1 / 8)

    return make
