"""Baseline sampler: a fresh random order of the training rows every epoch."""

import torch


def order(labels: torch.Tensor, epoch: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randperm(len(labels), generator=generator)
