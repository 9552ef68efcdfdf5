"""The trusted frame around the generated model: normalisation (and optional resizing).

What sits inside comes from the `model` slot: `build_model(input_shape, num_classes, hyper)`,
whose baseline is the small CNN trunk (or resnet18) with the `head` slot's head.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


class Net(nn.Module):
    """Normalise (and optionally resize) the input, then run the generated model."""

    def __init__(
        self,
        in_shape: Sequence[int],
        model: nn.Module,
        *,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        input_size: int | None = None,
    ) -> None:
        super().__init__()
        channels = in_shape[0]
        self.input_size = input_size
        self.register_buffer("mean", torch.tensor(mean or [0.0] * channels).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std or [1.0] * channels).view(1, -1, 1, 1))
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_size and x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return self.model((x - self.mean) / self.std)


def hyper_for(config: dict[str, Any], make_head: Callable[[int, int], nn.Module]) -> dict[str, Any]:
    """What `build_model` is given: the run's scalar hyperparameters and the head slot's head."""
    hyper = {k: v for k, v in config.items() if isinstance(v, int | float | str | bool)}
    hyper["make_head"] = make_head
    if config.get("pretrained"):
        hyper["pretrained"] = config["pretrained"]
    return hyper


def build(
    config: dict[str, Any],
    build_model: Callable[..., nn.Module],
    make_head: Callable[[int, int], nn.Module],
) -> Net:
    """The configured model: the trusted frame around the generated one."""
    channels, height, width_px = (int(d) for d in config["input_shape"])
    input_size = int(config["input_size"]) if config.get("input_size") else None
    shape = (channels, input_size or height, input_size or width_px)
    inner = build_model(shape, int(config["num_classes"]), hyper_for(config, make_head))
    if not isinstance(inner, nn.Module):
        msg = f"build_model must return an nn.Module, got {type(inner).__name__}"
        raise TypeError(msg)
    return Net(config["input_shape"], inner, mean=config.get("mean"), std=config.get("std"), input_size=input_size)


def to_float(x: Any) -> torch.Tensor:
    """uint8 images to [0, 1] floats; float arrays as they are."""
    tensor = torch.from_numpy(x)
    return tensor.float().div_(255.0) if tensor.dtype == torch.uint8 else tensor.float()
