"""ResNet-18 for small images, CIFAR style (He et al. 2016): a 3x3 stem without max-pool.

Layout (width 1): conv3x3(3, 64) -> BN -> ReLU; four stages of two BasicBlocks with 64, 128,
256, 512 channels (stride 2 at the first block of stages 2-4); global average pool; Linear.
BasicBlock: conv3x3 -> BN -> ReLU -> conv3x3 -> BN, plus the shortcut (identity, or conv1x1 ->
BN where the shape changes), then ReLU. Convolutions have no bias. ``width`` multiplies every
channel count. Initialisation: convs Kaiming normal (fan_out, ReLU gain), BatchNorm weight 1
and bias 0, the Linear torch's default.

Its symmetries (found by discovery, not listed here): every conv's output channels feed a
BatchNorm (scale); a block's first BatchNorm channel and the second conv's input channel
(rescale across ReLU); and each residual stream channel: every BatchNorm that writes channel c
of a stage's stream (the stem or the block ends, joined by the additions) with every conv (and
the final Linear) that reads it (rescale).
"""

from __future__ import annotations

import torch
from torch import nn


def _scaled(n: int, width: float) -> int:
    return max(1, round(n * width))


class BasicBlock(nn.Module):
    """conv3x3 -> BN -> ReLU -> conv3x3 -> BN, + shortcut, -> ReLU."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18, CIFAR stem (module docstring)."""

    def __init__(self, num_classes: int = 10, width: float = 1.0) -> None:
        super().__init__()
        widths = [_scaled(c, width) for c in (64, 128, 256, 512)]
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        layers = []
        cin = widths[0]
        for i, cout in enumerate(widths):
            stride = 1 if i == 0 else 2
            layers.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [batch, num_classes] of images [batch, 3, H, W]."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))
