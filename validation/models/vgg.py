"""The paper's VGG-16 for small images, with or without BatchNorm, and a width multiplier.

Layout (width 1, 64x64 inputs, as in Kunin et al. 2021):

    13 x [Conv2d 3x3 (padding 1, bias) -> (BatchNorm2d) -> ReLU], MaxPool2d(2) after blocks
    of 2, 2, 3, 3, 3 convs; Flatten; Linear(512*2*2, 1024) -> ReLU -> Dropout ->
    Linear(1024, 1024) -> ReLU -> Dropout -> Linear(1024, num_classes).

Initialisation: conv weights ~ Kaiming normal (fan_out, ReLU gain), i.e. N(0, 2 / (C_out*9));
linear weights ~ N(0, 0.01^2); every bias zero; BatchNorm weight 1, bias 0.
``width`` divides every channel count and hidden size (width=1/8: 8..64 channels, 128 hidden).
"""

from __future__ import annotations

import torch
from torch import nn

from nmech.errors import NmechError

#: Conv output channels at width 1; "M" is a 2x2 max-pool.
VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)  # fmt: skip
HIDDEN = 1024


def _scaled(n: int, width: float) -> int:
    """Channel count ``n * width`` rounded, at least 1."""
    return max(1, round(n * width))


class VGG(nn.Module):
    """VGG-16 as an ``nn.Sequential`` of ``features`` and ``classifier`` (traceable by torch.fx)."""

    def __init__(
        self,
        num_classes: int = 200,
        batch_norm: bool = True,
        image_size: int = 64,
        width: float = 1.0,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if image_size % 32 != 0 or image_size <= 0:
            raise NmechError(f"VGG-16 needs an image size divisible by 32, got {image_size}")
        if width <= 0:
            raise NmechError(f"width must be positive, got {width}")
        layers: list[nn.Module] = []
        channels = 3
        for item in VGG16_CFG:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            out = _scaled(int(item), width)
            layers.append(nn.Conv2d(channels, out, kernel_size=3, padding=1, bias=True))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.ReLU(inplace=True))
            channels = out
        self.features = nn.Sequential(*layers)
        spatial = image_size // 32
        hidden = _scaled(HIDDEN, width)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * spatial * spatial, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal (fan_out) convs, N(0, 0.01) linears, zero biases, unit BN scales."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[batch, num_classes]`` of images ``[batch, 3, image_size, image_size]``."""
        return self.classifier(self.features(x))


def vgg16(
    num_classes: int = 200, batch_norm: bool = True, image_size: int = 64, width: float = 1.0
) -> VGG:
    """The paper's VGG-16 (``batch_norm=True``: VGG-16-BN) for ``image_size`` inputs."""
    return VGG(num_classes=num_classes, batch_norm=batch_norm, image_size=image_size, width=width)
