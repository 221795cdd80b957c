"""Small smooth networks for checking modified equations on real data (``nmech flow``).

Backward error analysis expands the loss in Taylor series, so these models are smooth
everywhere: tanh activations and average pooling (no ReLU kinks, no max-pool switches).

* ``mlp``: Flatten → Linear(d, 32) → tanh → Linear(32, classes).
* ``cnn``: Conv3×3(C→8, pad 1) → tanh → AvgPool2 → Conv3×3(8→8, pad 1) → tanh → AvgPool2 →
  Flatten → Linear(8·(H/4)·(W/4), classes).
* ``cnn-bn``: the same with BatchNorm2d after each convolution (batch statistics of the full
  batch; in the hand-off it is rewritten in elementary ops, see
  :mod:`nmech.numerics.torch_loss`).

Weights use torch's default initialisation under ``torch.manual_seed(seed)``, in float64.
"""

from __future__ import annotations

import torch
from torch import nn

from nmech.errors import NmechError

SMALL_MODELS = ("mlp", "cnn", "cnn-bn")
HIDDEN = 32
CHANNELS = 8


def _conv_block(c_in: int, c_out: int, batch_norm: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(c_out))
    return layers + [nn.Tanh(), nn.AvgPool2d(2)]


def small_model(
    name: str, input_shape: tuple[int, int, int], classes: int, seed: int = 0
) -> nn.Module:
    """One of :data:`SMALL_MODELS` for inputs [C, H, W], float64."""
    if name not in SMALL_MODELS:
        raise NmechError(f"unknown model '{name}'; choose from {', '.join(SMALL_MODELS)}")
    c, h, w = input_shape
    torch.manual_seed(seed)
    if name == "mlp":
        model = nn.Sequential(
            nn.Flatten(), nn.Linear(c * h * w, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, classes)
        )
    else:
        if h % 4 or w % 4:
            raise NmechError(f"the cnn needs an image size divisible by 4, got {h}x{w}")
        bn = name == "cnn-bn"
        model = nn.Sequential(
            *_conv_block(c, CHANNELS, bn),
            *_conv_block(CHANNELS, CHANNELS, bn),
            nn.Flatten(),
            nn.Linear(CHANNELS * (h // 4) * (w // 4), classes),
        )
    return model.to(torch.float64)
