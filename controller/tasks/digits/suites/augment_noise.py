"""Augmentation: additive Gaussian noise, sigma=0.1 (offline template `noise`)."""

import torch

SIGMA = 0.1


def augment(x: torch.Tensor) -> torch.Tensor:
    return (x + SIGMA * torch.randn_like(x)).clamp(0.0, 1.0)
