"""Augmentation: random translation by up to 1 pixel(s) (offline template `shift`)."""

import torch

MAX_SHIFT = 1


def augment(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    shifts = torch.randint(-MAX_SHIFT, MAX_SHIFT + 1, (x.shape[0], 2))
    for i in range(x.shape[0]):
        dy, dx = int(shifts[i, 0]), int(shifts[i, 1])
        out[i] = torch.roll(x[i], shifts=(dy, dx), dims=(-2, -1))
    return out
