"""Smoke checks the guard runs on each slot's entry point, on a tiny input."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

BATCH = 4
SHAPE = (1, 8, 8)
CLASSES = 10


def check_augment(augment: Callable[[torch.Tensor], torch.Tensor]) -> None:
    torch.manual_seed(0)
    x = torch.rand(BATCH, *SHAPE)
    y = augment(x.clone())
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"augment must return a torch.Tensor, got {type(y).__name__}")
    if y.shape != x.shape:
        raise ValueError(f"augment changed the shape: {tuple(x.shape)} -> {tuple(y.shape)}")
    if y.dtype != x.dtype:
        raise TypeError(f"augment changed the dtype: {x.dtype} -> {y.dtype}")
    if not torch.isfinite(y).all():
        raise ValueError("augment produced NaN or inf")


def check_head(make_head: Callable[[int, int], nn.Module]) -> None:
    in_features = 64
    head = make_head(in_features, CLASSES)
    if not isinstance(head, nn.Module):
        raise TypeError(f"make_head must return an nn.Module, got {type(head).__name__}")
    out = head(torch.randn(BATCH, in_features))
    if tuple(out.shape) != (BATCH, CLASSES):
        raise ValueError(f"head output shape {tuple(out.shape)}, expected {(BATCH, CLASSES)}")
    out.sum().backward()
