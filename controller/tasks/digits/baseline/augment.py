"""Baseline augmentation: none."""

import torch


def augment(x: torch.Tensor) -> torch.Tensor:
    return x
