"""The fixed part of the model: a small CNN trunk; the head comes from a generated module."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class Net(nn.Module):
    """conv-relu-conv-relu-pool trunk, then the generated head."""

    def __init__(
        self, in_shape: tuple[int, int, int], width: int, num_classes: int, make_head: Callable[[int, int], nn.Module]
    ) -> None:
        super().__init__()
        channels, height, width_px = in_shape
        self.trunk = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        features = 2 * width * (height // 2) * (width_px // 2)
        self.head = make_head(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))
