"""Baseline model: the small CNN trunk (or resnet18, hyper "arch") with the head slot's head."""

from typing import Any

import torch
from torch import nn


def build_model(input_shape: tuple[int, int, int], num_classes: int, hyper: dict[str, Any]) -> nn.Module:
    channels, height, width_px = input_shape
    make_head = hyper["make_head"]
    if str(hyper.get("arch", "cnn")) == "resnet18":
        import torchvision

        resnet = torchvision.models.resnet18(weights=None)
        if hyper.get("pretrained"):  # a local file only: nothing is ever downloaded in the sandbox
            state = torch.load(hyper["pretrained"], map_location="cpu", weights_only=True)
            # Not strict about the classifier (it is replaced below), strict about the trunk:
            # a file of other keys would otherwise load nothing and train from scratch unsaid.
            loaded = resnet.load_state_dict(state, strict=False)
            missing = [key for key in loaded.missing_keys if not key.startswith("fc.")]
            if missing:
                msg = f"pretrained: the file lacks {len(missing)} resnet18 trunk weights (first {missing[0]!r})"
                raise ValueError(msg)
        if channels != 3:
            resnet.conv1 = nn.Conv2d(channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        features = resnet.fc.in_features
        resnet.fc = nn.Identity()
        return nn.Sequential(resnet, make_head(features, num_classes))
    width = int(hyper["width"])
    trunk = nn.Sequential(
        nn.Conv2d(channels, width, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
    )
    features = 2 * width * (height // 2) * (width_px // 2)
    return nn.Sequential(trunk, make_head(features, num_classes))
