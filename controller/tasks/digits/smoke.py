"""Smoke checks the guard runs on each slot's entry point, on a tiny input."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

BATCH = 4
# The loop stages smoke.json with the dataset's shapes; the digits defaults otherwise.
_SPEC = json.loads(Path("smoke.json").read_text()) if Path("smoke.json").is_file() else {}
SHAPE = tuple(_SPEC.get("input_shape", (1, 8, 8)))
CLASSES = int(_SPEC.get("num_classes", 10))


def check_augment(augment: Callable[[torch.Tensor], torch.Tensor]) -> None:
    torch.manual_seed(0)
    x = torch.rand(BATCH, *SHAPE)
    y = augment(x.clone())
    if not isinstance(y, torch.Tensor):
        msg = f"augment must return a torch.Tensor, got {type(y).__name__}"
        raise TypeError(msg)
    if y.shape != x.shape:
        msg = f"augment changed the shape: {tuple(x.shape)} -> {tuple(y.shape)}"
        raise ValueError(msg)
    if y.dtype != x.dtype:
        msg = f"augment changed the dtype: {x.dtype} -> {y.dtype}"
        raise TypeError(msg)
    if not torch.isfinite(y).all():
        msg = "augment produced NaN or inf"
        raise ValueError(msg)


def check_head(make_head: Callable[[int, int], nn.Module]) -> None:
    in_features = 64
    head = make_head(in_features, CLASSES)
    if not isinstance(head, nn.Module):
        msg = f"make_head must return an nn.Module, got {type(head).__name__}"
        raise TypeError(msg)
    out = head(torch.randn(BATCH, in_features))
    if tuple(out.shape) != (BATCH, CLASSES):
        msg = f"head output shape {tuple(out.shape)}, expected {(BATCH, CLASSES)}"
        raise ValueError(msg)
    out.sum().backward()
