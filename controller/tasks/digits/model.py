"""The fixed part of the model: a trunk (small CNN or resnet18); the head comes from a generated module."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


class Net(nn.Module):
    """Normalise (and optionally resize), run the trunk, then the generated head."""

    def __init__(
        self,
        in_shape: Sequence[int],
        width: int,
        num_classes: int,
        make_head: Callable[[int, int], nn.Module],
        *,
        arch: str = "cnn",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        input_size: int | None = None,
        pretrained: str | None = None,
    ) -> None:
        super().__init__()
        channels, height, width_px = in_shape
        self.input_size = input_size
        if input_size:
            height = width_px = input_size
        self.register_buffer("mean", torch.tensor(mean or [0.0] * channels).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std or [1.0] * channels).view(1, -1, 1, 1))
        if arch == "cnn":
            self.trunk: nn.Module = nn.Sequential(
                nn.Conv2d(channels, width, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(width, 2 * width, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Flatten(),
            )
            features = 2 * width * (height // 2) * (width_px // 2)
        elif arch == "resnet18":
            import torchvision

            resnet = torchvision.models.resnet18(weights=None)
            if pretrained:  # a local file only: nothing is ever downloaded in the sandbox
                resnet.load_state_dict(torch.load(pretrained, map_location="cpu", weights_only=True), strict=False)
            if channels != 3:
                resnet.conv1 = nn.Conv2d(channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
            features = resnet.fc.in_features
            resnet.fc = nn.Identity()
            self.trunk = resnet
        else:
            msg = f"unknown arch {arch!r}; use cnn or resnet18"
            raise ValueError(msg)
        self.head = make_head(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_size and x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return self.head(self.trunk((x - self.mean) / self.std))


def build(config: dict[str, Any], make_head: Callable[[int, int], nn.Module]) -> Net:
    """The configured model."""
    return Net(
        config["input_shape"],
        int(config["width"]),
        int(config["num_classes"]),
        make_head,
        arch=str(config.get("arch", "cnn")),
        mean=config.get("mean"),
        std=config.get("std"),
        input_size=int(config["input_size"]) if config.get("input_size") else None,
        pretrained=config.get("pretrained"),
    )


def to_float(x: Any) -> torch.Tensor:
    """uint8 images to [0, 1] floats; float arrays as they are."""
    tensor = torch.from_numpy(x)
    return tensor.float().div_(255.0) if tensor.dtype == torch.uint8 else tensor.float()
