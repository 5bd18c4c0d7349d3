"""A user's own network for infoflow: a small residual net with BatchNorm and Dropout.

infoflow needs nothing of it but an ``nn.Module`` mapping a batch of images to logits; it passes
``in_shape`` and ``n_classes`` because the constructor names them. The layers to measure are
chosen by module name in ``conf/model/mynet.yaml`` (``probe.layers``), and their outputs are
captured by forward hooks in evaluation passes (``eval()`` mode: BatchNorm's running statistics,
no Dropout). Run from this folder:

    PYTHONPATH=. infoflow --config-dir conf model=mynet data=fashion_mnist estimator=renyi
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class ResidualBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus the input (He et al. 2016), then ReLU; shape kept."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))  # (B, C, H, W)
        return torch.relu(x + self.bn2(self.conv2(h)))  # (B, C, H, W)


class MyNet(nn.Module):
    """stem (conv-BN-ReLU) -> block1 -> down (stride-2 conv) -> block2 -> pool -> drop -> head."""

    def __init__(
        self, in_shape: Sequence[int], n_classes: int, width: int = 16, dropout: float = 0.2
    ) -> None:
        super().__init__()
        channels = in_shape[0]
        self.stem = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        )
        self.block1 = ResidualBlock(width)
        self.down = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.block2 = ResidualBlock(2 * width)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(2 * width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.block1(self.stem(x))  # (B, width, H, W)
        h = self.block2(self.down(h))  # (B, 2 width, H/2, W/2)
        return self.head(self.drop(self.pool(h)))  # (B, n_classes)
