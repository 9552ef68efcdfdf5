"""Augmentation: cutout of a 2x2 patch per image (offline template `cutout`)."""

import torch

SIZE = 2


def augment(x: torch.Tensor) -> torch.Tensor:
    out = x.clone()
    height, width = x.shape[-2], x.shape[-1]
    ys = torch.randint(0, height - SIZE + 1, (x.shape[0],))
    xs = torch.randint(0, width - SIZE + 1, (x.shape[0],))
    for i in range(x.shape[0]):
        y0, x0 = int(ys[i]), int(xs[i])
        out[i, :, y0 : y0 + SIZE, x0 : x0 + SIZE] = 0.0
    return out
